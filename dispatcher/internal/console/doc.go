// Package console is Kiln's web console: server-rendered pages under /ui/
// for the people who watch builds — projects, a project's builds, a build
// with its live timeline and result, and an overview of the last 24 hours.
//
// A person signs in at /ui/login with a Kiln token, which becomes a
// session cookie (auth.Sessions) that acts as the token and ends with it;
// a Bearer header works as well. Every page scopes what it shows exactly as
// the API does, through intake. A build another project's token may not see
// is a 404 page, as the API answers it.
//
// Everything a build carries (prompts, agent output, tool input and
// results, file names, errors) is attacker-controlled. The pages render it
// with html/template, and the one script (static/console.js, which renders
// the live timeline) writes it with textContent only; bidirectional and
// control characters are shown as visible [U+XXXX] marks. The pages carry
// a Content-Security-Policy without inline script or style, deny framing,
// and never hold a token: the forms carry a CSRF token of the session.
//
// The assets are embedded (go:embed); nothing is fetched from elsewhere and
// there is no build step.
package console
