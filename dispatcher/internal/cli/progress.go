package cli

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/schema"
)

// progress prints one compact line per event: time since the first event,
// sequence number, type and a one-line summary.
type progress struct {
	w     io.Writer
	width int // summary width; default 100
	first time.Time
}

// show is a client.WatchOptions.Show.
func (p *progress) show(e schema.Event) {
	if p.first.IsZero() {
		p.first = e.Time
	}
	el := e.Time.Sub(p.first).Round(100 * time.Millisecond)
	fmt.Fprintf(p.w, "%8s #%-5d %-11s %s\n", el, e.Seq, e.Type, clip(summary(e), cmp.Or(p.width, 100)))
}

// summary renders an event's payload on one line; a payload it cannot read
// is shown as it is.
func summary(e schema.Event) string {
	p, err := e.Decode()
	if err != nil {
		return string(e.Payload)
	}
	switch p := p.(type) {
	case schema.StatusPayload:
		if p.Error != "" {
			return string(p.Status) + ": " + p.Error
		}
		return string(p.Status)
	case schema.AgentTextPayload:
		return p.Text
	case schema.ToolCallPayload:
		return strings.TrimSpace(p.Name + " " + p.Input)
	case schema.ToolResultPayload:
		if p.IsError {
			return "error: " + p.Summary
		}
		return p.Summary
	case schema.UsagePayload:
		return fmt.Sprintf("%d in / %d out tokens, %d turns, $%.4f", p.InputTokens, p.OutputTokens, p.Turns, p.CostUSD)
	case schema.GitPayload:
		if p.Error != "" {
			return "error: " + p.Error
		}
		out := fmt.Sprintf("%d files changed", len(p.FilesChanged))
		if sha := p.CommitSHA; sha != "" {
			out += ", commit " + sha[:min(len(sha), 12)]
		}
		if p.Pushed {
			out += ", pushed"
		}
		return out
	case schema.LogPayload:
		if p.Level != "" {
			return "[" + p.Level + "] " + p.Message
		}
		return p.Message
	case schema.InfoPayload:
		if p.WaitingReason != "" {
			return waitingLine(p)
		}
		return p.Message
	case schema.AgentRetryPayload:
		status := "no answer"
		if p.Status != 0 {
			status = fmt.Sprint(p.Status)
		}
		return fmt.Sprintf("API %s (%s): retry %d of %d in %.1fs", status, p.Error, p.Attempt, p.MaxRetries, float64(p.DelayMS)/1000)
	case schema.PermissionDeniedPayload:
		return "denied " + strings.TrimSpace(p.Tool+" "+p.Summary)
	}
	return string(e.Payload)
}

func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// waitingLine tells a change of why a pending build waits:
// "waiting: project_busy, 2nd in the project's queue".
func waitingLine(p schema.InfoPayload) string {
	out := "waiting: " + string(p.WaitingReason)
	if p.QueuePosition > 0 {
		out += ", " + ordinal(p.QueuePosition) + " in the project's queue"
	}
	return out
}

// ordinal is 1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st, ...
func ordinal(n int) string {
	suffix := "th"
	switch n % 10 {
	case 1:
		suffix = "st"
	case 2:
		suffix = "nd"
	case 3:
		suffix = "rd"
	}
	if n%100 >= 11 && n%100 <= 13 {
		suffix = "th"
	}
	return fmt.Sprint(n) + suffix
}
