package main

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// normalizer replaces what differs between recordings of the same scenario
// with stable placeholders.
type normalizer struct {
	paths [][2]string // real path, placeholder; longest real path first
	addr  string      // the stand-in's host:port
	uuids map[string]string
}

var (
	uuidRE      = regexp.MustCompile(`\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b`)
	timestampRE = regexp.MustCompile(`\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\b`)
	socketRE    = regexp.MustCompile(`/tmp/cc-socks/\d+\.sock`)
	persistedRE = regexp.MustCompile(`/tool-results/[A-Za-z0-9_-]+\.txt`)
	nonAlnumRE  = regexp.MustCompile(`[^a-zA-Z0-9]`)
	timingRE    = regexp.MustCompile(`"(duration_ms|duration_api_ms|ttft_ms|ttft_stream_ms|time_to_request_ms|first_content_frame_ms)":[1-9]\d*`)
	retryRE     = regexp.MustCompile(`"attempt":(\d+),"max_retries":(\d+),"retry_delay_ms":\d+`)
)

// timings are the fixed values non-zero timings are replaced with: they
// vary from run to run and tell a parser nothing else.
var timings = map[string]int{
	"duration_ms": 1500, "duration_api_ms": 900, "ttft_ms": 120, "ttft_stream_ms": 120,
	"time_to_request_ms": 100, "first_content_frame_ms": 120,
}

// placeholderAddr stands for the stand-in's address.
const placeholderAddr = "127.0.0.1:PORT"

func newNormalizer(paths map[string]string, addr string) *normalizer {
	n := &normalizer{addr: addr, uuids: map[string]string{}}
	for real, ph := range paths {
		n.paths = append(n.paths, [2]string{real, ph})
	}
	slices.SortFunc(n.paths, func(a, b [2]string) int {
		return cmp.Or(cmp.Compare(len(b[0]), len(a[0])), strings.Compare(a[0], b[0]))
	})
	return n
}

// normalize rewrites s: paths to placeholders (also in the dashed form the
// CLI uses for its project folders), the server address, UUIDs renumbered
// in order of first appearance, timestamps and timings fixed, the CLI's socket pid and
// the random name of a large tool output it saved.
func (n *normalizer) normalize(s string) string {
	for _, p := range n.paths {
		s = strings.ReplaceAll(s, p[0], p[1])
		s = strings.ReplaceAll(s, dashed(p[0]), dashed(p[1]))
	}
	if n.addr != "" {
		s = strings.ReplaceAll(s, n.addr, placeholderAddr)
	}
	s = uuidRE.ReplaceAllStringFunc(s, func(u string) string {
		if v, ok := n.uuids[u]; ok {
			return v
		}
		v := fmt.Sprintf("00000000-0000-4000-8000-%012d", len(n.uuids)+1)
		n.uuids[u] = v
		return v
	})
	s = timestampRE.ReplaceAllString(s, "2026-01-01T00:00:00.000Z")
	s = timingRE.ReplaceAllStringFunc(s, func(m string) string {
		key := timingRE.FindStringSubmatch(m)[1]
		return fmt.Sprintf("%q:%d", key, timings[key])
	})
	// The CLI waits 500 ms × 2^(attempt-1) plus a random jitter: keep the first part.
	s = retryRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := retryRE.FindStringSubmatch(m)
		attempt, _ := strconv.Atoi(sub[1])
		return fmt.Sprintf(`"attempt":%s,"max_retries":%s,"retry_delay_ms":%d`, sub[1], sub[2], 500<<max(attempt-1, 0))
	})
	s = persistedRE.ReplaceAllString(s, "/tool-results/persisted.txt")
	return socketRE.ReplaceAllString(s, "/tmp/cc-socks/0.sock")
}

// dashed is a path as the CLI names its project folder after it.
func dashed(path string) string { return nonAlnumRE.ReplaceAllString(path, "-") }

// parseLines decodes stdout, one JSON object a line.
func parseLines(stdout []byte) ([]map[string]any, error) {
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(nil, 64<<20)
	for i := 1; sc.Scan(); i++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("stdout line %d is not JSON: %w", i, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}
