package callback_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/callback"
)

// IPv6 forms that carry or reach an IPv4 address are refused like it, or
// outright where the embedding is not fixed.
func TestGuardIPv6Embeddings(t *testing.T) {
	t.Parallel()
	open := &callback.Guard{}
	for _, tc := range []struct{ addr, why string }{
		{"::127.0.0.1", "IPv4-compatible (deprecated)"},
		{"::10.0.0.1", "IPv4-compatible (deprecated)"},
		{"::8.8.8.8", "IPv4-compatible (deprecated)"}, // no public service uses the form
		{"::1", "loopback"},                           // still named as such
		{"::", "unspecified"},
		{"64:ff9b:1::7f00:1", "NAT64 (local use)"},
		{"64:ff9b:1:ffff::808:808", "NAT64 (local use)"},
		{"64:ff9b::7f00:1", "loopback"}, // well-known NAT64 carries 127.0.0.1
		{"64:ff9b::a9fe:a9fe", "cloud metadata"},
		{"2002:a9fe:a9fe::1", "cloud metadata"}, // 6to4 of 169.254.169.254
	} {
		err := open.Check(netip.MustParseAddr(tc.addr))
		require.ErrorIs(t, err, callback.ErrRefusedAddress, tc.addr)
		assert.Contains(t, err.Error(), "is "+tc.why, tc.addr)
	}
	for _, ok := range []string{"64:ff9b::808:808", "64:ff9b:2::1", "2606:4700::1111", "::ffff:8.8.8.8"} {
		assert.NoError(t, open.Check(netip.MustParseAddr(ok)), ok)
	}
	allow, err := callback.ParseAllowlist("64:ff9b:1::/48")
	require.NoError(t, err)
	assert.NoError(t, (&callback.Guard{Allow: allow}).Check(netip.MustParseAddr("64:ff9b:1::a00:1")),
		"an operator's allowlist reaches its own NAT64")
}
