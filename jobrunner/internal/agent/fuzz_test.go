package agent

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary output to the Claude parser: it must never
// panic, and checkInvariants must hold (one Final, last; bounded summaries;
// every event maps to a schema event with a valid JSON payload).
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(fixtures, "*.jsonl"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		// Each line alone, too: smaller seeds mutate better.
		for _, line := range bytes.Split(b, []byte("\n")) {
			f.Add(line)
		}
	}
	for _, run := range cliRuns {
		f.Add([]byte(cliInit + "\n" + run))
		for _, line := range strings.Split(run, "\n") {
			f.Add([]byte(line))
		}
	}
	f.Add([]byte(`{"type":"system","subtype":"api_retry","attempt":"x","error_status":"401"}`))
	f.Add([]byte(`{"type":"system","subtype":"permission_denied","tool_name":"Bash","tool_use_id":"t"}` + "\n" +
		`{"type":"system","subtype":"vcs_state_changed","kind":"push"}`))
	f.Add([]byte(`{"type":"user","message":{"content":[{"type":"tool_result","content":[{"type":"text","text":"x"}],"is_error":true}]}}`))
	f.Add([]byte(`{"type":"result","subtype":"error_during_execution","is_error":true,"errors":["a",{"b":1}]}`))
	f.Add([]byte("{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"\xff\"}]}}\r\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var events []Event
		err := Stream(bytes.NewReader(data), Claude{}.NewParser(), func(e Event) error {
			events = append(events, e)
			return nil
		})
		if err != nil {
			t.Fatalf("Stream over a bytes.Reader: %v", err)
		}
		checkInvariants(t, events)
		for _, e := range events {
			p, err := SchemaPayload(e)
			if err != nil {
				t.Fatalf("SchemaPayload(%+v): %v", e, err)
			}
			if payload, err := json.Marshal(p); err != nil || !json.Valid(payload) {
				t.Fatalf("SchemaPayload(%+v): %s, %v", e, payload, err)
			}
		}
	})
}
