package run

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	rc, err := json.Marshal(jobtemplates.RunnerConfig{Template: "default", GracePeriodSeconds: 30, DeadlineSeconds: 600})
	require.NoError(t, err)
	env := map[string]string{
		jobtemplates.EnvDispatcherURL: "http://127.0.0.1:1", jobtemplates.EnvBuildID: "b1",
		jobtemplates.EnvRunnerToken: "tok", jobtemplates.EnvRunnerConfig: string(rc), EnvReportTimeout: "7s",
		jobtemplates.EnvGitCredentials: "/var/run/kiln/git", jobtemplates.EnvGitURL: "https://git.example/a.git",
	}
	c, err := ConfigFromEnv(func(k string) string { return env[k] })
	require.NoError(t, err)
	require.Equal(t, "b1", c.BuildID)
	require.Equal(t, "/var/run/kiln/git", c.GitCredentials)
	require.Equal(t, "https://git.example/a.git", c.GitURL)
	require.Equal(t, 7*time.Second, c.ReportTimeout)
	require.Equal(t, DefaultTerminationLog, c.TerminationLog)
	require.EqualValues(t, 30, c.Runner.GracePeriodSeconds)

	c, err = ConfigFromEnv(func(k string) string {
		if k == jobtemplates.EnvRunnerConfig {
			return `{"bogus":1}`
		}
		return ""
	})
	require.Error(t, err)
	for _, want := range []string{"KILN_BUILD_ID: required", "KILN_DISPATCHER_URL: required", "KILN_RUNNER_TOKEN: required", "unknown field"} {
		require.ErrorContains(t, err, want)
	}
	require.Equal(t, DefaultTerminationLog, c.TerminationLog, "the summary can still be written")
}

func TestSummaryBounded(t *testing.T) {
	t.Parallel()
	o := Outcome{Result: schema.BuildResult{Error: strings.Repeat("é", 10000), FilesChanged: make([]string, 5000)},
		ReportError: errFake(strings.Repeat("x", 10000))}
	b := EncodeSummary(o.Summary())
	require.LessOrEqual(t, len(b), MaxSummaryBytes)
	nasty := EncodeSummary(schema.TerminationSummary{Kiln: 1, Error: strings.Repeat("\x01<", 5000)})
	require.LessOrEqual(t, len(nasty), MaxSummaryBytes)
	require.True(t, json.Valid(nasty))
	var s schema.TerminationSummary
	require.NoError(t, json.Unmarshal(b, &s), string(b))
	require.Equal(t, 1, s.Kiln)
	require.Equal(t, 5000, s.FilesChanged)
	require.False(t, s.Reported)
	require.Contains(t, s.Error, "result not reported")
}

type errFake string

func (e errFake) Error() string { return string(e) }

func TestArtifactScriptsLocally(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, size := range map[string]int{"index.html": 10, "dist/a b.txt": 5, "dist/big.txt": 2000, "dist/sub/x.txt": 1, ".git/config": 3} {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(strings.Repeat("z", size)), 0o644))
	}
	list, err := exec.Command("sh", "-c", listScript(dir)).Output()
	require.NoError(t, err)
	files := MatchArtifacts(list, []string{"dist/*.txt", "*.html", ".git/*"})
	slices.Sort(files)
	require.Equal(t, []string{"dist/a b.txt", "dist/big.txt", "index.html"}, files)
	out, err := exec.Command("sh", append([]string{"-c", sumScript(dir, 1000), "sh"}, files...)...).Output()
	require.NoError(t, err)
	require.Equal(t, "5 "+sha("zzzzz")+"\n2000 -\n10 "+sha(strings.Repeat("z", 10))+"\n", string(out))
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
