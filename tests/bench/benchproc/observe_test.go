package benchproc_test

import (
	"math"
	"testing"

	"github.com/kilnbuild/kiln/tests/bench/benchproc"
)

// HistogramDelta reads what a histogram observed between two scrapes: its
// count, its mean and the first bucket bound holding the quantile, for the
// series the selectors pick.
func TestHistogramDelta(t *testing.T) {
	before := benchproc.ParseExposition([]byte(`d_bucket{verb="POST",le="0.01"} 1
d_bucket{verb="POST",le="0.1"} 1
d_bucket{verb="POST",le="+Inf"} 1
d_bucket{verb="GET",le="0.01"} 5
d_sum{verb="POST"} 0.005
d_count{verb="POST"} 1
`))
	after := benchproc.ParseExposition([]byte(`d_bucket{verb="POST",le="0.01"} 90
d_bucket{verb="POST",le="0.1"} 100
d_bucket{verb="POST",le="+Inf"} 101
d_bucket{verb="GET",le="0.01"} 500
d_sum{verb="POST"} 2.005
d_count{verb="POST"} 101
`))
	n, mean, p50 := benchproc.HistogramDelta(before, after, "d", 0.5, `verb="POST"`)
	if n != 100 || math.Abs(mean-0.02) > 1e-9 || p50 != 0.01 {
		t.Errorf("HistogramDelta p50 = %v, %v, %v; want 100, 0.02, 0.01", n, mean, p50)
	}
	if _, _, p99 := benchproc.HistogramDelta(before, after, "d", 0.99, `verb="POST"`); p99 != 0.1 {
		t.Errorf("p99 = %v, want 0.1", p99)
	}
	if _, _, p999 := benchproc.HistogramDelta(before, after, "d", 0.999, `verb="POST"`); !math.IsInf(p999, 1) {
		t.Errorf("p99.9 = %v, want +Inf (only the +Inf bucket holds it)", p999)
	}
}
