// Package auth issues and checks API tokens. Tokens are random, shown once,
// and stored only as SHA-256 hashes; a token is admin or scoped to projects,
// and stops working once revoked (store.RevokeToken; `dispatcher token
// revoke`). The Authenticator caches valid tokens for a short TTL and
// unknown ones for a shorter one, so neither a busy bot nor a flood of bad
// tokens costs a database lookup per request; Live asks the database
// directly, for the event streams that re-check their token.
// It does not do HTTP; the api package turns a Principal into answers.
package auth
