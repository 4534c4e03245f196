package callback_test

import (
	"net/netip"
	"testing"

	"github.com/kilnbuild/kiln/dispatcher/internal/callback"
)

var (
	ipv4Compatible = netip.MustParsePrefix("::/96")
	localNAT64     = netip.MustParsePrefix("64:ff9b:1::/48")
)

// FuzzGuard cross-checks the guard against the standard library's address
// classes: nothing loopback, private, link-local, multicast or unspecified
// gets through, nor IPv4-compatible (::/96) or local-use NAT64
// (64:ff9b:1::/48) addresses, and allowlisted addresses always do.
func FuzzGuard(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::1", "10.1.2.3", "169.254.169.254", "fd00:ec2::254", "::ffff:10.0.0.1",
		"64:ff9b::7f00:1", "2002:a00:1::", "8.8.8.8", "2606:4700::1111", "fe80::1%eth0",
		"::127.0.0.1", "::8.8.8.8", "64:ff9b:1::a00:1", "64:ff9b:1:ffff::1", "64:ff9b::808:808"} {
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
			u.IsInterfaceLocalMulticast() || u.IsMulticast() || u.IsUnspecified() ||
			ipv4Compatible.Contains(u) || localNAT64.Contains(u)
		if err := g.Check(a); bad && err == nil {
			t.Fatalf("%s got through", a)
		}
		allow := &callback.Guard{Allow: []netip.Prefix{netip.PrefixFrom(u, u.BitLen())}}
		if err := allow.Check(a); err != nil {
			t.Fatalf("%s is allowlisted but refused: %v", a, err)
		}
	})
}
