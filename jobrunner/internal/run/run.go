package run

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kilnbuild/kiln/jobrunner/internal/agent"
	"github.com/kilnbuild/kiln/jobrunner/internal/events"
	"github.com/kilnbuild/kiln/jobrunner/internal/gitstep"
	"github.com/kilnbuild/kiln/jobrunner/internal/podexec"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// Dispatcher is the runner protocol's client side; *client.Client implements it.
type Dispatcher interface {
	Task(ctx context.Context) (schema.RunnerTask, error)
	PostEvents(ctx context.Context, b schema.EventBatch) (schema.EventBatchAck, error)
	PostResult(ctx context.Context, r schema.BuildResult) (schema.ResultAck, error)
	PutArtifact(ctx context.Context, up schema.ArtifactUpload) (schema.Artifact, error)
}

// Why a run stopped early, as context causes.
var (
	errSignalled        = errors.New("the runner was asked to stop (SIGTERM: the Job was deleted)")
	errDispatcherCancel = errors.New("the dispatcher reports the build as terminal")
	errAgentTimeout     = errors.New("agent timed out")
	// errAPIRefused is not a cancel: the build fails with the agent's outcome.
	errAPIRefused = errors.New("the API refused the agent's request")
)

// Outcome is what a run did and whether the dispatcher heard about it.
type Outcome struct {
	Result   schema.BuildResult
	Reported bool
	// Ack is the dispatcher's answer to the result, when Reported.
	Ack schema.ResultAck
	// ReportError explains why the result could not be reported.
	ReportError error
}

// Summary is the outcome's termination message.
func (o Outcome) Summary() schema.TerminationSummary {
	msg, _ := agent.Truncate(o.Result.Error, 1<<10)
	if !o.Reported && o.ReportError != nil {
		rep, _ := agent.Truncate("result not reported: "+o.ReportError.Error(), 1<<10)
		msg = strings.TrimPrefix(msg+"; "+rep, "; ")
	}
	return schema.TerminationSummary{
		Kiln:         1,
		Success:      o.Result.Success,
		Cancelled:    o.Result.Cancelled,
		Error:        msg,
		Reason:       o.Result.Reason,
		CommitSHA:    o.Result.CommitSHA,
		FilesChanged: len(o.Result.FilesChanged),
		DurationMS:   o.Result.DurationMS,
		Reported:     o.Reported,
	}
}

// Runner runs one build.
type Runner struct {
	cfg  Config
	disp Dispatcher
	kube kubernetes.Interface
	exec podexec.Execer
	log  *slog.Logger
	now  func() time.Time

	batcher *events.Batcher

	mu     sync.Mutex
	termAt time.Time // when the stop signal came
}

// New returns a Runner. kube finds the project pod; exec runs commands in it.
func New(cfg Config, disp Dispatcher, kube kubernetes.Interface, exec podexec.Execer, log *slog.Logger) *Runner {
	return &Runner{cfg: cfg.withDefaults(), disp: disp, kube: kube, exec: exec,
		log: cmp.Or(log, slog.Default()).With("component", "runner", "build", cfg.BuildID), now: time.Now}
}

// Run runs the build and reports its result. ctx ending means SIGTERM: the
// agent is stopped, what it changed is kept on the build's kept-work branch
// (keepWork, bounded by the grace period) and a cancelled result is
// reported within the grace period.
func (r *Runner) Run(ctx context.Context) Outcome {
	start := r.now()
	stop := context.AfterFunc(ctx, r.markStopped)
	defer stop()

	r.batcher = events.Start(ctx, r.disp, events.Options{Logger: r.log})
	res := r.build(ctx, start)
	res.DurationMS = r.now().Sub(start).Milliseconds()
	if res.FilesChanged == nil {
		res.FilesChanged = []string{}
	}
	if res.Artifacts == nil {
		res.Artifacts = []schema.Artifact{}
	}
	r.event(logLine(res))

	// After a stop signal everything must fit in the grace period: events
	// get what the result post does not need.
	if ctx.Err() != nil {
		r.markStopped() // the AfterFunc may not have run yet
	}
	// A signal arriving during the flush ends it: the result comes first.
	flushCtx, cancel := context.WithTimeout(ctx, r.cfg.EventFlushTimeout)
	if dl, ok := r.graceDeadline(); ok {
		cancel()
		flushCtx, cancel = context.WithDeadline(context.WithoutCancel(ctx), dl.Add(-r.graceForReport()))
	}
	if err := r.batcher.Close(flushCtx); err != nil {
		r.log.Warn("events left unposted", "err", err)
	}
	cancel()

	reportDL := r.now().Add(r.cfg.ReportTimeout)
	if dl, ok := r.graceDeadline(); ok {
		reportDL = dl
	}
	reportCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), reportDL)
	defer cancel()
	if _, signalled := r.graceDeadline(); !signalled {
		// A signal during the post shortens it to the grace period, so the
		// termination message is still written before SIGKILL.
		unwatch := context.AfterFunc(ctx, func() {
			r.markStopped()
			if dl, ok := r.graceDeadline(); ok {
				time.AfterFunc(time.Until(dl), cancel)
			}
		})
		defer unwatch()
	}
	ack, err := r.disp.PostResult(reportCtx, res)
	out := Outcome{Result: res, Reported: err == nil, Ack: ack, ReportError: err}
	if err != nil {
		r.log.Error("could not report the result", "err", err)
	} else {
		r.log.Info("result reported", "success", res.Success, "cancelled", res.Cancelled,
			"accepted", ack.Accepted, "status", ack.Status)
	}
	return out
}

// markStopped records when the stop signal came (once).
func (r *Runner) markStopped() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.termAt.IsZero() {
		r.termAt = r.now()
		r.log.Info("stop signal received")
	}
}

// graceDeadline is when the runner must be done after a stop signal: the
// grace period less a margin for writing the termination message.
func (r *Runner) graceDeadline() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.termAt.IsZero() {
		return time.Time{}, false
	}
	grace := time.Duration(r.cfg.Runner.GracePeriodSeconds) * time.Second
	return r.termAt.Add(grace - min(2*time.Second, grace/5)), true
}

// graceForReport is the part of the grace period kept for the result post.
func (r *Runner) graceForReport() time.Duration {
	grace := time.Duration(r.cfg.Runner.GracePeriodSeconds) * time.Second
	return max(grace/3, time.Second)
}

// build does everything up to the result. ctx is cancelled by SIGTERM.
func (r *Runner) build(ctx context.Context, start time.Time) schema.BuildResult {
	failed := func(reason schema.Reason, format string, args ...any) schema.BuildResult {
		msg := fmt.Sprintf(format, args...)
		r.log.Error("build failed", "reason", reason, "err", msg)
		return schema.BuildResult{Success: false, Reason: reason, Error: msg}
	}
	taskCtx, cancel := context.WithTimeout(ctx, r.cfg.TaskTimeout)
	task, err := r.disp.Task(taskCtx)
	cancel()
	switch {
	case ctx.Err() != nil:
		return cancelled(errSignalled, agent.Outcome{})
	case err != nil:
		return failed(schema.ReasonRunnerError, "fetching the build from the dispatcher: %v", err)
	case task.Status.Terminal():
		return schema.BuildResult{Cancelled: true, Error: fmt.Sprintf("build is already %s; nothing run", task.Status)}
	}
	t := task.Target
	r.log.Info("build fetched", "status", task.Status, "namespace", t.Namespace)
	r.event(schema.LogPayload{Level: schema.LogInfo, Message: fmt.Sprintf(
		"runner started: template %s, project pod %s in %s, workdir %s", r.cfg.Runner.Template,
		cmp.Or(t.PodName, "selected by "+t.PodSelector), t.Namespace, t.Workdir)})

	buildID := cmp.Or(task.BuildID, r.cfg.BuildID)
	var adapter agent.Adapter // nil: the template runs no agent (skipAgent)
	switch a := r.cfg.Runner.Agent.Adapter; a {
	case "", jobtemplates.AdapterClaudeCode:
		adapter = agent.Claude{Binary: r.cfg.AgentBinary}
	case jobtemplates.AdapterNone:
	default:
		return failed(schema.ReasonRunnerError, "agent adapter %q: not implemented by this runner", a)
	}
	var cmd agent.Command
	if adapter != nil {
		// Checked before the pod is looked for; a follow-up's is built again below.
		if cmd, err = r.agentCommand(adapter, task, buildID, followupPlan{}); err != nil {
			return failed(schema.ReasonRunnerError, "%v", err)
		}
	}
	if t.Workdir == "" {
		return failed(schema.ReasonWorkspace, "target: workdir: required")
	}
	ctr, err := podexec.FindPod(ctx, r.kube, podexec.Target{
		Namespace: t.Namespace, PodName: t.PodName, PodSelector: t.PodSelector, Container: t.Container,
	}, r.cfg.PodWait)
	if ctx.Err() != nil {
		return cancelled(errSignalled, agent.Outcome{})
	}
	if err != nil {
		return failed(schema.ReasonWorkspace, "finding the project pod: %v", err)
	}
	if f := task.Followup; f != nil && adapter != nil {
		// Before the workspace is touched: a follow-up that cannot run changes nothing.
		plan, err := r.planFollowup(ctx, ctr, f)
		var su *sessionUnavailable
		switch {
		case ctx.Err() != nil:
			return cancelled(errSignalled, agent.Outcome{})
		case errors.As(err, &su):
			return failed(schema.ReasonSessionUnavailable, "%s", su.msg)
		case err != nil:
			return failed(schema.ReasonWorkspace, "%v", err)
		}
		if cmd, err = r.agentCommand(adapter, task, buildID, plan); err != nil {
			return failed(schema.ReasonRunnerError, "%v", err)
		}
	}
	pod := podexec.Runner{Exec: r.exec, Container: ctr}
	// Read here, used by the fetch and the push only: the agent never sees them.
	creds, err := loadCredentials(r.cfg.GitCredentials, r.cfg.GitURL)
	if err != nil {
		return failed(schema.ReasonWorkspace, "%v", err)
	}
	reviewBranch, err := r.checkReviewBranch(ctx, pod, task.Spec, buildID, t)
	if err != nil {
		return failed(schema.ReasonGit, "%v", err)
	}
	if err := r.prepareWorkspace(ctx, pod, buildID, t, creds); err != nil {
		if ctx.Err() != nil {
			return cancelled(errSignalled, agent.Outcome{})
		}
		return failed(schema.ReasonWorkspace, "preparing the workspace: %v", err)
	}
	if err := r.applyKeptWork(ctx, pod, task.Followup, t, creds); err != nil {
		if ctx.Err() != nil {
			return cancelled(errSignalled, agent.Outcome{})
		}
		return failed(schema.ReasonWorkspace, "%v", err)
	}
	keep := keepInput{buildID: buildID, target: t, spec: task.Spec, creds: creds}
	var run agentRun
	if adapter == nil {
		run = r.skipAgent()
	} else {
		r.log.Info("running the agent", "pod", ctr.String(), "adapter", adapter.Name())
		run = r.runAgent(ctx, start, ctr, t.Workdir, adapter, cmd)
	}
	if run.stopped != nil {
		res := schema.BuildResult{}
		run.outcome.Apply(&res)
		switch {
		case errors.Is(run.stopped, errAgentTimeout):
			res.Success, res.Error, res.Reason = false, run.stopped.Error(), schema.ReasonDeadline
		case errors.Is(run.stopped, errAPIRefused):
			// The outcome says why (the recorder reads the last api_retry when no result came).
			res.Success, res.Reason = false, cmp.Or(res.Reason, schema.ReasonAgentError)
			if res.Error == "" || res.Error == agent.NoResultMessage {
				res.Error = run.stopped.Error()
			} else {
				res.Error = joinMsg(res.Error, "the agent was stopped at the CLI's first retry: no retry can mend it")
			}
		default:
			res = cancelled(run.stopped, run.outcome)
			if run.outcome.AgentPushed {
				res.Error = joinMsg(res.Error, "the agent had pushed to a remote itself")
			}
		}
		if shouldKeep(res, run.outcome.AgentPushed) {
			r.keepWork(ctx, pod, keep, &res)
		}
		return res
	}
	var res schema.BuildResult
	run.outcome.Apply(&res)
	if adapter == nil {
		res.Usage = nil // no agent reported any
	}
	switch {
	case run.err != nil:
		// The exec itself broke (pod gone, API unreachable): git would fail the same way.
		res.Success, res.Reason = false, schema.ReasonWorkspace
		res.Error = joinMsg(res.Error, fmt.Sprintf("running the agent: %v", run.err))
		if shouldKeep(res, run.outcome.AgentPushed) {
			r.keepWork(ctx, pod, keep, &res)
		}
		return res
	case run.exitCode == 1 && !res.Success && run.outcome.Subtype != "" && strings.TrimSpace(run.stderr) == "":
		// The CLI's exit for a failure its result line already tells (max turns, budget, API error).
	case run.exitCode != 0:
		msg := fmt.Sprintf("agent exited with code %d", run.exitCode)
		if s := strings.TrimSpace(run.stderr); s != "" {
			msg += ": " + lastLines(s, 5)
		}
		if res.Success {
			res.Error, res.Reason = msg, schema.ReasonAgentError
		} else {
			res.Error = joinMsg(res.Error, msg)
		}
		res.Success = false
	}
	if run.outcome.AgentPushed {
		// Whatever else the run did: only the git step may push.
		const msg = "the runner commits and pushes nothing of a build whose agent pushed itself"
		res.Success, res.Reason = false, schema.ReasonAgentPushed
		res.Error = joinMsg(cmp.Or(res.Error, "the agent pushed to a remote itself"), msg)
		r.event(schema.LogPayload{Level: schema.LogError, Message: msg})
	}
	if s := run.notes(); s != "" {
		r.event(schema.LogPayload{Level: schema.LogWarn, Message: s})
	}

	// The git step. A failed agent's changes are listed, then kept on the
	// build's kept-work branch; an agent that pushed gets nothing committed.
	gitCtx, cancel := context.WithTimeout(ctx, r.cfg.GitTimeout)
	defer cancel()
	opts := gitstep.Options{
		Dir: t.Workdir, BuildID: buildID, AutoCommit: task.Spec.AutoCommit && res.Success,
		AutoPush: task.Spec.AutoPush && res.Success, AuthorName: t.AuthorName, AuthorEmail: t.AuthorEmail,
		Remote: t.GitRemote, Branch: t.GitBranch, ReviewBranch: reviewBranch, Body: commitBody(task.Spec.Prompt),
		Credentials: creds,
	}
	g, gerr := gitstep.Step{}.Run(gitCtx, pod, opts)
	r.log.Info("git step done", "files_changed", len(g.FilesChanged), "committed", g.CommitSHA != "", "pushed", g.Pushed, "err", gerr)
	res.FilesChanged, res.CommitSHA, res.Branch = g.FilesChanged, g.CommitSHA, g.Branch
	if gerr == nil && len(g.FilesChanged) > 0 && shouldKeep(res, run.outcome.AgentPushed) {
		// A failed build's changes go to its kept-work branch (one git event says so).
		r.keepWork(ctx, pod, keep, &res)
		return res
	}
	r.event(schema.GitPayload{FilesChanged: g.FilesChanged, CommitSHA: g.CommitSHA, Pushed: g.Pushed,
		Committed: g.CommitSHA != "", Branch: g.Branch, Error: errString(gerr)})
	if gerr == nil && res.Success {
		arts, skipped, err := r.artifacts(gitCtx, ctr, t.Workdir, r.cfg.Runner.Artifacts)
		if err != nil {
			// Artifacts are a by-product: the build stands, the problem is told.
			r.event(schema.LogPayload{Level: schema.LogWarn, Message: "artifacts: " + err.Error()})
		}
		for _, s := range skipped {
			r.event(schema.LogPayload{Level: schema.LogWarn, Message: "artifact skipped: " + s})
		}
		res.Artifacts = r.uploadArtifacts(gitCtx, ctr, t.Workdir, arts)
	}
	if gerr != nil {
		if ctx.Err() != nil {
			return cancelled(errSignalled, run.outcome)
		}
		res.Success = false
		var pe *gitstep.PushError
		if errors.As(gerr, &pe) {
			res.Error, res.Reason = joinMsg(res.Error, pe.Error()), schema.ReasonPushRejected
		} else {
			res.Error, res.Reason = joinMsg(res.Error, "git step: "+gerr.Error()), schema.ReasonGit
		}
	}
	return res
}

// AgentSkipped is the output of a build whose template's agent.adapter is
// none: no agent ran, so there is no agent text to report, only this note.
const AgentSkipped = "agent skipped: the template's agent.adapter is none, so no agent ran; " +
	"the runner prepared the workspace and ran the git step only"

// skipAgent stands in for the agent's run when the template's adapter is
// none (jobtemplates.AdapterNone): a successful run with no output but
// AgentSkipped, told in the build's events too, so nobody reads the build
// as the work of an agent.
func (r *Runner) skipAgent() agentRun {
	r.log.Info("agent skipped", "template", r.cfg.Runner.Template)
	r.event(schema.LogPayload{Level: schema.LogWarn, Message: AgentSkipped})
	return agentRun{outcome: agent.Outcome{Success: true, Output: AgentSkipped}}
}

// agentRun is how the agent's exec ended.
type agentRun struct {
	outcome  agent.Outcome
	exitCode int
	err      error  // the exec itself failed
	stderr   string // the tail of its stderr
	stopped  error  // non-nil: stopped early for this reason (signal, dispatcher, timeout, errAPIRefused)
}

// notes are the wrapper's own lines ("kiln: ...") in the agent's stderr,
// such as the processes it killed after the agent exited.
func (a agentRun) notes() string {
	var notes []string
	for _, l := range strings.Split(a.stderr, "\n") {
		if m, ok := strings.CutPrefix(l, "kiln: "); ok {
			notes = append(notes, m)
		}
	}
	return strings.Join(notes, "; ")
}

// tenths is d in tenths of a second, at least 1.
func tenths(d time.Duration) int { return max(int(d/(100*time.Millisecond)), 1) }

// runAgent runs the agent in ctr (AgentScript) and streams its events. It
// returns when the agent exits, or stops it (a second exec, KillScript)
// when ctx ends, the dispatcher says the build is terminal, the deadline
// comes, or the CLI retries an API error no retry mends (errAPIRefused).
func (r *Runner) runAgent(ctx context.Context, start time.Time, ctr podexec.Container, workdir string, adapter agent.Adapter, cmd agent.Command) agentRun {
	stopCtx, stopRun := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopRun(nil)
	stopAfterSignal := context.AfterFunc(ctx, func() { stopRun(errSignalled) })
	defer stopAfterSignal()
	go func() {
		// The dispatcher's cancel shows in event acks; while the agent is
		// quiet (no events, no acks) the task's status is polled instead.
		poll := time.NewTicker(r.cfg.StatusPoll)
		defer poll.Stop()
		for {
			select {
			case <-r.batcher.Terminal():
				stopRun(errDispatcherCancel)
				return
			case <-stopCtx.Done():
				return
			case <-poll.C:
				pctx, cancel := context.WithTimeout(stopCtx, r.cfg.StatusPoll)
				task, err := r.disp.Task(pctx)
				cancel()
				if err == nil && task.Status.Terminal() {
					stopRun(fmt.Errorf("%w (%s)", errDispatcherCancel, task.Status))
					return
				}
			}
		}
	}()
	if d := r.cfg.Runner.DeadlineSeconds; d > 0 {
		// Stop the agent in time to report: the Job's deadline less the grace period and a margin.
		budget := agentTime(d, r.cfg.Runner.GracePeriodSeconds)
		if budget > 0 {
			t := time.AfterFunc(budget-r.now().Sub(start), func() {
				stopRun(fmt.Errorf("%w after %s (the build's deadline is %ds)", errAgentTimeout, budget.Round(time.Second), d))
			})
			defer t.Stop()
		}
	}

	// The agent's stdin stays open after the prompt until the exec is over:
	// its end in the pod means this runner is gone, and the wrapper stops the agent.
	script := AgentScript(workdir, r.cfg.PIDDir, r.cfg.BuildID, cmd.Argv, tenths(r.cfg.KillWait))
	held := make(chan struct{})
	defer close(held)
	pr, pw := io.Pipe()
	stderr := &tailBuffer{max: 8 << 10}
	execCtx, cancelExec := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelExec()
	type execDone struct {
		code int
		err  error
	}
	execCh := make(chan execDone, 1)
	go func() {
		code, err := r.exec.Exec(execCtx, ctr, podexec.Request{
			Argv: []string{"sh", "-c", script}, Stdin: AgentStdin(cmd.Stdin, held), Stdout: pw, Stderr: stderr,
		})
		pw.Close()
		execCh <- execDone{code, err}
	}()
	var rec agent.Recorder
	streamCh := make(chan error, 1)
	go func() {
		streamCh <- agent.Stream(pr, adapter.NewParser(), func(e agent.Event) error {
			rec.Observe(e)
			if p, err := agent.SchemaPayload(e); err == nil {
				r.event(p)
			}
			if e.Kind == agent.KindRetry && e.Retry != nil && e.Retry.Permanent() {
				// The CLI would retry for minutes an error no retry mends.
				stopRun(fmt.Errorf("%w: HTTP %d: %s", errAPIRefused, e.Retry.Status, cmp.Or(e.Retry.Error, "no message")))
			}
			return nil
		})
	}()

	var (
		out          agentRun
		streamDone   bool
		execFinished bool
	)
	for !streamDone || !execFinished {
		select {
		case err := <-streamCh:
			streamDone = true
			if err != nil {
				r.log.Warn("agent output stream", "err", err)
			}
		case d := <-execCh:
			execFinished = true
			out.exitCode, out.err = d.code, d.err
		case <-stopCtx.Done():
			out.stopped = context.Cause(stopCtx)
			r.log.Info("stopping the agent", "reason", out.stopped)
			r.killAgent(ctx, ctr)
			// The killed agent's stream ends by itself; give it a moment, then cut it.
			grace := time.NewTimer(3 * time.Second)
			for !streamDone || !execFinished {
				select {
				case <-streamCh:
					streamDone = true
				case <-execCh:
					execFinished = true
				case <-grace.C:
					cancelExec()
					pr.CloseWithError(errors.New("agent stopped"))
				}
			}
			grace.Stop()
			out.outcome = rec.Outcome()
			out.stderr = stderr.String()
			return out
		}
	}
	out.outcome = rec.Outcome()
	out.stderr = stderr.String()
	r.log.Info("agent finished", "exit_code", out.exitCode, "err", out.err, "success", out.outcome.Success,
		"turns", out.outcome.Turns, "cost_usd", out.outcome.CostUSD)
	return out
}

// killAgent runs the second exec that stops the agent and every process of
// its run (KillScript), within what the grace period allows.
func (r *Runner) killAgent(ctx context.Context, ctr podexec.Container) {
	if ctx.Err() != nil {
		r.markStopped()
	}
	budget := r.cfg.KillWait + 5*time.Second
	if dl, ok := r.graceDeadline(); ok {
		budget = min(budget, time.Until(dl)-r.graceForReport())
	}
	wait := r.cfg.KillWait
	if budget < wait+time.Second {
		wait = max(budget/2, 500*time.Millisecond)
	}
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(budget, 2*time.Second))
	defer cancel()
	// One writer for both streams: it must be safe for concurrent writes.
	out := &tailBuffer{max: 4 << 10}
	code, err := r.exec.Exec(kctx, ctr, podexec.Request{
		Argv:   []string{"sh", "-c", KillScript(r.cfg.PIDDir, r.cfg.BuildID, tenths(wait))},
		Stdout: out, Stderr: out,
	})
	msg := strings.TrimSpace(out.String())
	level := schema.LogInfo
	if err != nil || code != 0 {
		level = schema.LogError
		msg = fmt.Sprintf("stopping the agent: exit %d, %v: %s", code, err, msg)
	}
	r.log.Info("agent stop", "result", msg)
	r.event(schema.LogPayload{Level: level, Message: msg})
}

func cancelled(why error, o agent.Outcome) schema.BuildResult {
	res := schema.BuildResult{}
	o.Apply(&res)
	res.Success, res.Cancelled = false, true
	res.Error = "cancelled: " + why.Error()
	return res
}

// event posts p (batched) as an event of now.
func (r *Runner) event(p schema.Payload) {
	in, err := schema.NewEventInput(r.now().UTC(), p)
	if err != nil {
		r.log.Warn("event not posted", "type", p.EventType(), "err", err)
		return
	}
	r.batcher.Add(in)
}

func logLine(res schema.BuildResult) schema.LogPayload {
	ok := res.Success
	p := schema.LogPayload{Level: schema.LogInfo, Message: "build succeeded", Success: &ok}
	switch {
	case res.Cancelled:
		p.Level, p.Message = schema.LogWarn, "build cancelled"
	case !res.Success:
		p.Level, p.Message = schema.LogError, "build failed"
	}
	p.Error, _ = agent.Truncate(res.Error, agent.MaxSummaryBytes)
	return p
}

// commitBody is the commit message body: the spec's prompt (before
// rendering, so variable values never land in history), first lines only.
func commitBody(p string) string {
	p = strings.TrimSpace(p)
	if i := strings.IndexByte(p, '\n'); i >= 0 {
		p = p[:i]
	}
	p, _ = agent.Truncate(p, 200)
	return p
}

func joinMsg(a, b string) string {
	if a == "" {
		return b
	}
	if b == "" {
		return a
	}
	return a + "; " + b
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out, _ := agent.Truncate(strings.Join(lines, " | "), 1<<10)
	return out
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.ToValidUTF8(string(t.b), "?")
}
