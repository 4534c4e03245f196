package httpserve

import (
	"fmt"
	"net"
	"net/http"
	"sync"
)

// Listen listens on the TCP address addr and serves at most maxConns
// connections at once (see LimitListener).
func Listen(addr string, maxConns int) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return LimitListener(ln, maxConns), nil
}

// LimitListener returns a listener that holds at most n connections open at
// once. When all n are taken, a new connection makes room by closing one
// that waits idle for its next request (keep-alive; a server from NewServer
// reports which), else it waits until one closes; the ones after it wait in
// the kernel's accept queue. A hijacked connection (a WebSocket) counts
// until it is closed. n must be positive.
func LimitListener(ln net.Listener, n int) net.Listener {
	if n < 1 {
		panic("httpserve: LimitListener needs a positive limit")
	}
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{}),
		idle: map[*limitConn]struct{}{}, becameIdle: make(chan struct{}, 1)}
}

type limitListener struct {
	net.Listener
	sem       chan struct{} // one token an open connection
	done      chan struct{} // closed by Close
	closeOnce sync.Once

	mu         sync.Mutex
	idle       map[*limitConn]struct{} // open connections waiting for their next request
	becameIdle chan struct{}           // a connection turned idle
}

// Accept takes the next connection and then a slot for it, closing an idle
// connection if that is the only way to get one.
func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	for {
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, l: l}, nil
		default:
		}
		if l.closeIdle() {
			continue
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, l: l}, nil
		case <-l.becameIdle:
		case <-l.done:
			c.Close()
			return nil, net.ErrClosed
		}
	}
}

// closeIdle closes one idle connection, if there is one, and reports whether
// it did.
func (l *limitListener) closeIdle() bool {
	l.mu.Lock()
	var victim *limitConn
	for c := range l.idle {
		victim = c
		break
	}
	l.mu.Unlock()
	if victim == nil {
		return false
	}
	victim.Close()
	return true
}

// Close closes the listener; an Accept waiting for a free slot returns.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	l      *limitListener
	once   sync.Once
	closed bool // guarded by l.mu
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.closed = true
		delete(c.l.idle, c)
		c.l.mu.Unlock()
		<-c.l.sem
	})
	return err
}

// setIdle records whether c waits for its next request.
func (c *limitConn) setIdle(idle bool) {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	switch {
	case c.closed:
	case idle:
		c.l.idle[c] = struct{}{}
		select {
		case c.l.becameIdle <- struct{}{}:
		default:
		}
	default:
		delete(c.l.idle, c)
	}
}

// connState tells a LimitListener's connections when they are idle; it is
// the ConnState hook of NewServer's servers.
func connState(c net.Conn, s http.ConnState) {
	if lc, ok := c.(*limitConn); ok {
		lc.setIdle(s == http.StateIdle)
	}
}

// CloseWrite half-closes a TCP connection, as net/http does before closing
// one whose request body it did not read, so the client reads the answer
// instead of a reset.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
