package run

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/kilnbuild/kiln/jobrunner/internal/agent"
	"github.com/kilnbuild/kiln/jobrunner/internal/client"
	"github.com/kilnbuild/kiln/jobrunner/internal/podexec"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// maxArtifacts caps how many files the globs may select.
const maxArtifacts = 100

// listScript prints the workdir's files (relative, NUL-terminated), .git
// excluded, bounded so a huge tree cannot flood the runner.
func listScript(workdir string) string {
	return fmt.Sprintf(`cd %s || exit 126; find . -path ./.git -prune -o -type f -print0 | head -c 8388608`, agent.ShellQuote(workdir))
}

// sumScript prints "SIZE SHA256" (or "SIZE -" above max bytes) for each
// file argument, one line each, in order.
func sumScript(workdir string, max int64) string {
	return fmt.Sprintf(`cd %s || exit 126; for f; do s=$(wc -c < "$f") || { echo "- -"; continue; }; `+
		`if [ "$s" -gt %d ]; then echo "$s -"; else h=$(sha256sum < "$f") && echo "$s ${h%%%% *}" || echo "$s -"; fi; done`,
		agent.ShellQuote(workdir), max)
}

// MatchArtifacts returns the files (relative paths, as `find .` prints
// them) that match any glob, in the order listed, at most maxArtifacts.
func MatchArtifacts(listing []byte, globs []string) []string {
	var out []string
	for _, f := range bytes.Split(listing, []byte{0}) {
		p := strings.TrimPrefix(string(f), "./")
		if p == "" || p == "." {
			continue
		}
		for _, g := range globs {
			if ok, _ := path.Match(g, p); ok {
				out = append(out, p)
				break
			}
		}
		if len(out) == maxArtifacts {
			break
		}
	}
	return out
}

// artifacts lists the files the template's globs select, with their size
// and SHA-256, skipping those over the size limit.
func (r *Runner) artifacts(ctx context.Context, ctr podexec.Container, workdir string, a jobtemplates.Artifacts) ([]schema.Artifact, []string, error) {
	if len(a.Globs) == 0 {
		return nil, nil, nil
	}
	max := a.MaxBytes
	if max <= 0 {
		max = jobtemplates.DefaultMaxArtifactBytes
	}
	var list, errOut bytes.Buffer
	code, err := r.exec.Exec(ctx, ctr, podexec.Request{Argv: []string{"sh", "-c", listScript(workdir)}, Stdout: &list, Stderr: &errOut})
	if err != nil || code != 0 {
		return nil, nil, fmt.Errorf("listing files: exit %d: %v %s", code, err, strings.TrimSpace(errOut.String()))
	}
	files := MatchArtifacts(list.Bytes(), a.Globs)
	if len(files) == 0 {
		return nil, nil, nil
	}
	var sums bytes.Buffer
	errOut.Reset()
	argv := append([]string{"sh", "-c", sumScript(workdir, max), "sh"}, files...)
	code, err = r.exec.Exec(ctx, ctr, podexec.Request{Argv: argv, Stdout: &sums, Stderr: &errOut})
	if err != nil || code != 0 {
		return nil, nil, fmt.Errorf("summing artifacts: exit %d: %v %s", code, err, strings.TrimSpace(errOut.String()))
	}
	lines := strings.Split(strings.TrimRight(sums.String(), "\n"), "\n")
	if len(lines) != len(files) {
		return nil, nil, fmt.Errorf("summing artifacts: %d lines for %d files", len(lines), len(files))
	}
	var out []schema.Artifact
	var skipped []string
	for i, l := range lines {
		size, sum, _ := strings.Cut(l, " ")
		n, err := strconv.ParseInt(size, 10, 64)
		if err != nil || sum == "-" || len(sum) != 64 {
			skipped = append(skipped, fmt.Sprintf("%s (%s bytes, limit %d)", files[i], size, max))
			continue
		}
		out = append(out, schema.Artifact{Name: path.Base(files[i]), Path: files[i], Size: n, SHA256: sum})
	}
	return out, skipped, nil
}

// uploadArtifacts reads each artifact from the pod, checks it is the file
// that was summed, and uploads it; the dispatcher's answer gives its URL. A
// file that cannot be uploaded stays listed without a URL, and an event says
// why. An answer that refuses every later upload too (the build ended, or
// reached its artifact cap, or its token no longer works) ends the uploads:
// the rest stay listed without URLs, and one event says so.
func (r *Runner) uploadArtifacts(ctx context.Context, ctr podexec.Container, workdir string, arts []schema.Artifact) []schema.Artifact {
	for i, a := range arts {
		var content, errOut bytes.Buffer
		code, err := r.exec.Exec(ctx, ctr, podexec.Request{Argv: []string{"cat", "--", path.Join(workdir, a.Path)}, Stdout: &content, Stderr: &errOut})
		if err == nil && code != 0 {
			err = fmt.Errorf("cat: exit %d: %s", code, strings.TrimSpace(errOut.String()))
		}
		if err == nil {
			sum := sha256.Sum256(content.Bytes())
			if got := hex.EncodeToString(sum[:]); got != a.SHA256 || int64(content.Len()) != a.Size {
				err = fmt.Errorf("changed since it was summed (%d bytes, sha256 %s)", content.Len(), got)
			}
		}
		var up schema.Artifact
		if err == nil {
			up, err = r.disp.PutArtifact(ctx, schema.ArtifactUpload{Path: a.Path, SHA256: a.SHA256, Size: a.Size, Content: content.Bytes()})
		}
		if finalForArtifacts(err) {
			var rest []string
			for _, b := range arts[i:] {
				rest = append(rest, b.Path)
			}
			msg, _ := agent.Truncate(fmt.Sprintf("artifacts not uploaded: %v; skipped %s", err, strings.Join(rest, ", ")), agent.MaxSummaryBytes)
			r.event(schema.LogPayload{Level: schema.LogWarn, Message: msg})
			return arts
		}
		if err != nil {
			r.event(schema.LogPayload{Level: schema.LogWarn, Message: "artifact " + a.Path + " not uploaded: " + err.Error()})
			continue
		}
		arts[i].URL = up.URL
	}
	return arts
}

// finalForArtifacts reports whether err refuses every later upload as well.
func finalForArtifacts(err error) bool {
	var he *client.HTTPError
	return errors.Is(err, client.ErrBuildTerminal) || errors.Is(err, client.ErrCapReached) ||
		(errors.As(err, &he) && (he.StatusCode == http.StatusUnauthorized || he.StatusCode == http.StatusForbidden))
}
