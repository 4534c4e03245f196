// Package addons provisions a project's add-ons — a PostgreSQL database with
// its own login role, a Redis ACL user limited to the project's key prefix —
// on servers Kiln is configured with by an admin URL. Each kind is an [Addon]
// in its own file, registered by type name, so a third kind is one more file.
//
// Provision and Deprovision are idempotent: provisioning what exists converges
// it (and resets its password), deprovisioning what is absent succeeds. The
// credentials a Provision returns are secrets: this package never logs them,
// never sends a password to a server in clear text (PostgreSQL gets a
// SCRAM-SHA-256 verifier, Redis a SHA-256 hash), and its errors name the
// server and the statement kind but never a password.
//
// It does not decide when to provision, record what was provisioned, or roll
// back a half-provisioned project: the provisioning jobs that call it do.
package addons
