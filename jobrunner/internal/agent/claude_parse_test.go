package agent

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
)

// fixtures holds the transcripts the parser is tested on (see its README).
const fixtures = "testdata/claude-code"

// parseAll runs a Claude parser over data and returns every event.
func parseAll(t testing.TB, data []byte) []Event {
	t.Helper()
	var events []Event
	err := Stream(bytes.NewReader(data), Claude{}.NewParser(), func(e Event) error {
		events = append(events, e)
		return nil
	})
	require.NoError(t, err)
	return events
}

// TestClaudeRecordedFixtures: whatever transcripts testdata/claude-code
// holds, parsing them keeps the parser's invariants.
func TestClaudeRecordedFixtures(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join(fixtures, "*.jsonl"))
	require.NoError(t, err)
	for _, name := range files {
		t.Run(filepath.Base(name), func(t *testing.T) {
			t.Parallel()
			b, err := os.ReadFile(name)
			require.NoError(t, err)
			checkInvariants(t, parseAll(t, b))
		})
	}
}

func TestClaudeStreamWithoutResult(t *testing.T) {
	t.Parallel()
	full := cliRun("success")
	lines := bytes.SplitAfter(full, []byte("\n"))
	lastLine := lines[len(lines)-2] // the result line; the last element is empty
	require.Contains(t, string(lastLine), `"type":"result"`)
	withoutResult := bytes.Join(lines[:len(lines)-2], nil)

	tests := map[string][]byte{
		"killed before the result":  withoutResult,
		"cut inside the result":     append(bytes.Clone(withoutResult), lastLine[:len(lastLine)/2]...),
		"cut inside an early line":  full[:len(lines[0])+40],
		"empty":                     nil,
		"only blank lines":          []byte("\n\r\n  \n"),
		"result not at end, no EOL": append(bytes.Clone(withoutResult), []byte(`{"type":"result","subtype":"success"`)...),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			events := parseAll(t, data)
			checkInvariants(t, events)
			last := events[len(events)-1]
			require.Equal(t, NoResultMessage, last.Final.Error)
			require.Equal(t, schema.ReasonAgentError, last.Final.Reason)
			o := Summarize(events)
			require.False(t, o.Success)
			require.Equal(t, "agent stream ended without a result", o.Error)
			require.Equal(t, schema.ReasonAgentError, o.Reason)
		})
	}
}

func TestClaudeStreamReadError(t *testing.T) {
	t.Parallel()
	half := cliRun("success")[:4000]
	boom := errors.New("connection reset")
	var events []Event
	err := Stream(iotest.TimeoutReader(iotest.HalfReader(bytes.NewReader(half))), Claude{}.NewParser(),
		func(e Event) error { events = append(events, e); return nil })
	require.ErrorIs(t, err, iotest.ErrTimeout)
	checkInvariants(t, events)
	require.Equal(t, NoResultMessage, events[len(events)-1].Final.Error)

	err = Stream(iotest.ErrReader(boom), Claude{}.NewParser(), func(Event) error { return nil })
	require.ErrorIs(t, err, boom)
}

func TestStreamStopsOnEmitError(t *testing.T) {
	t.Parallel()
	stop := errors.New("stop")
	n := 0
	err := Stream(bytes.NewReader(cliRun("success")), Claude{}.NewParser(), func(Event) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 2, n)
}

func TestClaudeHugeLines(t *testing.T) {
	t.Parallel()
	const size = 5 << 20
	big := strings.Repeat("é", size/2) // 5 MiB of two-byte runes: cuts must respect UTF-8
	toolLine := `{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t1","type":"tool_result","content":"` + big + `"}]}}`
	textLine := `{"type":"assistant","message":{"content":[{"type":"text","text":"` + big + `"}]}}`
	resultLine := `{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"` + big + `"}`
	data := []byte(toolLine + "\n" + textLine + "\n" + resultLine + "\n")

	events := parseAll(t, data)
	checkInvariants(t, events)
	require.Len(t, events, 4) // tool result, text, usage, final

	tr := events[0].ToolResult
	require.NotNil(t, tr)
	require.True(t, tr.Truncated)
	require.Equal(t, size, tr.Size)
	require.LessOrEqual(t, len(tr.Summary), MaxSummaryBytes)
	require.True(t, utf8.ValidString(tr.Summary))
	require.Contains(t, tr.Summary, "bytes shown]")

	require.Equal(t, big, events[1].Text, "text events carry the whole text")
	require.Equal(t, big, events[3].Final.Result)

	o := Summarize(events)
	require.True(t, o.Success)
	require.True(t, o.OutputTruncated)
	require.LessOrEqual(t, len(o.Output), MaxOutputBytes)
	require.Greater(t, len(o.Output), MaxOutputBytes-100)
	require.True(t, utf8.ValidString(o.Output))
	require.True(t, strings.HasPrefix(big, strings.SplitN(o.Output, "\n[...", 2)[0]))
}

func TestClaudeUnknownAndGarbageLines(t *testing.T) {
	t.Parallel()
	input := strings.Join([]string{
		`{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}`,
		`{"type":"stream_event","event":{"type":"content_block_delta"}}`,
		`{"type":"system","subtype":"compact_boundary"}`,
		`{"type":"future_thing","result":42,"message":[1,2,3]}`,
		`not json at all`,
		`[1,2,3]`,
		`{"type":5}`,
		`{}`,
		`{"type":"assistant"}`,
		`{"type":"assistant","message":{"content":"a plain string"}}`,
		`{"type":"user","message":{"content":"the prompt, echoed"}}`,
		`{"type":"assistant","message":{"content":[{"type":"thinking","thinking":"hmm"},{"type":"text","text":"still here"},42]}}`,
		`{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t9","content":[{"type":"text","text":"a"},{"type":"image"},{"type":"text","text":"b"}]}]}}`,
		`{"type":"result","num_turns":"three"}`,
		"\x00\xff\xfe{",
		`{"type":"result","subtype":"error_during_execution","is_error":true,"num_turns":4,"errors":["tool crashed\nstack..."]}`,
	}, "\n")
	events := parseAll(t, []byte(input))
	checkInvariants(t, events)

	var kinds []Kind
	for _, e := range events {
		kinds = append(kinds, e.Kind)
	}
	want := []Kind{
		KindWarning,    // not json
		KindWarning,    // array
		KindWarning,    // type 5
		KindWarning,    // no type
		KindWarning,    // assistant without message
		KindText,       // still here
		KindWarning,    // block 42
		KindToolResult, // a, [image], b
		KindWarning,    // result with a bad num_turns
		KindWarning,    // binary garbage
		KindUsage,
		KindFinal,
	}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Fatalf("kinds (-want +got):\n%s", diff)
	}
	require.Equal(t, "still here", events[5].Text)
	require.Equal(t, "a\n[image]\nb", events[7].ToolResult.Summary)
	require.Contains(t, events[0].Text, "agent output line 5: not a JSON object")
	require.True(t, utf8.ValidString(events[9].Text))
	f := events[len(events)-1].Final
	require.False(t, f.Success)
	require.Equal(t, "agent failed (error_during_execution): tool crashed", f.Error)
}

func TestClaudeLastResultWins(t *testing.T) {
	t.Parallel()
	events := parseAll(t, []byte(`{"type":"result","subtype":"error_during_execution","is_error":true}
{"type":"result","subtype":"success","is_error":false,"result":"done"}
`))
	checkInvariants(t, events)
	require.True(t, events[len(events)-1].Final.Success)
}

func TestParserEndTwice(t *testing.T) {
	t.Parallel()
	p := Claude{}.NewParser()
	require.Len(t, p.End(), 1)
	require.Empty(t, p.End())
}

// checkInvariants asserts what must hold for any input.
func checkInvariants(t testing.TB, events []Event) {
	t.Helper()
	if len(events) == 0 {
		t.Fatal("no events: a stream always ends with a Final event")
	}
	for i, e := range events {
		isLast := i == len(events)-1
		if (e.Kind == KindFinal) != isLast {
			t.Fatalf("event %d of %d has kind %s: exactly one final event, last", i, len(events), e.Kind)
		}
		switch e.Kind {
		case KindFinal:
			f := e.Final
			if f == nil {
				t.Fatal("final event without Final")
			}
			if f.Success == (f.Error != "") {
				t.Fatalf("final: success=%v with error %q", f.Success, f.Error)
			}
			if f.Success == (f.Reason != schema.ReasonNone) || !slices.Contains(schema.FailureReasons, f.Reason) && !f.Success {
				t.Fatalf("final: success=%v with reason %q", f.Success, f.Reason)
			}
			if f.Success && (f.IsError || f.Subtype != "success") {
				t.Fatalf("final: success with is_error=%v subtype=%q", f.IsError, f.Subtype)
			}
			if len(f.Error) > MaxSummaryBytes {
				t.Fatalf("final error is %d bytes", len(f.Error))
			}
		case KindToolResult:
			if len(e.ToolResult.Summary) > MaxSummaryBytes {
				t.Fatalf("tool result summary is %d bytes", len(e.ToolResult.Summary))
			}
			if e.ToolResult.Truncated != (e.ToolResult.Size > MaxSummaryBytes) {
				t.Fatalf("tool result truncated=%v with size %d", e.ToolResult.Truncated, e.ToolResult.Size)
			}
		case KindToolCall:
			if len(e.ToolCall.Input) > MaxSummaryBytes {
				t.Fatalf("tool call input is %d bytes", len(e.ToolCall.Input))
			}
		case KindDenial:
			if len(e.Denial.Summary()) > MaxDenialSummaryBytes || !utf8.ValidString(e.Denial.Summary()) {
				t.Fatalf("denial summary %q", e.Denial.Summary())
			}
		case KindWarning:
			if len(e.Text) > maxWarningBytes || !utf8.ValidString(e.Text) {
				t.Fatalf("warning is %d bytes, valid UTF-8 %v", len(e.Text), utf8.ValidString(e.Text))
			}
		}
		typ, payload := schemaEvent(t, e)
		if typ == "" || len(payload) == 0 {
			t.Fatalf("SchemaPayload(%s) = %q, %q", e.Kind, typ, payload)
		}
		if e.Kind != KindText && len(payload) > 8<<10 {
			t.Fatalf("%s payload is %d bytes", typ, len(payload))
		}
	}
	o := Summarize(events)
	if len(o.Output) > MaxOutputBytes {
		t.Fatalf("outcome output is %d bytes", len(o.Output))
	}
	if o.Success == (o.Error != "") {
		t.Fatalf("outcome: success=%v with error %q", o.Success, o.Error)
	}
	if !o.Success && !slices.Contains(schema.FailureReasons, o.Reason) || o.Success && o.Reason != schema.ReasonNone {
		t.Fatalf("outcome: success=%v with reason %q", o.Success, o.Reason)
	}
	if o.Success && o.AgentPushed {
		t.Fatal("outcome: success although the agent pushed")
	}
}

func TestBudgetStopped(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		errs  []string
		spent float64
		turns int
		want  string
	}{
		{[]string{"Reached maximum budget ($0.05)"}, 0.0712, 3, "the agent was stopped by the build's budget of $0.05 after spending $0.0712 in 3 turns"},
		{[]string{"Reached maximum budget ($2)"}, 2.5, 1, "the agent was stopped by the build's budget of $2.00 after spending $2.50 in 1 turn"},
		{nil, 0.12, 2, "the agent was stopped by its budget after spending $0.12 in 2 turns"},
		{[]string{"something else"}, 0, 0, "the agent was stopped by its budget after spending $0.00 in 0 turns"},
	} {
		require.Equal(t, tt.want, budgetStopped(tt.errs, tt.spent, tt.turns))
	}
}
