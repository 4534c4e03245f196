package console

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
)

func TestVisibleMarksWhatChangesHowTextReads(t *testing.T) {
	for in, want := range map[string]string{
		"plain <b>text</b>":     "plain <b>text</b>", // markup is html/template's to escape
		"invoice\u202Etxt.exe":  "invoice[U+202E]txt.exe",
		"a\u2066b\u2069c":       "a[U+2066]b[U+2069]c",
		"zero\u200Bwidth\uFEFF": "zero[U+200B]width[U+FEFF]",
		"bell\x07 esc\x1b[31m":  "bell[U+0007] esc[U+001B][31m",
		"tabs\tand\nnewlines":   "tabs\tand\nnewlines",
		"line\u2028sep":         "line[U+2028]sep",
		"日本語 and émoji 🔥":       "日本語 and émoji 🔥",
	} {
		assert.Equal(t, want, Visible(in), "%q", in)
	}
}

func TestRelativeTimes(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		3 * time.Second:  "just now",
		42 * time.Second: "42 s ago",
		5 * time.Minute:  "5 min ago",
		3 * time.Hour:    "3 h ago",
		72 * time.Hour:   "3 d ago",
		-2 * time.Hour:   "in 2 h",
	} {
		assert.Equal(t, want, relative(now, now.Add(-d)), d)
	}
}

func TestLocalNext(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/builds/x?a=1":         "/ui/builds/x?a=1",
		"/riverui/jobs/5":          "/riverui/jobs/5",
		"/ui":                      "/ui",
		"/uix/":                    "/ui/",
		"/riveruix":                "/ui/",
		"//evil.example":           "/ui/",
		"/\\evil.example":          "/ui/",
		"http://evil.example/ui/":  "/ui/",
		"/ui/%2e%2e/metrics":       "/ui/",
		"/ui/../metrics":           "/ui/",
		"\t/ui/":                   "/ui/",
		"javascript:alert(1)//ui/": "/ui/",
	} {
		assert.Equal(t, want, localNext(in), "%q", in)
	}
}

func TestHoursChartStacksOutcomes(t *testing.T) {
	h0 := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	c := hoursChart([]store.HourCount{{Hour: h0, Total: 10, Completed: 6, Failed: 3, Cancelled: 1}, {Hour: h0.Add(time.Hour)}})
	assert.False(t, c.Empty)
	if assert.Len(t, c.Bars, 3, "ok, failed and cancelled parts of the one hour with builds") {
		total := c.Bars[0].H + c.Bars[1].H + c.Bars[2].H
		assert.InDelta(t, plotH/2, total, 0.001, "10 builds is half the axis: 0 to 20 in steps of 5")
		assert.Equal(t, "20", c.YTicks[4].Text)
		assert.InDelta(t, c.Bars[0].Y, c.Bars[1].Y+c.Bars[1].H, 0.001, "stacked")
		assert.Contains(t, c.Bars[1].Title, "10 builds (6 completed, 3 failed, 1 cancelled)")
	}
	assert.True(t, hoursChart([]store.HourCount{{Hour: h0}}).Empty)
}
