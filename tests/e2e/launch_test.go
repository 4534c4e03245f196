package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/kbtest"
)

func TestLaunchToCompletion(t *testing.T) {
	e := newEnv(t)
	d := e.start()
	p := e.project(d, "web", 1)
	id := e.submit(d, p.ID, schema.BuildSpec{Prompt: "succeed"})
	b := e.waitStatus(d, id, 60*time.Second, schema.StatusCompleted, schema.StatusFailed)
	require.Equal(t, schema.StatusCompleted, b.Status, b.Error)
	require.NotNil(t, b.Result)
	assert.Equal(t, "all done", b.Result.Output)
	assert.Equal(t, "0123abcd", b.Result.CommitSHA)
	assert.Equal(t, []string{"index.html"}, b.Result.FilesChanged)
	assert.Equal(t, 1, b.Attempt, "one Job")
	assert.Equal(t, jobtemplates.JobName(id), b.JobName)
	require.NotNil(t, b.StartedAt)
	require.NotNil(t, b.FinishedAt)

	job, err := cluster.Client.BatchV1().Jobs(e.ns).Get(context.Background(), b.JobName, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, id, job.Labels[jobtemplates.LabelBuildID])
	assert.Equal(t, "kiln", job.Labels[jobtemplates.LabelManagedBy])
	assert.Equal(t, int32(0), *job.Spec.BackoffLimit)
	assert.Equal(t, corev1.RestartPolicyNever, job.Spec.Template.Spec.RestartPolicy)
	sec, err := cluster.Client.CoreV1().Secrets(e.ns).Get(context.Background(), jobtemplates.SecretName(id), metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, sec.OwnerReferences, 1)
	assert.Equal(t, job.UID, sec.OwnerReferences[0].UID, "the Secret is owned by the Job")

	evs := e.events(d, id)
	var kinds []string
	for i, ev := range evs {
		assert.Equal(t, int64(i+1), ev.Seq, "events are numbered without gaps")
		kinds = append(kinds, string(ev.Type)+":"+string(ev.Payload))
	}
	joined := strings.Join(kinds, "\n")
	assert.Contains(t, joined, `status:{"error":"","status":"running"}`)
	assert.Equal(t, 2, strings.Count(joined, "agent_text"), "a retried batch is stored once:\n%s", joined)
	assert.Equal(t, schema.StatusCompleted, lastStatus(t, evs).Status)
}

func TestRunnerTokenIsPerBuild(t *testing.T) {
	e := newEnv(t)
	d := e.start()
	p := e.project(d, "web", 2)
	a := e.submit(d, p.ID, schema.BuildSpec{Prompt: "sleep"})
	e.waitStatus(d, a, 60*time.Second, schema.StatusRunning)
	sec, err := cluster.Client.CoreV1().Secrets(e.ns).Get(context.Background(), jobtemplates.SecretName(a), metav1.GetOptions{})
	require.NoError(t, err)
	tokA := string(sec.Data[jobtemplates.SecretKeyRunnerToken])
	bID := e.submit(d, p.ID, schema.BuildSpec{Prompt: "sleep"})
	e.waitStatus(d, bID, 60*time.Second, schema.StatusRunning)

	for _, c := range []struct {
		build, token string
		want         int
	}{{a, tokA, 200}, {bID, tokA, 401}, {a, "", 401}, {a, e.admin, 401}} {
		req, _ := newRequest("GET", d.url+schema.RunnerAPIPrefix+c.build, c.token)
		res, err := defaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, c.want, res.StatusCode, "build %s with token %.10q", c.build, c.token)
	}
	// Neither the token nor its Secret's data reach the audit trail or the logs.
	b := e.get(d, a)
	assert.NotContains(t, b.Error+b.JobName, tokA)
	for _, ev := range e.events(d, a) {
		assert.NotContains(t, string(ev.Payload), tokA)
	}
	assert.NotContains(t, readFile(t, d.log), tokA)
}

func TestFailureReasons(t *testing.T) {
	e := newEnv(t)
	d := e.start()
	p := e.project(d, "web", 10)
	cases := []struct {
		name, prompt, template, want string
		reason                       schema.Reason
	}{
		{"reported failure", "fail", "", "agent failed: boom", schema.ReasonRunnerError},
		{"exit without result", "no-result", "", "runner exited without a result", schema.ReasonPodFailed},
		{"crash", "crash", "", "runner exited with code 3 without a result: crashed hard", schema.ReasonPodFailed},
		{"deadline", "hang", "short", "timed out after 6s", schema.ReasonDeadline},
		{"deadline, runner stops cleanly", "stopped", "short", "timed out after 6s", schema.ReasonDeadline},
		{"oom", "oom", "tiny", "out of memory (limit 48Mi)", schema.ReasonOOM},
		{"image pull", "succeed", "badimage", "image pull failed for kiln/no-such-image:1", schema.ReasonImagePull},
		{"unschedulable", "succeed", "nowhere", "unschedulable: 0/1 nodes are available", schema.ReasonUnschedulable},
	}
	ids := map[string]string{}
	for _, c := range cases {
		ids[c.name] = e.submit(d, p.ID, schema.BuildSpec{Prompt: c.prompt, Template: c.template})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := e.waitStatus(d, ids[c.name], 90*time.Second, schema.StatusFailed, schema.StatusCompleted, schema.StatusCancelled)
			assert.Equal(t, schema.StatusFailed, b.Status)
			assert.Contains(t, b.Error, c.want)
			assert.Equal(t, c.reason, b.Reason, "the typed reason")
			last := lastStatus(t, e.events(d, ids[c.name]))
			assert.Equal(t, schema.StatusFailed, last.Status)
			assert.Contains(t, last.Error, c.want, "the error is an event too")
			assert.Equal(t, c.reason, last.Reason, "and so is the reason")
		})
	}
	// Image pull and scheduling failures delete their Jobs.
	for _, name := range []string{"image pull", "unschedulable"} {
		kbtest.WaitFor(t, 30*time.Second, name+" job deleted", func(ctx context.Context) (bool, error) {
			_, err := cluster.Client.BatchV1().Jobs(e.ns).Get(ctx, jobtemplates.JobName(ids[name]), metav1.GetOptions{})
			return apierrors.IsNotFound(err), err
		})
	}
}

func TestResultFromTerminationMessage(t *testing.T) {
	e := newEnv(t)
	d := e.start()
	p := e.project(d, "web", 1)
	id := e.submit(d, p.ID, schema.BuildSpec{Prompt: "summary"})
	b := e.waitStatus(d, id, 60*time.Second, schema.StatusCompleted, schema.StatusFailed)
	require.Equal(t, schema.StatusCompleted, b.Status, b.Error)
	assert.Equal(t, "feedface", b.Result.CommitSHA, "the outcome came from the pod's termination message")
}

func TestJobDeletedBySomeoneElse(t *testing.T) {
	e := newEnv(t)
	d := e.start()
	p := e.project(d, "web", 1)
	id := e.submit(d, p.ID, schema.BuildSpec{Prompt: "sleep"})
	b := e.waitStatus(d, id, 60*time.Second, schema.StatusRunning)
	bg := metav1.DeletePropagationBackground
	require.NoError(t, cluster.Client.BatchV1().Jobs(e.ns).Delete(context.Background(), b.JobName, metav1.DeleteOptions{PropagationPolicy: &bg}))
	b = e.waitStatus(d, id, 60*time.Second, schema.StatusFailed, schema.StatusCompleted)
	assert.Equal(t, schema.StatusFailed, b.Status)
	assert.Equal(t, "job deleted", b.Error)
	assert.Equal(t, schema.ReasonJobDeleted, b.Reason)
}

func TestCancelRunning(t *testing.T) {
	e := newEnv(t)
	d := e.start()
	p := e.project(d, "web", 1)
	id := e.submit(d, p.ID, schema.BuildSpec{Prompt: "sleep"})
	b := e.waitStatus(d, id, 60*time.Second, schema.StatusRunning)
	kbtest.WaitFor(t, 30*time.Second, "runner started", func(context.Context) (bool, error) { return markerExists(id, "started"), nil })

	out := e.cancel(d, id, "not needed")
	assert.Equal(t, schema.StatusCancelled, out.Status)

	kbtest.WaitFor(t, 30*time.Second, "job deleted", func(ctx context.Context) (bool, error) {
		_, err := cluster.Client.BatchV1().Jobs(e.ns).Get(ctx, b.JobName, metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
	kbtest.WaitFor(t, 30*time.Second, "runner got SIGTERM", func(context.Context) (bool, error) { return markerExists(id, "sigterm"), nil })
	// The stand-in claims success after SIGTERM; the build must stay
	// cancelled. Its account is kept as the build's result (it had none),
	// never as a success.
	time.Sleep(time.Second)
	b = e.get(d, id)
	assert.Equal(t, schema.StatusCancelled, b.Status)
	assert.Equal(t, schema.ReasonCancelled, b.Reason)
	assert.Equal(t, "not needed", b.Error)
	require.NotNil(t, b.Result, "the stopped runner's account is kept")
	assert.False(t, b.Result.Success, "a kept account never claims success")
	assert.Equal(t, "finished after all", b.Result.Output)
	assert.Contains(t, readFile(t, d.log), "a stopped runner's result kept")
}

func TestCapacityFIFO(t *testing.T) {
	e := newEnv(t, "KILN_MAX_IN_FLIGHT=2")
	d := e.start()
	a := e.project(d, "a", 1)
	bp := e.project(d, "b", 1)
	var aIDs []string
	for range 3 {
		aIDs = append(aIDs, e.submit(d, a.ID, schema.BuildSpec{Prompt: "sleep-2"}))
	}
	bID := e.submit(d, bp.ID, schema.BuildSpec{Prompt: "sleep-2"})
	cp := e.project(d, "c", 1)
	cID := e.submit(d, cp.ID, schema.BuildSpec{Prompt: "sleep-2"})

	all := append(append([]string{}, aIDs...), bID, cID)
	for _, id := range all {
		e.waitStatus(d, id, 120*time.Second, schema.StatusCompleted)
	}
	builds := map[string]schema.Build{}
	for _, id := range all {
		builds[id] = e.get(d, id)
	}
	// Project a ran one at a time, in submission order.
	for i := 1; i < len(aIDs); i++ {
		prev, cur := builds[aIDs[i-1]], builds[aIDs[i]]
		assert.False(t, cur.StartedAt.Before(*prev.FinishedAt), "build %d of a started before %d finished", i, i-1)
	}
	// Never more than two in flight across projects.
	for _, x := range all {
		overlapping := 0
		for _, y := range all {
			if !builds[y].StartedAt.After(*builds[x].StartedAt) && builds[y].FinishedAt.After(*builds[x].StartedAt) {
				overlapping++
			}
		}
		assert.LessOrEqual(t, overlapping, 2, "builds in flight when %s started", x)
	}
	waited := false
	for _, ev := range e.events(d, aIDs[2]) {
		if info, ok := schema.PayloadAs[schema.InfoPayload](ev); ok && strings.Contains(info.Message, "waiting for capacity") {
			waited = true
		}
	}
	assert.True(t, waited, "a queued build says why it waits")
}

func TestQuotaKeepsBuildsPending(t *testing.T) {
	e := newEnv(t)
	_, err := cluster.Client.CoreV1().ResourceQuotas(e.ns).Create(context.Background(), &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "one-job"},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{"count/jobs.batch": resource.MustParse("1")}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	d := e.start()
	p := e.project(d, "web", 2)
	first := e.submit(d, p.ID, schema.BuildSpec{Prompt: "sleep"})
	e.waitStatus(d, first, 60*time.Second, schema.StatusRunning)
	second := e.submit(d, p.ID, schema.BuildSpec{Prompt: "succeed"})
	kbtest.WaitFor(t, 30*time.Second, "quota wait event", func(context.Context) (bool, error) {
		for _, ev := range e.events(d, second) {
			if info, ok := schema.PayloadAs[schema.InfoPayload](ev); ok && strings.Contains(info.Message, "ResourceQuota is exceeded") {
				return true, nil
			}
		}
		return false, nil
	})
	assert.Equal(t, schema.StatusPending, e.get(d, second).Status)
	e.cancel(d, first, "")
	b := e.waitStatus(d, second, 90*time.Second, schema.StatusCompleted, schema.StatusFailed)
	assert.Equal(t, schema.StatusCompleted, b.Status, b.Error)
}

func TestInvalidJobFailsBuild(t *testing.T) {
	e := newEnv(t)
	// Kiln's template checks pass it, Kubernetes refuses it: an extended
	// resource requested without a limit.
	require.NoError(t, writeTemplateVariant(e, "greedy", "    memory: 64Mi", "    memory: 64Mi\n    example.com/widget: \"1\""))
	d := e.start()
	p := e.project(d, "web", 1)
	id := e.submit(d, p.ID, schema.BuildSpec{Prompt: "succeed", Template: "greedy"})
	b := e.waitStatus(d, id, 60*time.Second, schema.StatusFailed, schema.StatusCompleted)
	assert.Equal(t, schema.StatusFailed, b.Status)
	assert.Contains(t, b.Error, "the Kubernetes API rejected the Job")
	assert.Contains(t, b.Error, "Limit must be set for non overcommitable resources")
}

var _ = batchv1.Job{}

// lastStatus returns the payload of the last status event in evs.
func lastStatus(t *testing.T, evs []schema.Event) schema.StatusPayload {
	t.Helper()
	for i := len(evs) - 1; i >= 0; i-- {
		if p, ok := schema.PayloadAs[schema.StatusPayload](evs[i]); ok {
			return p
		}
	}
	t.Fatalf("no status event in %d events", len(evs))
	return schema.StatusPayload{}
}

// kill -9 the dispatcher with builds pending and running, change the cluster
// while it is down, start it again: every build ends terminal, none gets a
// second Job.
func TestRestartSafety(t *testing.T) {
	e := newEnv(t, "KILN_MAX_IN_FLIGHT=3")
	d := e.start()
	p := e.project(d, "web", 3)
	q := e.project(d, "api", 1)
	running := []string{
		e.submit(d, p.ID, schema.BuildSpec{Prompt: "sleep-4"}),
		// Its Job is deleted while the dispatcher is down. It answers SIGTERM
		// as the real runner does, reporting that it stopped (which settles
		// nothing): a runner that claimed success instead could reach a
		// replica that has not yet seen the deletion, and be believed.
		e.submit(d, p.ID, schema.BuildSpec{Prompt: "stopped"}),
		e.submit(d, p.ID, schema.BuildSpec{Prompt: "sleep"}),
	}
	for _, id := range running {
		e.waitStatus(d, id, 60*time.Second, schema.StatusRunning)
	}
	pending := []string{
		e.submit(d, q.ID, schema.BuildSpec{Prompt: "succeed"}),
		e.submit(d, q.ID, schema.BuildSpec{Prompt: "succeed"}),
	}
	d.kill9()

	// While it is down: one running build's Job disappears, one running build
	// is cancelled straight in the database (another replica did it), and the
	// sleep-4 build finishes and reports to nobody.
	bg := metav1.DeletePropagationBackground
	require.NoError(t, cluster.Client.BatchV1().Jobs(e.ns).Delete(context.Background(), jobtemplates.JobName(running[1]), metav1.DeleteOptions{PropagationPolicy: &bg}))
	_, err := e.pool.Exec(context.Background(), `UPDATE builds SET status = 'cancelled', reason = 'cancelled', error = 'cancelled elsewhere', finished_at = now() WHERE id = $1`, running[2])
	require.NoError(t, err)

	// Two replicas come back side by side.
	d1, d2 := e.start(), e.start()
	b := e.waitStatus(d1, running[1], 60*time.Second, schema.StatusFailed)
	assert.Equal(t, "job deleted", b.Error)
	kbtest.WaitFor(t, 60*time.Second, "the cancelled build's Job deleted", func(ctx context.Context) (bool, error) {
		_, err := cluster.Client.BatchV1().Jobs(e.ns).Get(ctx, jobtemplates.JobName(running[2]), metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
	b = e.waitStatus(d2, running[0], 90*time.Second, schema.StatusCompleted, schema.StatusFailed)
	assert.Equal(t, schema.StatusCompleted, b.Status, "the result posted while the dispatcher was down arrives on retry (%s)", b.Error)
	// A dispatch job held by the killed process is rescued by River after 30s.
	for _, id := range pending {
		b := e.waitStatus(d2, id, 150*time.Second, schema.StatusCompleted, schema.StatusFailed)
		assert.Equal(t, schema.StatusCompleted, b.Status, b.Error)
	}
	// At most one Job a build: every build that ran was started once.
	var multi int
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM builds WHERE attempt > 1`).Scan(&multi))
	assert.Zero(t, multi)
	var nonTerminal int
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM builds WHERE status IN ('pending', 'running')`).Scan(&nonTerminal))
	assert.Zero(t, nonTerminal)
}

// Two replicas serving and launching at once reach the same outcomes: every
// build completes, once.
func TestTwoReplicas(t *testing.T) {
	e := newEnv(t, "KILN_MAX_IN_FLIGHT=4")
	d1, d2 := e.start(), e.start()
	var ids []string
	for i := range 4 {
		p := e.project(d1, "p"+string(rune('a'+i)), 1)
		for j := range 3 {
			d := d1
			if j%2 == 1 {
				d = d2
			}
			ids = append(ids, e.submit(d, p.ID, schema.BuildSpec{Prompt: "succeed"}))
		}
	}
	for _, id := range ids {
		b := e.waitStatus(d2, id, 120*time.Second, schema.StatusCompleted, schema.StatusFailed)
		assert.Equal(t, schema.StatusCompleted, b.Status, b.Error)
		assert.Equal(t, 1, b.Attempt)
	}
}
