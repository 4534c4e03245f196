package console

import (
	"fmt"
	"math"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
)

// chart is a bar chart the overview draws as inline SVG: every coordinate
// is computed here, so the template only places rects and text (no script,
// no style attributes: the CSP allows neither).
type chart struct {
	Label         string // what the chart shows, for screen readers
	Width, Height float64
	Bars          []bar
	XLabels       []axisLabel
	YTicks        []axisLabel
	Legend        []legend
	Empty         bool // nothing to draw
}

type bar struct {
	X, Y, W, H float64
	Class      string
	Title      string // shown on hover
}

type axisLabel struct {
	X, Y float64
	Text string
}

type legend struct {
	Class, Text string
}

const (
	chartW, chartH        = 720.0, 220.0
	padLeft, padBottom    = 48.0, 28.0
	padTop, padRight      = 12.0, 8.0
	plotW, plotH          = chartW - padLeft - padRight, chartH - padTop - padBottom
	hourLabelEvery        = 3
	durationBarsPerGroup  = 2
	durationGroupGapShare = 0.3
	maxBarW               = 56.0
)

// niceMax rounds v up to 1, 2 or 5 times a power of ten, for the y axis.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// axisTop is the top of a y axis for values up to most: four steps of a
// nice size (1, 2 or 5 times a power of ten; at least minStep).
func axisTop(most, minStep float64) float64 {
	return max(niceMax(most/4), minStep) * 4
}

func yTicks(max float64, format func(float64) string) []axisLabel {
	var ts []axisLabel
	for i := 0; i <= 4; i++ {
		v := max * float64(i) / 4
		ts = append(ts, axisLabel{X: padLeft - 6, Y: padTop + plotH - plotH*float64(i)/4, Text: format(v)})
	}
	return ts
}

// hoursChart is builds per hour: each hour's bar the builds submitted in
// it, its failed and cancelled ones stacked on top of the rest.
func hoursChart(hours []store.HourCount) *chart {
	c := &chart{Label: "Builds submitted per hour over the last 24 hours", Width: chartW, Height: chartH,
		Legend: []legend{{"ok", "completed or still going"}, {"failed", "failed"}, {"cancelled", "cancelled"}}}
	most := 0
	for _, h := range hours {
		most = max(most, h.Total)
	}
	c.Empty = most == 0
	top := axisTop(float64(most), 1)
	c.YTicks = yTicks(top, func(v float64) string { return fmt.Sprintf("%g", v) })
	if len(hours) == 0 {
		return c
	}
	slot := plotW / float64(len(hours))
	for i, h := range hours {
		x := padLeft + float64(i)*slot + slot*0.1
		w := slot * 0.8
		y := padTop + plotH
		for _, part := range []struct {
			n     int
			class string
		}{{h.Total - h.Failed - h.Cancelled, "ok"}, {h.Failed, "failed"}, {h.Cancelled, "cancelled"}} {
			if part.n <= 0 {
				continue
			}
			hgt := plotH * float64(part.n) / top
			y -= hgt
			c.Bars = append(c.Bars, bar{X: x, Y: y, W: w, H: hgt, Class: part.class,
				Title: fmt.Sprintf("%s–%s UTC: %d builds (%d completed, %d failed, %d cancelled)",
					h.Hour.Format("15:04"), h.Hour.Add(time.Hour).Format("15:04"), h.Total, h.Completed, h.Failed, h.Cancelled)})
		}
		if i%hourLabelEvery == 0 {
			c.XLabels = append(c.XLabels, axisLabel{X: x + w/2, Y: chartH - 8, Text: h.Hour.Format("15:04")})
		}
	}
	return c
}

// durationsChart is p50 and p95 duration by template, side by side.
func durationsChart(ts []store.TemplateDurations) *chart {
	c := &chart{Label: "p50 and p95 build duration by template over the last 24 hours", Width: chartW, Height: chartH,
		Legend: []legend{{"p50", "p50"}, {"p95", "p95"}}, Empty: len(ts) == 0}
	var most time.Duration
	for _, t := range ts {
		most = max(most, t.P95, t.P50)
	}
	top := axisTop(most.Seconds(), 0.001)
	c.YTicks = yTicks(top, func(v float64) string { return duration(time.Duration(v * float64(time.Second))) })
	if len(ts) == 0 {
		return c
	}
	group := plotW / float64(len(ts))
	w := min(group*(1-durationGroupGapShare)/durationBarsPerGroup, maxBarW)
	for i, t := range ts {
		x0 := padLeft + float64(i)*group + (group-durationBarsPerGroup*w)/2
		for j, q := range []struct {
			d     time.Duration
			class string
		}{{t.P50, "p50"}, {t.P95, "p95"}} {
			h := plotH * q.d.Seconds() / top
			c.Bars = append(c.Bars, bar{X: x0 + float64(j)*w, Y: padTop + plotH - h, W: w, H: h, Class: q.class,
				Title: fmt.Sprintf("%s %s: %s over %d builds", Visible(t.Template), q.class, duration(q.d), t.Builds)})
		}
		c.XLabels = append(c.XLabels, axisLabel{X: x0 + w, Y: chartH - 8, Text: Visible(t.Template)})
	}
	return c
}
