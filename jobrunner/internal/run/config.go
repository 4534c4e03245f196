package run

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/jobtemplates"
)

// Environment the runner reads besides jobtemplates' Env* variables.
const (
	// EnvTerminationLog overrides where the TerminationSummary is written.
	EnvTerminationLog = "KILN_TERMINATION_LOG"
	// EnvReportTimeout overrides how long the result post is retried (a Go duration).
	EnvReportTimeout = "KILN_REPORT_TIMEOUT"
)

// DefaultTerminationLog is the container's default terminationMessagePath.
const DefaultTerminationLog = "/dev/termination-log"

// Config is one run's configuration; zero durations take the defaults below.
type Config struct {
	DispatcherURL string
	BuildID       string
	Token         string
	Runner        jobtemplates.RunnerConfig

	// TerminationLog is where the TerminationSummary goes. Default DefaultTerminationLog.
	TerminationLog string
	// TaskTimeout bounds fetching the RunnerTask, retries included. Default 2m.
	TaskTimeout time.Duration
	// ReportTimeout bounds posting the result, retries included. Default 2m
	// (less after SIGTERM: what is left of the grace period).
	ReportTimeout time.Duration
	// EventFlushTimeout bounds posting the queued events at the end. Default 20s.
	EventFlushTimeout time.Duration
	// PodWait is how long to wait for a running project pod. Default 30s.
	PodWait time.Duration
	// KillWait is the time between SIGTERM to the agent and SIGKILL to every
	// process of its run. Default 5s (the CLI ends its tools within ~3.5s).
	KillWait time.Duration
	// PIDDir is the directory of the agent's pid file (and, for a moment, of
	// its prompt) in the project pod. Default /tmp.
	PIDDir string
	// GitTimeout bounds the git step. Default 5m.
	GitTimeout time.Duration
	// AgentBinary is the agent CLI to run in the project pod. Default: the
	// adapter's own ("claude", looked up on the pod's PATH).
	AgentBinary string
	// StatusPoll is how often the build's status is fetched while the agent
	// runs, to notice a cancel when no event acks come. Default 5s.
	StatusPoll time.Duration
	// GitCredentials is the directory of the project's repository
	// credential files (jobtemplates.EnvGitCredentials); empty for none.
	// They are read for the fetch and the push only.
	GitCredentials string
	// GitURL is the project's repository URL (jobtemplates.EnvGitURL): an
	// HTTPS token is offered to its host only.
	GitURL string
}

func (c Config) withDefaults() Config {
	c.TerminationLog = cmp.Or(c.TerminationLog, DefaultTerminationLog)
	c.TaskTimeout = cmp.Or(c.TaskTimeout, 2*time.Minute)
	c.ReportTimeout = cmp.Or(c.ReportTimeout, 2*time.Minute)
	c.EventFlushTimeout = cmp.Or(c.EventFlushTimeout, 20*time.Second)
	c.PodWait = cmp.Or(c.PodWait, 30*time.Second)
	c.KillWait = cmp.Or(c.KillWait, 5*time.Second)
	c.PIDDir = cmp.Or(c.PIDDir, "/tmp")
	c.GitTimeout = cmp.Or(c.GitTimeout, 5*time.Minute)
	c.StatusPoll = cmp.Or(c.StatusPoll, 5*time.Second)
	if c.Runner.GracePeriodSeconds <= 0 {
		c.Runner.GracePeriodSeconds = jobtemplates.DefaultTerminationGracePeriod
	}
	return c
}

// ConfigFromEnv reads the Job's environment. It returns what it could read
// together with an error naming every variable at fault.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		DispatcherURL:  getenv(jobtemplates.EnvDispatcherURL),
		BuildID:        getenv(jobtemplates.EnvBuildID),
		Token:          getenv(jobtemplates.EnvRunnerToken),
		TerminationLog: getenv(EnvTerminationLog),
		GitCredentials: getenv(jobtemplates.EnvGitCredentials),
		GitURL:         getenv(jobtemplates.EnvGitURL),
	}
	var problems []string
	for name, v := range map[string]string{
		jobtemplates.EnvDispatcherURL: c.DispatcherURL,
		jobtemplates.EnvBuildID:       c.BuildID,
		jobtemplates.EnvRunnerToken:   c.Token,
	} {
		if v == "" {
			problems = append(problems, name+": required")
		}
	}
	if raw := getenv(jobtemplates.EnvRunnerConfig); raw == "" {
		problems = append(problems, jobtemplates.EnvRunnerConfig+": required")
	} else if rc, err := jobtemplates.ParseRunnerConfig(raw); err != nil {
		problems = append(problems, err.Error())
	} else {
		c.Runner = rc
	}
	if v := getenv(EnvReportTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			problems = append(problems, fmt.Sprintf("%s: must be a positive duration (got %q)", EnvReportTimeout, v))
		}
		c.ReportTimeout = d
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return c.withDefaults(), fmt.Errorf("runner environment: %s", strings.Join(problems, "; "))
	}
	return c.withDefaults(), nil
}
