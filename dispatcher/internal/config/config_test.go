package config

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/ratelimit"
)

func TestEnvThenFlags(t *testing.T) {
	env := map[string]string{"KILN_LISTEN_ADDR": "127.0.0.1:9000", "KILN_WORKERS": "3", "KILN_AUTH_CACHE_TTL": "1m"}
	c, _, err := Parse("serve", []string{"--workers", "7"}, func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:9000", c.ListenAddr, "environment")
	assert.Equal(t, 7, c.Workers, "flag overrides environment")
	assert.Equal(t, time.Minute, c.AuthCacheTTL)
	assert.Equal(t, "postgres://postgres@127.0.0.1:5432/kiln?sslmode=disable", c.DatabaseURL, "default")

	for _, bad := range [][]string{{"--workers", "x"}, {"--auth-cache-ttl", "soon"}, {"--log-level", "loud"},
		{"--db-schema", "Robert'); DROP"}, {"--auto-migrate", "maybe"}, {"--shutdown-timeout", "0s"}} {
		_, _, err := Parse("serve", bad, func(string) string { return "" })
		assert.ErrorContains(t, err, strings.TrimPrefix(bad[0], "--")+":", bad)
	}
}

// The README's configuration table documents every setting with its default.
func TestREADMEDocumentsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../../README.md")
	require.NoError(t, err)
	readme := string(b)
	for _, s := range Settings {
		def := "(empty)"
		if s.Default != "" {
			def = "`" + s.Default + "`"
		}
		row := "| `" + s.Env + "` | `--" + s.Flag + "` | " + def + " |"
		assert.Contains(t, readme, row, "README configuration table")
	}
}

func TestLiveSettings(t *testing.T) {
	c, _, err := Parse("serve", []string{"--callback-allowlist", "127.0.0.1, 10.20.0.0/16,::1", "--events-buffer", "8"},
		func(string) string { return "" })
	require.NoError(t, err)
	require.Len(t, c.CallbackAllowlist, 3)
	assert.Equal(t, "127.0.0.1/32", c.CallbackAllowlist[0].String())
	assert.Equal(t, "10.20.0.0/16", c.CallbackAllowlist[1].String())
	assert.Equal(t, 24*time.Hour, c.CallbackMaxAge)
	assert.Equal(t, 10*time.Second, c.CallbackTimeout)
	assert.Equal(t, 8, c.EventBuffer)
	assert.Equal(t, 15*time.Second, c.EventHeartbeat)
	for _, bad := range [][]string{{"--callback-allowlist", "example.com"}, {"--callback-max-age", "0s"},
		{"--callback-timeout", "x"}, {"--events-buffer", "0"}, {"--events-heartbeat", "-1s"},
		{"--http-read-header-timeout", "0s"}, {"--http-body-timeout", "soon"}, {"--http-write-timeout", "-1m"},
		{"--http-idle-timeout", "x"}, {"--http-max-conns", "0"}} {
		_, _, err := Parse("serve", bad, func(string) string { return "" })
		assert.ErrorContains(t, err, strings.TrimPrefix(bad[0], "--")+":", bad)
	}
}

func TestLimitSettings(t *testing.T) {
	c, _, err := Parse("serve", nil, func(string) string { return "" })
	require.NoError(t, err)
	assert.Equal(t, ratelimit.DefaultReads, c.RateLimits.Reads)
	assert.Equal(t, ratelimit.DefaultWrites, c.RateLimits.Writes)
	assert.Equal(t, ratelimit.DefaultAnonymous, c.RateLimits.Anonymous)
	assert.Empty(t, c.RateLimits.TrustedProxies)
	assert.Equal(t, ratelimit.DefaultStreamsPerToken, c.StreamsPerToken)
	assert.Equal(t, 5*time.Second, c.AuthMissTTL)

	env := map[string]string{"KILN_RATE_WRITES": "0.5", "KILN_RATE_WRITES_BURST": "3", "KILN_TRUSTED_PROXIES": "10.0.0.0/8,::1"}
	c, _, err = Parse("serve", []string{"--rate-reads", "0", "--rate-anonymous-burst", "7", "--streams-per-token", "0",
		"--auth-miss-ttl", "0s"}, func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.True(t, c.RateLimits.Reads.Unlimited(), "0 turns a limit off")
	assert.Equal(t, ratelimit.Limit{Rate: 0.5, Burst: 3}, c.RateLimits.Writes)
	assert.Equal(t, ratelimit.Limit{Rate: 20, Burst: 7}, c.RateLimits.Anonymous)
	require.Len(t, c.RateLimits.TrustedProxies, 2)
	assert.Equal(t, "10.0.0.0/8", c.RateLimits.TrustedProxies[0].String())
	assert.Equal(t, "::1/128", c.RateLimits.TrustedProxies[1].String())
	assert.Zero(t, c.StreamsPerToken)
	assert.Zero(t, c.AuthMissTTL)

	for _, bad := range [][]string{{"--rate-reads", "-1"}, {"--rate-writes", "fast"}, {"--rate-anonymous", "NaN"},
		{"--rate-reads-burst", "0"}, {"--rate-writes-burst", "x"}, {"--trusted-proxies", "proxy.local"},
		{"--streams-per-token", "-1"}, {"--auth-miss-ttl", "-1s"}} {
		_, _, err := Parse("serve", bad, func(string) string { return "" })
		assert.ErrorContains(t, err, strings.TrimPrefix(bad[0], "--")+":", bad)
	}
}

func TestKubeClientSettings(t *testing.T) {
	c, _, err := Parse("serve", nil, func(string) string { return "" })
	require.NoError(t, err)
	assert.Equal(t, float32(200), c.KubeQPS)
	assert.Equal(t, 400, c.KubeBurst)
	c, _, err = Parse("serve", []string{"--kube-qps", "50.5"}, func(k string) string { return map[string]string{"KILN_KUBE_BURST": "80"}[k] })
	require.NoError(t, err)
	assert.Equal(t, float32(50.5), c.KubeQPS)
	assert.Equal(t, 80, c.KubeBurst)
	for _, bad := range [][]string{{"--kube-qps", "0"}, {"--kube-qps", "NaN"}, {"--kube-qps", "+Inf"}, {"--kube-qps", "fast"},
		{"--kube-burst", "0"}, {"--kube-burst", "1.5"}} {
		_, _, err := Parse("serve", bad, func(string) string { return "" })
		assert.ErrorContains(t, err, strings.TrimPrefix(bad[0], "--")+":", bad)
	}
}

func TestHTTPServerSettings(t *testing.T) {
	c, _, err := Parse("serve", nil, func(string) string { return "" })
	require.NoError(t, err)
	assert.Equal(t, 10*time.Second, c.HTTPReadHeaderTimeout)
	assert.Equal(t, 15*time.Second, c.HTTPBodyTimeout, "a withheld body is cut within 15s")
	assert.Equal(t, time.Minute, c.HTTPWriteTimeout)
	assert.Equal(t, 2*time.Minute, c.HTTPIdleTimeout)
	assert.Equal(t, 2048, c.HTTPMaxConns)
	env := map[string]string{"KILN_HTTP_BODY_TIMEOUT": "2s", "KILN_HTTP_MAX_CONNS": "10"}
	c, _, err = Parse("serve", []string{"--http-max-conns", "3"}, func(k string) string { return env[k] })
	require.NoError(t, err)
	assert.Equal(t, 2*time.Second, c.HTTPBodyTimeout)
	assert.Equal(t, 3, c.HTTPMaxConns, "flag overrides environment")
}

func TestPublicURL(t *testing.T) {
	c, _, err := Parse("serve", nil, func(string) string { return "" })
	require.NoError(t, err)
	assert.Empty(t, c.PublicURL, "not configured by default")

	for in, want := range map[string]string{
		"https://kiln.example.com":        "https://kiln.example.com",
		"https://kiln.example.com/":       "https://kiln.example.com",
		"https://kiln.example.com//":      "https://kiln.example.com",
		"http://127.0.0.1:8080":           "http://127.0.0.1:8080",
		"https://example.com/kiln/":       "https://example.com/kiln",
		"http://[::1]:8080/":              "http://[::1]:8080",
		"https://kiln.example.com:8443/x": "https://kiln.example.com:8443/x",
	} {
		c, _, err := Parse("serve", nil, func(k string) string { return map[string]string{"KILN_PUBLIC_URL": in}[k] })
		require.NoError(t, err, in)
		assert.Equal(t, want, c.PublicURL, in)
	}
	c, _, err = Parse("serve", []string{"--public-url", "https://flag.example.com/"},
		func(k string) string { return map[string]string{"KILN_PUBLIC_URL": "https://env.example.com"}[k] })
	require.NoError(t, err)
	assert.Equal(t, "https://flag.example.com", c.PublicURL, "flag overrides environment")

	for in, why := range map[string]string{
		"kiln.example.com":                     "absolute http or https URL",
		"/ui":                                  "absolute http or https URL",
		"ftp://kiln.example.com":               "absolute http or https URL",
		"javascript:alert(1)":                  "absolute http or https URL",
		"https://":                             "must name a host",
		"https:///path":                        "must name a host",
		"https://:8443":                        "must name a host",
		"https://kiln.example.com?x=1":         "must not have a query",
		"https://kiln.example.com/?":           "must not have a query",
		"https://kiln.example.com/#top":        "must not have a fragment",
		"https://kiln.example.com#":            "must not have a fragment",
		"https://bob@kiln.example.com":         "must not carry user info",
		"https://bob:hunter2@kiln.example.com": "must not carry user info",
		"https://kiln.example.com:port":        "absolute http or https URL",
		"https://kiln example.com":             "absolute http or https URL",
	} {
		_, _, err := Parse("serve", []string{"--public-url", in}, func(string) string { return "" })
		require.Error(t, err, in)
		assert.ErrorContains(t, err, "KILN_PUBLIC_URL", in)
		assert.ErrorContains(t, err, why, in)
		assert.NotContains(t, err.Error(), "hunter2", "a password is not repeated")
	}
}

func TestConsoleSessionTTL(t *testing.T) {
	c, _, err := Parse("serve", nil, func(string) string { return "" })
	require.NoError(t, err)
	assert.Equal(t, 12*time.Hour, c.ConsoleSessionTTL)
	for in, want := range map[string]time.Duration{"1m": time.Minute, "30m": 30 * time.Minute, "720h": 720 * time.Hour} {
		c, _, err := Parse("serve", nil, func(k string) string { return map[string]string{"KILN_CONSOLE_SESSION_TTL": in}[k] })
		require.NoError(t, err, in)
		assert.Equal(t, want, c.ConsoleSessionTTL, in)
	}
	for _, bad := range []string{"59s", "721h", "0s", "-1h", "forever", ""} {
		_, _, err := Parse("serve", []string{"--console-session-ttl", bad}, func(string) string { return "" })
		assert.ErrorContains(t, err, "KILN_CONSOLE_SESSION_TTL", bad)
		assert.ErrorContains(t, err, "from 1m to 720h", bad)
	}
}
