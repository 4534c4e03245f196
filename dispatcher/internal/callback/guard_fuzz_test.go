package callback_test

import (
	"net/netip"
	"testing"

	"github.com/kilnbuild/kiln/dispatcher/internal/callback"
)

// FuzzGuard cross-checks the guard against the standard library's address
// classes: nothing loopback, private, link-local, multicast or unspecified
// gets through, and allowlisted addresses always do.
func FuzzGuard(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::1", "10.1.2.3", "169.254.169.254", "fd00:ec2::254", "::ffff:10.0.0.1",
		"64:ff9b::7f00:1", "2002:a00:1::", "8.8.8.8", "2606:4700::1111", "fe80::1%eth0"} {
		a := netip.MustParseAddr(s)
		b := a.As16()
		f.Add(b[:], a.Is4())
	}
	g := &callback.Guard{}
	f.Fuzz(func(t *testing.T, raw []byte, four bool) {
		if len(raw) != 16 {
			return
		}
		a := netip.AddrFrom16([16]byte(raw))
		if four {
			a = a.Unmap()
		}
		u := a.Unmap()
		bad := u.IsLoopback() || u.IsPrivate() || u.IsLinkLocalUnicast() || u.IsLinkLocalMulticast() ||
			u.IsInterfaceLocalMulticast() || u.IsMulticast() || u.IsUnspecified()
		if err := g.Check(a); bad && err == nil {
			t.Fatalf("%s got through", a)
		}
		allow := &callback.Guard{Allow: []netip.Prefix{netip.PrefixFrom(u, u.BitLen())}}
		if err := allow.Check(a); err != nil {
			t.Fatalf("%s is allowlisted but refused: %v", a, err)
		}
	})
}
