// Package lambda tests the Lambda front door end to end: the `bootstrap`
// binary (dispatcher/lambda, built for linux) runs under the AWS Lambda
// Runtime Interface Emulator, and Function URL and HTTP API v2 events
// submit builds into a Postgres schema of its own. No code of its own.
package lambda
