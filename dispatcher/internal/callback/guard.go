package callback

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// ErrRefusedAddress is returned when a callback would connect to an address
// the SSRF guard refuses.
var ErrRefusedAddress = errors.New("callback address refused")

// refused lists the address ranges callbacks may not reach unless the
// operator's allowlist names them.
var refused = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("169.254.169.254/32"), "cloud metadata"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "cloud metadata"},
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("fc00::/7"), "private (ULA)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("192.0.0.0/24"), "reserved"},
	{netip.MustParsePrefix("198.18.0.0/15"), "reserved"},
	// IPv4-compatible IPv6 (deprecated by RFC 4291): ::127.0.0.1 may reach
	// the IPv4 address it carries, and no public service uses the form.
	{netip.MustParsePrefix("::/96"), "IPv4-compatible (deprecated)"},
	// Local-use NAT64 (RFC 8215): where the IPv4 address sits depends on
	// the operator's prefix length, so none of it is reachable by default.
	{netip.MustParsePrefix("64:ff9b:1::/48"), "NAT64 (local use)"},
}

// RefusedError says which address was refused and why.
type RefusedError struct {
	Addr netip.Addr
	Why  string // loopback, private, link-local, cloud metadata, ...
}

func (e *RefusedError) Error() string { return e.Addr.String() + " is " + e.Why }

// Is makes errors.Is(err, ErrRefusedAddress) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefusedAddress }

// Guard decides which addresses callbacks may connect to.
type Guard struct {
	// Allow lists ranges that are reachable even though they are refused by
	// default (an operator's KILN_CALLBACK_ALLOWLIST).
	Allow []netip.Prefix
}

// ParseAllowlist reads comma-separated CIDRs or addresses.
func ParseAllowlist(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR or an IP address", f)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR or an IP address", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Check returns nil if a may be connected to, else an error wrapping
// ErrRefusedAddress that says why.
func (g *Guard) Check(a netip.Addr) error {
	a = a.Unmap().WithZone("") // a zoned address matches no prefix
	for _, p := range g.Allow {
		if p.Contains(a) {
			return nil
		}
	}
	for _, v := range embeddedIPv4(a) {
		if err := g.Check(v); err != nil {
			return err
		}
	}
	for _, r := range refused {
		if r.prefix.Contains(a) {
			return &RefusedError{Addr: a, Why: r.why}
		}
	}
	return nil
}

var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

// embeddedIPv4 returns the IPv4 address well-known NAT64 (64:ff9b::/96) and
// 6to4 addresses carry, so they cannot smuggle a refused one.
func embeddedIPv4(a netip.Addr) []netip.Addr {
	if !a.Is6() {
		return nil
	}
	b := a.As16()
	switch {
	case nat64.Contains(a):
		return []netip.Addr{netip.AddrFrom4([4]byte(b[12:16]))}
	case sixTo4.Contains(a):
		return []netip.Addr{netip.AddrFrom4([4]byte(b[2:6]))}
	}
	return nil
}

// Control is a net.Dialer Control function: it runs for every address the
// dialer is about to connect to, after name resolution, so a name that
// resolves (or re-resolves) to a refused address is caught.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrRefusedAddress, address)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%w: %s is not an IP address", ErrRefusedAddress, host)
	}
	return g.Check(a)
}
