package addons

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// respConn is a minimal RESP2 client: commands as arrays of bulk strings,
// replies as string, int64, []any, nil, or a redisError.
type respConn struct {
	c    net.Conn
	r    *bufio.Reader
	stop func() bool
}

// redisError is an error reply from the server ("-ERR …", "-NOPERM …").
type redisError string

func (e redisError) Error() string { return string(e) }

// dialRESP connects to addr; ctx bounds the connection's whole life.
func dialRESP(ctx context.Context, addr string) (*respConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	return &respConn{c: c, r: bufio.NewReader(c), stop: stop}, nil
}

func (rc *respConn) Close() error {
	rc.stop()
	return rc.c.Close()
}

// do sends one command and reads its reply. A server error reply is
// returned as a redisError error.
func (rc *respConn) do(args ...string) (any, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(rc.c, b.String()); err != nil {
		return nil, err
	}
	v, err := readRESP(rc.r)
	if err != nil {
		return nil, err
	}
	if e, ok := v.(redisError); ok {
		return nil, e
	}
	return v, nil
}

var errProtocol = errors.New("redis protocol error")

// readRESP reads one RESP2 value. An error reply is returned as a value of
// type redisError, so that errors inside arrays keep their place.
func readRESP(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: malformed line", errProtocol)
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+':
		return body, nil
	case '-':
		return redisError(body), nil
	case ':':
		n, err := strconv.ParseInt(body, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: bad integer", errProtocol)
		}
		return n, nil
	case '$', '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > 512<<20 {
			return nil, fmt.Errorf("%w: bad length", errProtocol)
		}
		if n == -1 {
			return nil, nil
		}
		if kind == '$' {
			var buf bytes.Buffer // grows with what arrives, not with what the length claims
			if _, err := io.CopyN(&buf, r, int64(n)+2); err != nil {
				return nil, err
			}
			b := buf.Bytes()
			if b[n] != '\r' || b[n+1] != '\n' {
				return nil, fmt.Errorf("%w: bulk string not terminated", errProtocol)
			}
			return string(b[:n]), nil
		}
		arr := make([]any, 0, min(n, 1024))
		for range n {
			v, err := readRESP(r)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		return arr, nil
	default:
		return nil, fmt.Errorf("%w: unexpected reply type %q", errProtocol, kind)
	}
}
