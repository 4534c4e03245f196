// Command standin-runner stands in for jobrunner in the launch tests: it
// speaks the runner protocol (schema/runner.go) and behaves as the build's
// prompt tells it, so tests can drive every way a build Job can end.
//
//	succeed      post an event batch (twice: a retry), then a successful result
//	fail         post a failed result
//	no-result    exit 0 without posting anything
//	summary      write a TerminationSummary and exit 1 without posting
//	crash        print to stderr and exit 3
//	oom          allocate memory until the limit kills it
//	sleep        wait for SIGTERM, leave a marker, then claim success (refused: the build ended)
//	sleep-N      sleep N seconds, then succeed
//	hang         ignore SIGTERM and never finish
//	stopped      wait for SIGTERM, then report that it stopped (cancelled: true)
//	hold F S     post an event batch, wait until file F exists or S seconds pass,
//	             post another batch, then a successful result (bench-scale holds
//	             N builds running, measures, then releases them at once)
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kilnbuild/kiln/schema"
)

var (
	base  = os.Getenv("KILN_DISPATCHER_URL") + schema.RunnerAPIPrefix + os.Getenv("KILN_BUILD_ID")
	token = os.Getenv("KILN_RUNNER_TOKEN")
)

// call makes one runner-protocol request, retrying network errors and 5xx
// answers for about 6 s as the real runner's client does (with less patience).
func call(method, path string, in, out any) error {
	var err error
	wait := 100 * time.Millisecond
	for range 10 {
		var retry bool
		if retry, err = try(method, path, in, out); !retry {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
	return err
}

func try(method, path string, in, out any) (retry bool, err error) {
	var body bytes.Buffer
	if in != nil {
		_ = json.NewEncoder(&body).Encode(in)
	}
	req, _ := http.NewRequest(method, base+path, &body)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return true, err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return res.StatusCode >= 500, fmt.Errorf("%s %s: status %d", method, path, res.StatusCode)
	}
	if out != nil {
		return false, json.NewDecoder(res.Body).Decode(out)
	}
	return false, nil
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "standin-runner:", err)
		os.Exit(10)
	}
}

func marker(name string) {
	exe, _ := os.Executable()
	dir := filepath.Join(filepath.Dir(exe), "markers")
	_ = os.MkdirAll(dir, 0o777)
	_ = os.WriteFile(filepath.Join(dir, os.Getenv("KILN_BUILD_ID")+"."+name), []byte(time.Now().Format(time.RFC3339Nano)), 0o666)
}

func event(text string) schema.EventInput {
	e, _ := schema.NewEventInput(time.Now(), schema.AgentTextPayload{Text: text})
	return e
}

func main() {
	var task schema.RunnerTask
	must(call("GET", "", nil, &task))
	marker("started")
	mode := strings.Fields(task.Spec.Prompt + " ")[0]
	switch {
	case mode == "succeed":
		batch := schema.EventBatch{Batch: 1, Events: []schema.EventInput{event("working"), event("done")}}
		must(call("POST", "/events", batch, nil))
		must(call("POST", "/events", batch, nil)) // a retried batch
		must(call("POST", "/result", schema.BuildResult{Success: true, Output: "all done", CommitSHA: "0123abcd",
			FilesChanged: []string{"index.html"}, DurationMS: 42, Artifacts: []schema.Artifact{}}, nil))
	case mode == "fail":
		must(call("POST", "/result", schema.BuildResult{Success: false, Error: "agent failed: boom"}, nil))
	case mode == "no-result":
	case mode == "summary":
		sum, _ := json.Marshal(schema.TerminationSummary{Kiln: 1, Success: true, CommitSHA: "feedface", DurationMS: 7})
		must(os.WriteFile("/dev/termination-log", sum, 0o644))
		os.Exit(1)
	case mode == "crash":
		fmt.Fprintln(os.Stderr, "crashed hard")
		os.Exit(3)
	case mode == "oom":
		var hog [][]byte
		for {
			b := make([]byte, 16<<20)
			for i := range b {
				b[i] = 1
			}
			hog = append(hog, b)
			if len(hog) > 256 {
				os.Exit(9) // 4 GiB and not killed: no limit was enforced
			}
		}
	case mode == "sleep":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		marker("sigterm")
		// One attempt: a runner being stopped has no time to wait for a
		// dispatcher that is down (TestRestartSafety relies on it).
		_, _ = try("POST", "/result", schema.BuildResult{Success: true, Output: "finished after all"}, nil)
	case mode == "hang":
		signal.Ignore(syscall.SIGTERM)
		select {}
	case mode == "stopped":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		marker("sigterm")
		_, _ = try("POST", "/result", schema.BuildResult{Cancelled: true, Error: "stopped by SIGTERM"}, nil)
	case mode == "hold":
		args := strings.Fields(task.Spec.Prompt)
		if len(args) != 3 {
			must(fmt.Errorf("hold wants a file and seconds, got %q", task.Spec.Prompt))
		}
		secs, err := strconv.Atoi(args[2])
		must(err)
		must(call("POST", "/events", schema.EventBatch{Batch: 1, Events: []schema.EventInput{event("holding")}}, nil))
		// Polled, not watched: a stat a second per runner is nothing beside
		// the runner protocol, and works on any filesystem.
		for end := time.Now().Add(time.Duration(secs) * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
			if _, err := os.Stat(args[1]); err == nil {
				break
			}
		}
		must(call("POST", "/events", schema.EventBatch{Batch: 2, Events: []schema.EventInput{event("released"), event("done")}}, nil))
		must(call("POST", "/result", schema.BuildResult{Success: true, Output: "held", DurationMS: 1, Artifacts: []schema.Artifact{}}, nil))
	case strings.HasPrefix(mode, "sleep-"):
		n, _ := strconv.Atoi(strings.TrimPrefix(mode, "sleep-"))
		time.Sleep(time.Duration(n) * time.Second)
		marker("finished")
		if err := call("POST", "/result", schema.BuildResult{Success: true, Output: mode}, nil); err != nil {
			// As the real runner does: the outcome goes to the termination message.
			sum, _ := json.Marshal(schema.TerminationSummary{Kiln: 1, Success: true, DurationMS: int64(n) * 1000, Error: ""})
			_ = os.WriteFile("/dev/termination-log", sum, 0o644)
			os.Exit(1)
		}
	default:
		must(call("POST", "/result", schema.BuildResult{Success: false, Error: "standin: unknown mode " + mode}, nil))
	}
}
