// Package auth issues and checks API tokens. Tokens are random, shown once,
// and stored only as SHA-256 hashes; a token is admin or scoped to projects.
// It does not do HTTP; the api package turns a Principal into answers.
package auth
