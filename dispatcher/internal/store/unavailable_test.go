package store

import (
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestIsUnavailable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "57P01"}, true},  // terminating connection due to administrator command
		{&pgconn.PgError{Code: "57P03"}, true},  // the database system is starting up
		{&pgconn.PgError{Code: "08006"}, true},  // connection failure
		{&pgconn.PgError{Code: "53300"}, true},  // too many connections
		{&pgconn.PgError{Code: "23505"}, false}, // unique violation: the request's fault
		{&pgconn.PgError{Code: "42P01"}, false}, // undefined table: a bug, not an outage
		{fmt.Errorf("submitting: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), true},
		{ErrNotFound, false},
		{ErrConflict, false},
		{nil, false},
	} {
		if got := IsUnavailable(c.err); got != c.want {
			t.Errorf("IsUnavailable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
