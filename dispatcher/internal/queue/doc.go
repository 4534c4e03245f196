// Package queue is Kiln's use of River: the job kinds (dispatch, and later
// callbacks), their workers, and the client set-up for serving and for
// insert-only front doors such as Lambda. It does not decide how a build runs;
// the dispatch worker hands that to a Launcher.
package queue
