package kubebox

import (
	"fmt"
	"net"
	"sync"
)

// handedOut remembers the ports this process has already given to a cluster,
// so two clusters started by one test binary never race for the same port.
var handedOut = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
// Another process may still take it before the child binds; callers retry
// when a child fails with "address already in use".
func freePort() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		handedOut.Lock()
		taken := handedOut.m[port]
		handedOut.m[port] = true
		handedOut.Unlock()
		if !taken {
			return port, nil
		}
	}
	return 0, fmt.Errorf("finding a free port: no unused port after 50 tries")
}
