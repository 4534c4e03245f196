package provision

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kilnbuild/kiln/dispatcher/internal/addons"
	"github.com/kilnbuild/kiln/dispatcher/internal/intake"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/dispatcher/internal/workspace"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// Step names. An add-on's step is "addon:<type>".
const (
	StepNamespace      = "namespace"
	StepServiceAccount = "service_account"
	StepSecret         = "secret"
	StepRunnerAccess   = "runner_access"
	StepWorkspace      = "workspace"
	addonStepPrefix    = "addon:"
)

// Steps returns the provisioning steps of a project with these add-ons, in order.
func Steps(addonTypes []string) []string {
	steps := []string{StepNamespace, StepServiceAccount, StepSecret}
	for _, t := range addonTypes {
		steps = append(steps, addonStepPrefix+t)
	}
	return append(steps, StepRunnerAccess, StepWorkspace)
}

// Cluster is what provisioning needs of the cluster: workspace.Manager.
type Cluster interface {
	EnsureNamespace(ctx context.Context, s workspace.Spec) error
	EnsureServiceAccount(ctx context.Context, s workspace.Spec) error
	EnsureSecrets(ctx context.Context, s workspace.Spec, secretEnv map[string]string) error
	SetEnv(ctx context.Context, s workspace.Spec, env map[string]string) error
	EnsureRunnerAccess(ctx context.Context, s workspace.Spec) error
	EnsureStatefulSet(ctx context.Context, s workspace.Spec) error
	CheckWorkspace(ctx context.Context, s workspace.Spec, wait time.Duration) (bool, error)
	DeleteRunnerAccess(ctx context.Context, s workspace.Spec) (bool, error)
	DeleteStatefulSet(ctx context.Context, s workspace.Spec) (bool, error)
	DeleteSecrets(ctx context.Context, s workspace.Spec) (bool, error)
	DeleteServiceAccount(ctx context.Context, s workspace.Spec) (bool, error)
	DeleteNamespace(ctx context.Context, s workspace.Spec) (bool, error)
}

// Options configures New.
type Options struct {
	Pool      *pgxpool.Pool         // required
	River     *river.Client[pgx.Tx] // required: inserts the jobs (an insert-only client will do)
	Client    kubernetes.Interface  // required: the credentials Secret in the builds namespace
	Cluster   Cluster               // default: workspace.NewManager(Client, Logger)
	Lifecycle *lifecycle.Lifecycle  // required: cancels a retired project's builds
	// BuildsNamespace is where build Jobs run, the credentials Secret is
	// kept and the runner's ServiceAccount is. Default kiln-builds.
	BuildsNamespace      string
	RunnerServiceAccount string            // default kiln-runner
	Image                string            // default workspace image; default workspace.DefaultImage
	Env                  map[string]string // env of every workspace (a project's env overrides it)
	// AddonURLs holds the admin URL of each configured add-on type.
	AddonURLs map[string]string
	// StepAttempts is how often a failing step is tried before the project
	// is rolled back; default 3, with StepBackoff (default 1s, 2s, 4s…, at most 30s) between.
	StepAttempts int
	StepBackoff  func(attempt int) time.Duration
	// WorkspaceTimeout bounds how long the workspace pod may take to clone
	// and be ready; default 5m.
	WorkspaceTimeout time.Duration
	// Slice is how long one run of a job works before it yields (snoozes
	// at once) so that no run outlives River's rescue of stuck jobs; default 15s.
	Slice time.Duration
	// OnStep is told of each finished or failed step try; OnDone of each
	// provisioning's end (ready or rolled back). Both may be nil.
	OnStep func(step string, took time.Duration, failed bool)
	OnDone func(took time.Duration, ok bool)
	Logger *slog.Logger
	// testHookBeforeStep runs before each step try; tests inject faults.
	testHookBeforeStep func(ctx context.Context, step string) error
}

// Service provisions and retires managed projects. It implements
// intake.Workspaces; its workers go on the River client that works Queue.
type Service struct {
	o      Options
	addons map[string]addons.Addon
	logger *slog.Logger
}

var _ intake.Workspaces = (*Service)(nil)

// New returns a Service. An add-on type with a URL that does not parse is an error.
func New(o Options) (*Service, error) {
	if o.Pool == nil || o.River == nil || o.Client == nil || o.Lifecycle == nil {
		return nil, errors.New("provision: Pool, River, Client and Lifecycle are required")
	}
	o.Logger = cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	o.BuildsNamespace = cmp.Or(o.BuildsNamespace, "kiln-builds")
	o.RunnerServiceAccount = cmp.Or(o.RunnerServiceAccount, "kiln-runner")
	o.Image = cmp.Or(o.Image, workspace.DefaultImage)
	o.StepAttempts = cmp.Or(o.StepAttempts, 3)
	o.WorkspaceTimeout = cmp.Or(o.WorkspaceTimeout, 5*time.Minute)
	o.Slice = cmp.Or(o.Slice, 15*time.Second)
	if o.StepBackoff == nil {
		o.StepBackoff = func(n int) time.Duration { return min(time.Second<<max(n-1, 0), 30*time.Second) }
	}
	if o.Cluster == nil {
		o.Cluster = workspace.NewManager(o.Client, o.Logger)
	}
	s := &Service{o: o, addons: map[string]addons.Addon{}, logger: o.Logger.With("component", "provision")}
	for typ, u := range o.AddonURLs {
		if u == "" {
			continue
		}
		a, err := addons.New(typ, addons.Config{AdminURL: o.AddonURLs, Logger: o.Logger})
		if err != nil {
			return nil, fmt.Errorf("add-on %s: %w", typ, err)
		}
		s.addons[typ] = a
	}
	return s, nil
}

// AddWorkers adds the provisioning and retirement workers to workers.
func (s *Service) AddWorkers(workers *river.Workers) {
	river.AddWorker(workers, &provisionWorker{s: s})
	river.AddWorker(workers, &retireWorker{s: s})
}

// Defaults implements intake.Workspaces.
func (s *Service) Defaults() intake.WorkspaceDefaults {
	configured := make([]string, 0, len(s.addons))
	for t := range s.addons {
		configured = append(configured, t)
	}
	slices.Sort(configured)
	return intake.WorkspaceDefaults{Image: s.o.Image, Env: s.o.Env, AddonTypes: configured,
		AllAddonTypes: addons.Types(), BuildsNamespace: s.o.BuildsNamespace,
		Container: workspace.ContainerName, Workdir: workspace.Workdir, Steps: Steps, AddonEnv: addons.EnvNames}
}

// PutSecret implements intake.Workspaces: the credentials Secret, in the
// builds namespace, labelled for the project.
func (s *Service) PutSecret(ctx context.Context, projectID string, creds *schema.Credentials, secretEnv map[string]string) error {
	data := map[string][]byte{}
	if creds != nil {
		switch creds.Kind() {
		case schema.CredentialsHTTPS:
			data[jobtemplates.SecretKeyGitUsername] = []byte(cmp.Or(creds.Username, intake.DefaultGitUsername))
			data[jobtemplates.SecretKeyGitToken] = []byte(creds.Token)
		case schema.CredentialsSSH:
			data[jobtemplates.SecretKeySSHKey] = []byte(creds.SSHPrivateKey)
			data[jobtemplates.SecretKeyKnownHosts] = []byte(creds.KnownHosts)
		}
	}
	for k, v := range secretEnv {
		data[jobtemplates.SecretKeyEnvPrefix+k] = []byte(v)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: jobtemplates.ProjectSecretName(projectID),
		Namespace: s.o.BuildsNamespace, Labels: map[string]string{jobtemplates.LabelManagedBy: jobtemplates.ManagedBy,
			jobtemplates.LabelProject: projectID}}, Type: corev1.SecretTypeOpaque, Data: data}
	_, err := s.o.Client.CoreV1().Secrets(s.o.BuildsNamespace).Create(ctx, sec, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating secret %s/%s: %s", s.o.BuildsNamespace, sec.Name, apiMessage(err))
	}
	return nil
}

// DeleteSecret implements intake.Workspaces.
func (s *Service) DeleteSecret(ctx context.Context, projectID string) error {
	name := jobtemplates.ProjectSecretName(projectID)
	err := s.o.Client.CoreV1().Secrets(s.o.BuildsNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting secret %s/%s: %s", s.o.BuildsNamespace, name, apiMessage(err))
	}
	return nil
}

// readSecret returns the project's credentials and secret_env from its Secret.
func (s *Service) readSecret(ctx context.Context, projectID string) (*schema.Credentials, map[string]string, error) {
	name := jobtemplates.ProjectSecretName(projectID)
	sec, err := s.o.Client.CoreV1().Secrets(s.o.BuildsNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("reading secret %s/%s: %s", s.o.BuildsNamespace, name, apiMessage(err))
	}
	env := map[string]string{}
	for k, v := range sec.Data {
		if name, ok := strings.CutPrefix(k, jobtemplates.SecretKeyEnvPrefix); ok {
			env[name] = string(v)
		}
	}
	c := &schema.Credentials{Username: string(sec.Data[jobtemplates.SecretKeyGitUsername]),
		Token: string(sec.Data[jobtemplates.SecretKeyGitToken]), SSHPrivateKey: string(sec.Data[jobtemplates.SecretKeySSHKey]),
		KnownHosts: string(sec.Data[jobtemplates.SecretKeyKnownHosts])}
	if c.Kind() == "" {
		c = nil
	}
	return c, env, nil
}

// ProvisionTx implements intake.Workspaces.
func (s *Service) ProvisionTx(ctx context.Context, tx pgx.Tx, projectID string) error {
	_, err := s.o.River.InsertTx(ctx, tx, ProvisionArgs{ProjectID: projectID}, nil)
	if err != nil {
		return fmt.Errorf("enqueueing the provisioning of project %s: %w", projectID, err)
	}
	return nil
}

// RetireTx implements intake.Workspaces.
func (s *Service) RetireTx(ctx context.Context, tx pgx.Tx, projectID string) error {
	_, err := s.o.River.InsertTx(ctx, tx, RetireArgs{ProjectID: projectID}, nil)
	if err != nil {
		return fmt.Errorf("enqueueing the retirement of project %s: %w", projectID, err)
	}
	return nil
}

// spec is the workspace.Spec of a managed project.
func (s *Service) spec(r *store.ProjectRow, creds *schema.Credentials) workspace.Spec {
	m := r.Managed
	sp := workspace.Spec{ProjectID: r.ID, ProjectName: r.Name, Namespace: r.Namespace, Name: r.Name,
		Image: m.Workspace.Image, Env: m.Workspace.Env, RepoURL: m.Repository.URL, Branch: m.Repository.Branch,
		Credentials: creds, RunnerNamespace: cmp.Or(m.BuildsNamespace, s.o.BuildsNamespace),
		RunnerServiceAccount: s.o.RunnerServiceAccount}
	if res := m.Workspace.Resources; res != nil {
		sp.Resources = corev1.ResourceRequirements{Requests: quantities(res.Requests), Limits: quantities(res.Limits)}
	}
	return sp
}

func quantities(m map[string]string) corev1.ResourceList {
	if len(m) == 0 {
		return nil
	}
	out := corev1.ResourceList{}
	for k, v := range m {
		if q, err := resource.ParseQuantity(v); err == nil { // checked at intake
			out[corev1.ResourceName(k)] = q
		}
	}
	return out
}

func apiMessage(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().Message
	}
	return err.Error()
}
