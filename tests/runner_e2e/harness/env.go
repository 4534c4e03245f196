package harness

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/kbtest"
	"github.com/kilnbuild/kiln/tests/messagesapi"
)

// Images kubebox maps to host executables.
const (
	ImageRunner  = "kiln-jobrunner"
	ImageProject = "kiln-project"
)

// RunnerNamespace holds the builds' Jobs and the runner's service account.
const RunnerNamespace = "kiln-builds"

// Binaries are the programs the tests run.
type Binaries struct {
	Dir       string
	JobRunner string
	// Claude is the pinned Claude Code CLI (make claude-code); AgentDir holds
	// a `claude` link to it and goes first on the project pod's PATH.
	Claude   string
	AgentDir string
}

var (
	buildOnce sync.Once
	built     Binaries
	buildErr  error
)

// BuildBinaries compiles jobrunner once per test binary (not with -race: it
// runs as a pod, not as part of the test) and links the pinned Claude Code
// CLI as AgentDir/claude. Remove b.Dir when done.
func BuildBinaries() (Binaries, error) {
	buildOnce.Do(func() {
		claude, err := messagesapi.ClaudeBinary()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "kiln-runner-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		built = Binaries{Dir: dir, JobRunner: filepath.Join(dir, "jobrunner"), Claude: claude, AgentDir: filepath.Join(dir, "agent")}
		if err := os.MkdirAll(built.AgentDir, 0o755); err != nil {
			buildErr = err
			return
		}
		if err := os.Symlink(claude, filepath.Join(built.AgentDir, "claude")); err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", built.JobRunner, "github.com/kilnbuild/kiln/jobrunner")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build jobrunner: %v\n%s", err, b)
		}
	})
	return built, buildErr
}

// Env is one kubebox cluster prepared for runner builds.
type Env struct {
	Bin        Binaries
	Cluster    *kbtest.Cluster
	Client     kubernetes.Interface
	Dispatcher *Dispatcher
}

// Setup builds the binaries, starts kubebox (stopped when t ends), creates
// the runner namespace and service account, and starts the stand-in dispatcher.
func Setup(t *testing.T) *Env {
	t.Helper()
	bin, err := BuildBinaries()
	if err != nil {
		t.Fatal(err)
	}
	c := kbtest.Start(t, map[string]string{
		ImageRunner:  bin.JobRunner,
		ImageProject: "/bin/sleep",
	})
	ctx := context.Background()
	must(t, create(ctx, c.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: RunnerNamespace}}))
	must(t, create(ctx, c.Client, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Namespace: RunnerNamespace, Name: jobtemplates.DefaultServiceAccountName}}))
	return &Env{Bin: bin, Cluster: c, Client: c.Client, Dispatcher: NewDispatcher(t)}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// create creates obj, treating AlreadyExists as done.
func create(ctx context.Context, c kubernetes.Interface, obj any) error {
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err = c.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
	case *corev1.ServiceAccount:
		_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.Role:
		_, err = c.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.RoleBinding:
		_, err = c.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *corev1.Pod:
		_, err = c.CoreV1().Pods(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	default:
		return fmt.Errorf("create: unsupported %T", obj)
	}
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// Project is a project namespace with its pod, git workspace and remote.
type Project struct {
	Name      string
	Namespace string
	Pod       string
	Labels    map[string]string
	Workdir   string // the clone, mounted into the pod at the same path
	Remote    string // the bare repository
	// State is a scratch directory outside the workspace, for files the
	// agent's tool commands write (pid files of test scripts).
	State string
	// Home is HOME for git and for the Claude Code CLI in the pod.
	Home string
	// API is the project's own stand-in Messages API: the CLI in its pod
	// talks to it, so each conversation takes the next script the test
	// enqueued for this project.
	API *messagesapi.Server
}

// ProjectOptions tune NewProject.
type ProjectOptions struct {
	// AllowList adds `list` on pods to the runner's Role, which a pod_selector target needs.
	AllowList bool
	// RunnerNamespace is where the runner's service account lives (the
	// Role is bound to it there). Default RunnerNamespace.
	RunnerNamespace string
}

// NewProject creates namespace "proj-<name>" (its .gitignore ignores dist/) with a Role granting the
// runner exactly pods get and pods/exec create,get (plus list with
// AllowList), a bare repository with one commit (index.html), its clone as
// the workdir, a stand-in Messages API, and a running pod with the pinned
// Claude Code CLI first on its PATH as `claude`, its environment pointing
// the CLI at that stand-in.
func (e *Env) NewProject(t *testing.T, name string, o ProjectOptions) *Project {
	t.Helper()
	ctx := context.Background()
	root := t.TempDir()
	p := &Project{
		Name: name, Namespace: "proj-" + name, Pod: "workspace",
		Labels:  map[string]string{"app": "workspace", "kiln-project": name},
		Workdir: filepath.Join(root, "work"), Remote: filepath.Join(root, "remote.git"),
		State: filepath.Join(root, "state"), Home: filepath.Join(root, "home"),
		API: messagesapi.Start(t),
	}
	for _, d := range []string{p.State, p.Home} {
		must(t, os.MkdirAll(d, 0o777))
	}
	git := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = GitEnv(p.Home)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	git(root, "init", "-q", "--bare", "-b", "main", p.Remote)
	git(root, "clone", "-q", p.Remote, p.Workdir)
	must(t, os.WriteFile(filepath.Join(p.Workdir, "index.html"), []byte("<!doctype html>\n<title>Acme</title>\n<h1>Hello</h1>\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(p.Workdir, ".gitignore"), []byte("dist/\n"), 0o644))
	git(p.Workdir, "add", "-A")
	git(p.Workdir, "-c", "user.name=Seed", "-c", "user.email=seed@example.com", "commit", "-q", "-m", "seed")
	git(p.Workdir, "push", "-q", "origin", "HEAD:refs/heads/main")

	must(t, create(ctx, e.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: p.Namespace}}))
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create", "get"}},
	}
	if o.AllowList {
		rules[0].Verbs = append(rules[0].Verbs, "list")
	}
	must(t, create(ctx, e.Client, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: "kiln-runner"}, Rules: rules}))
	must(t, create(ctx, e.Client, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: "kiln-runner"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "kiln-runner"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: cmp.Or(o.RunnerNamespace, RunnerNamespace),
			Name: jobtemplates.DefaultServiceAccountName}},
	}))
	hostPathDir := corev1.HostPathDirectory
	env := []corev1.EnvVar{
		{Name: "PATH", Value: e.Bin.AgentDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	}
	seen := map[string]bool{"PATH": true}
	for _, kv := range append(GitEnv(p.Home), messagesapi.CLIEnv(p.API.URL(), p.Home)...) {
		k, v, _ := strings.Cut(kv, "=")
		if !seen[k] {
			seen[k] = true
			env = append(env, corev1.EnvVar{Name: k, Value: v})
		}
	}
	must(t, create(ctx, e.Client, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Pod, Labels: p.Labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "main", Image: ImageProject, Args: []string{"infinity"},
				WorkingDir:   p.Workdir,
				Env:          env,
				VolumeMounts: []corev1.VolumeMount{{Name: "work", MountPath: p.Workdir}},
			}},
			Volumes: []corev1.Volume{{Name: "work", VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: p.Workdir, Type: &hostPathDir}}}},
		},
	}))
	kbtest.WaitFor(t, 60*time.Second, "project pod running", func(ctx context.Context) (bool, error) {
		pod, err := e.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Pod, metav1.GetOptions{})
		return err == nil && pod.Status.Phase == corev1.PodRunning, err
	})
	return p
}

// GitEnv is an environment for git that ignores the machine's configuration.
func GitEnv(home string) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + home, "GIT_CONFIG_NOSYSTEM=1",
		"LANG=C",
	}
}

// Git runs git in dir with GitEnv and returns its trimmed output.
func (p *Project) Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = GitEnv(p.Home)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(string(out))
}

// Target is the project's target as the dispatcher would send it.
func (p *Project) Target() schema.Target {
	return schema.Target{
		Namespace: p.Namespace, PodName: p.Pod, Container: "main", Workdir: p.Workdir,
		GitRemote: p.Remote, GitBranch: "main", AuthorName: "Kiln Bot", AuthorEmail: "bot@kiln.example",
	}
}

// BuildOptions tune StartBuild.
type BuildOptions struct {
	// Template defaults to the embedded "default" with a 20s grace period.
	Template *jobtemplates.Template
	// ExtraEnv is added to the runner container.
	ExtraEnv []corev1.EnvVar
	// Target overrides the project's target.
	Target *schema.Target
	// Repository makes the project a managed one in the render: with
	// Credentials set, the Job mounts the project's credentials Secret
	// (jobtemplates.ProjectSecretName of ProjectID(p)), which the test creates.
	Repository *schema.Repository
	// Namespace is where the Job and its Secret go (its kiln-runner service
	// account must exist there). Default RunnerNamespace.
	Namespace string
}

// ProjectID is the project id StartBuild gives p's builds.
func ProjectID(p *Project) string { return "pid-" + p.Name }

// StartBuild registers the build with the stand-in dispatcher and creates
// its Job and token Secret as the dispatcher would (jobtemplates.Render,
// Job first, then the Secret owned by it).
func (e *Env) StartBuild(t *testing.T, p *Project, id string, spec schema.BuildSpec, o BuildOptions) *batchv1.Job {
	t.Helper()
	ctx := context.Background()
	tmpl := o.Template
	if tmpl == nil {
		var ok bool
		tmpl, ok = jobtemplates.Embedded().Get("default")
		if !ok {
			t.Fatal("no default template")
		}
		tmpl.TerminationGracePeriodSeconds = 20
	}
	target := p.Target()
	if o.Target != nil {
		target = *o.Target
	}
	ns := cmp.Or(o.Namespace, RunnerNamespace)
	token := "runner-token-" + id
	e.Dispatcher.Add(schema.RunnerTask{BuildID: id, ProjectID: "pid-" + p.Name, Spec: spec, Target: target}, token)
	job, secret, err := jobtemplates.Render(jobtemplates.RenderInput{
		Build: schema.Build{ID: id, ProjectID: "pid-" + p.Name, Spec: spec},
		Project: schema.Project{ID: "pid-" + p.Name, Name: p.Name, Namespace: p.Namespace,
			Managed: o.Repository != nil, Repository: o.Repository},
		Template: tmpl, Namespace: ns, DispatcherURL: e.Dispatcher.URL,
		RunnerToken: token, Image: ImageRunner,
	})
	must(t, err)
	job.Spec.Template.Spec.Containers[0].Env = append(job.Spec.Template.Spec.Containers[0].Env, o.ExtraEnv...)
	created, err := e.Client.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
	must(t, err)
	_, err = e.Client.CoreV1().Secrets(ns).Create(ctx, jobtemplates.OwnedBy(secret, created), metav1.CreateOptions{})
	must(t, err)
	return created
}

// WaitJobPod waits until the Job's pod has terminated and returns it.
func (e *Env) WaitJobPod(t *testing.T, job *batchv1.Job, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	kbtest.WaitFor(t, timeout, "runner pod of "+job.Name+" to terminate", func(ctx context.Context) (bool, error) {
		pods, err := e.Client.CoreV1().Pods(RunnerNamespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + job.Name})
		if err != nil || len(pods.Items) == 0 {
			return false, err
		}
		p := &pods.Items[0]
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Terminated != nil {
				pod = p
				return true, nil
			}
		}
		return false, nil
	})
	return pod
}

// RunnerPod returns the Job's pod once it is running.
func (e *Env) RunnerPod(t *testing.T, job *batchv1.Job) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	kbtest.WaitFor(t, 60*time.Second, "runner pod of "+job.Name+" to run", func(ctx context.Context) (bool, error) {
		pods, err := e.Client.CoreV1().Pods(RunnerNamespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + job.Name})
		if err != nil || len(pods.Items) == 0 {
			return false, err
		}
		pod = &pods.Items[0]
		return pod.Status.Phase == corev1.PodRunning, nil
	})
	return pod
}

// Logs returns a pod's container log, for failure messages.
func (e *Env) Logs(pod *corev1.Pod) string {
	b, err := e.Client.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil {
		return fmt.Sprintf("(logs: %v)", err)
	}
	return string(b)
}
