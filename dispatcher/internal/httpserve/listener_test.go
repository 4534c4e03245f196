package httpserve

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// accept runs Accept in the background and returns where its result arrives.
func accept(ln net.Listener) chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	return ch
}

func TestLimitListenerHoldsTheCap(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := LimitListener(inner, 2)
	var clients []net.Conn
	dial := func() {
		c, err := net.Dial("tcp", inner.Addr().String())
		require.NoError(t, err)
		clients = append(clients, c)
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	dial()
	dial()
	dial() // the third waits in the accept queue
	a, b := <-accept(ln), <-accept(ln)
	require.NotNil(t, a)
	require.NotNil(t, b)

	third := accept(ln)
	select {
	case c := <-third:
		c.Close()
		t.Fatal("a third connection was accepted while two were open")
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, a.Close())
	_ = a.Close() // closing twice frees one slot, not two (checked below)
	c := <-third
	require.NotNil(t, c, "closing one frees its slot")
	defer c.Close()

	dial()
	fourth := accept(ln)
	select {
	case c := <-fourth:
		c.Close()
		t.Fatal("a double Close freed a second slot")
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, ln.Close())
	_, ok := <-fourth
	require.False(t, ok, "Close ends an Accept waiting for a slot")
	_, err = ln.Accept()
	require.True(t, errors.Is(err, net.ErrClosed), "%v", err)
	b.Close()
}

func TestLimitListenerForwardsCloseWrite(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := LimitListener(inner, 1)
	defer ln.Close()
	client, err := net.Dial("tcp", inner.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	srv := <-accept(ln)
	defer srv.Close()
	cw, ok := srv.(interface{ CloseWrite() error })
	require.True(t, ok, "net/http half-closes through CloseWrite")
	require.NoError(t, cw.CloseWrite())
	require.NoError(t, client.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = client.Read(make([]byte, 1))
	require.Error(t, err, "the client sees the end of the stream")
	require.False(t, isTimeout(err), "%v", err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
