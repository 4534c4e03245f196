package intake

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/lifecycle"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

// Errors the API maps to answers.
var (
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	ErrForbidden           = errors.New("forbidden")
)

// ErrNotRunning is returned by SubmitBuild before Start and after Stop: no
// committer is there to write the build.
var ErrNotRunning = errors.New("intake: not running")

// Options configures New.
type Options struct {
	Store     *store.Store         // required
	Templates TemplateSet          // default: jobtemplates.Embedded()
	Lifecycle *lifecycle.Lifecycle // required: builds are accepted (audit row + River job) through it
	// Committers is how many group commits may be in flight at once: a fixed
	// pool, started by Start. Default 4.
	Committers int
	// MaxBatch is the most submissions one group commit writes. Default 64.
	MaxBatch int
	Logger   *slog.Logger // default: discard
	// Workspaces takes managed projects; nil: they are refused (no cluster).
	Workspaces Workspaces
	// OnFollowup, if set, learns of each follow-up accepted (not an
	// Idempotency-Key replay), with its fallback, once it is committed.
	OnFollowup func(schema.Fallback)
	// Now is the clock of the monthly budgets; default time.Now.
	Now func() time.Time
}

// commitTimeout bounds one group commit.
const commitTimeout = 30 * time.Second

// Service accepts builds and projects. Build submissions are written by its
// committers, which run from Start to Stop; the other methods work without.
type Service struct {
	// Set by New; read-only.
	Store     *store.Store
	Templates TemplateSet
	Lifecycle *lifecycle.Lifecycle

	workspaces Workspaces
	defaults   *WorkspaceDefaults // of workspaces; nil without
	onFollowup func(schema.Fallback)
	now        func() time.Time
	statuses   statusCache
	logger     *slog.Logger
	committers int
	maxBatch   int
	queue      chan *submission // closed by Stop once no submitter can send

	mu       sync.RWMutex
	started  bool           // guarded by mu
	stopped  bool           // guarded by mu
	senders  sync.WaitGroup // submitters between the state check and their send
	stopping chan struct{}  // closed by Stop: blocked submitters give up
	stopOnce sync.Once
	running  sync.WaitGroup  // the committers
	life     context.Context // Start's, without its cancellation: commits derive from it

	// testHookAfterJobInsert runs between the River insert and the audit
	// row insert; tests make it fail to prove invariant 1 (docs/design.md).
	testHookAfterJobInsert func(ctx context.Context) error
}

// New returns a Service; it accepts builds once Start is called.
func New(o Options) (*Service, error) {
	o.Committers = cmp.Or(o.Committers, 4)
	o.MaxBatch = cmp.Or(o.MaxBatch, 64)
	o.Logger = cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OnFollowup == nil {
		o.OnFollowup = func(schema.Fallback) {}
	}
	if o.Templates == nil {
		o.Templates = jobtemplates.Embedded()
	}
	switch {
	case o.Store == nil:
		return nil, errors.New("intake: Store is required")
	case o.Lifecycle == nil:
		return nil, errors.New("intake: Lifecycle is required")
	case o.Committers < 1:
		return nil, fmt.Errorf("intake: Committers must be positive, not %d", o.Committers)
	case o.MaxBatch < 1:
		return nil, fmt.Errorf("intake: MaxBatch must be positive, not %d", o.MaxBatch)
	}
	var defaults *WorkspaceDefaults
	if o.Workspaces != nil {
		d := o.Workspaces.Defaults()
		defaults = &d
	}
	return &Service{Store: o.Store, Templates: o.Templates, Lifecycle: o.Lifecycle,
		workspaces: o.Workspaces, defaults: defaults, statuses: newStatusCache(), onFollowup: o.OnFollowup, now: o.Now,
		logger: o.Logger.With("component", "intake"), committers: o.Committers, maxBatch: o.MaxBatch,
		queue: make(chan *submission, 4*o.MaxBatch), stopping: make(chan struct{})}, nil
}

// Start checks that the database answers and starts the committers. Their
// commits run under ctx's values but not its cancellation: Stop ends them.
// A stopped Service does not start again.
func (s *Service) Start(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Store.Pool.Ping(pctx); err != nil {
		return fmt.Errorf("intake: database unreachable: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return fmt.Errorf("starting: %w", ErrNotRunning)
	case s.started:
		return errors.New("intake: already started")
	}
	s.started, s.life = true, context.WithoutCancel(ctx)
	s.running.Add(s.committers)
	for range s.committers {
		go func() {
			defer s.running.Done()
			s.commitLoop()
		}()
	}
	return nil
}

// Stop stops accepting submissions and waits for the committers, which first
// write every submission already queued (their submitters get their builds).
// A SubmitBuild from then on returns ErrNotRunning. Stop may be called more
// than once, and without Start.
func (s *Service) Stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopped = true
		close(s.stopping)
		s.mu.Unlock()
		s.senders.Wait() // each has queued its submission or given up
		close(s.queue)   // the committers drain it, then return
	})
	s.running.Wait()
}

// Accepted is the outcome of a submission.
type Accepted struct {
	Build   *store.Build
	Project *schema.Project
	Replay  bool // an Idempotency-Key replay: no new build was made
}

// SubmitBuild validates spec and, in one transaction, writes the audit row and
// the River dispatch job. With a non-empty idemKey, a repeat of the same
// request returns the first build; the same key with another body returns
// ErrIdempotencyMismatch. A spec whose template caps the project's monthly
// spend, once the project reached it, returns a *MonthlyBudgetError.
//
// Only project.ID is needed; an unknown project returns store.ErrNotFound.
func (s *Service) SubmitBuild(ctx context.Context, who *auth.Principal, project *schema.Project, spec schema.BuildSpec, idemKey string) (*Accepted, error) {
	if _, err := uuid.Parse(project.ID); err != nil || !who.CanSee(project.ID) {
		return nil, fmt.Errorf("project %s: %w", project.ID, store.ErrNotFound)
	}
	if err := ValidateSpec(&spec, s.Templates, ""); err != nil {
		return nil, err
	}
	return s.submit(ctx, who, project, spec, idemKey, "")
}

// submit accepts a validated spec for project: a build, or a follow-up of
// parentID. The project must take builds, a review branch must not be its
// branch, and its monthly budget (of the spec's template) must not be
// reached.
func (s *Service) submit(ctx context.Context, who *auth.Principal, project *schema.Project, spec schema.BuildSpec, idemKey, parentID string) (*Accepted, error) {
	if err := s.takesBuilds(ctx, project.ID); err != nil {
		return nil, err
	}
	if err := s.checkProjectBranch(ctx, project, spec); err != nil {
		return nil, err
	}
	spec.Template = spec.TemplateName()
	var hash []byte
	if idemKey != "" {
		// No lookup first: most keys are fresh, and the group commit's claim
		// finds a bound one (a retry), which is then answered from its record.
		hash = requestHash(project.ID, parentID, spec)
	}
	if err := s.checkMonthlyBudget(ctx, project.ID, spec); err != nil {
		// A retry of a build accepted before the budget was reached still
		// gets that build.
		if idemKey != "" {
			if acc, rerr := s.replay(ctx, who, idemKey, hash); acc != nil || rerr != nil {
				return acc, rerr
			}
		}
		return nil, err
	}
	b, err := s.submitBatched(ctx, who, project.ID, parentID, spec, idemKey, hash)
	if errors.Is(err, errReplay) {
		acc, err := s.replay(ctx, who, idemKey, hash)
		if acc == nil && err == nil {
			err = fmt.Errorf("idempotency key %q vanished during replay", idemKey)
		}
		return acc, err
	}
	if err != nil {
		return nil, err
	}
	if parentID != "" {
		s.onFollowup(spec.Fallback)
	}
	return &Accepted{Build: b, Project: project}, nil
}

var errReplay = errors.New("idempotency key already bound")

func (s *Service) replay(ctx context.Context, who *auth.Principal, key string, hash []byte) (*Accepted, error) {
	rec, err := store.GetIdempotencyKey(ctx, s.Store.Pool, who.TokenID, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(rec.RequestHash, hash) {
		return nil, ErrIdempotencyMismatch
	}
	b, err := store.GetBuild(ctx, s.Store.Pool, rec.BuildID)
	if err != nil {
		return nil, err
	}
	return &Accepted{Build: b, Replay: true}, nil
}

// insertBuild accepts one build on tx, through the lifecycle.
func (s *Service) insertBuild(ctx context.Context, tx pgx.Tx, who *auth.Principal, projectID string, spec schema.BuildSpec) (*store.Build, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	bs, err := s.Lifecycle.AcceptTx(ctx, tx, []store.NewBuild{{ID: id.String(), ProjectID: projectID, Spec: spec,
		RequestedBy: who.Name}}, s.testHookAfterJobInsert)
	if err != nil {
		return nil, err
	}
	return bs[0], nil
}

// requestHash identifies a submission's request: the project, the build a
// follow-up continues (absent for a build, so their hashes stay as they
// were), and the spec.
func requestHash(projectID, parentID string, spec schema.BuildSpec) []byte {
	b, _ := json.Marshal(struct {
		P      string           `json:"p"`
		Parent string           `json:"f,omitempty"`
		S      schema.BuildSpec `json:"s"`
	}{projectID, parentID, spec})
	h := sha256.Sum256(b)
	return h[:]
}

// CreateProject creates a project; only admins may. A bring-your-own-pod
// project is ready at once; a managed one (with repository) is provisioning:
// its credentials Secret is written first, then its row, steps and
// provisioning job in one transaction (the Secret is removed again if that
// fails).
func (s *Service) CreateProject(ctx context.Context, who *auth.Principal, in schema.ProjectInput) (*schema.Project, error) {
	if !who.Admin {
		return nil, ErrForbidden
	}
	p, m, err := normalizeProject(in, "", s.defaults)
	if err != nil {
		return nil, err
	}
	err = s.createProject(ctx, p, m, in, nil)
	return p, err
}

// createProject writes p (and, when managed, its Secret first), then runs
// more in the same transaction.
func (s *Service) createProject(ctx context.Context, p *schema.Project, m *store.Managed, in schema.ProjectInput, more func(tx pgx.Tx) error) error {
	id, err := uuid.NewV7()
	if err != nil {
		return err
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	p.ID = id.String()
	p.CallbackSecret = "kcs_" + hex.EncodeToString(secret)
	if m != nil {
		var creds *schema.Credentials
		var secretEnv map[string]string
		if in.Repository != nil {
			creds = in.Repository.Credentials
		}
		if in.Workspace != nil {
			secretEnv = in.Workspace.SecretEnv
		}
		if err := s.workspaces.PutSecret(ctx, p.ID, creds, secretEnv); err != nil {
			return fmt.Errorf("storing the credentials of project %s: %w", p.Name, err)
		}
	}
	err = s.Store.InTx(ctx, func(tx pgx.Tx) error {
		if m == nil {
			if err := store.CreateProject(ctx, tx, p); err != nil {
				return err
			}
		} else {
			if err := store.CreateManagedProject(ctx, tx, p, m, s.defaults.Steps(m.Addons)); err != nil {
				return err
			}
			if err := s.workspaces.ProvisionTx(ctx, tx, p.ID); err != nil {
				return err
			}
		}
		if more != nil {
			return more(tx)
		}
		return nil
	})
	if err != nil && m != nil {
		if derr := s.workspaces.DeleteSecret(context.WithoutCancel(ctx), p.ID); derr != nil {
			s.logger.WarnContext(ctx, "removing the credentials of a project not created", "project_id", p.ID, "error", derr)
		}
	}
	return err
}

// CreateAndBuild creates a project and its first build: afterwards both
// exist or neither does. A managed project's build waits, pending, until
// the project is ready (and fails if provisioning fails).
func (s *Service) CreateAndBuild(ctx context.Context, who *auth.Principal, in schema.CreateAndBuild) (*Accepted, error) {
	if !who.Admin {
		return nil, ErrForbidden
	}
	p, m, perr := normalizeProject(in.Project, "project.", s.defaults)
	serr := ValidateSpec(&in.Build, s.Templates, "build.")
	var v ValidationError
	for _, e := range []error{perr, serr} {
		var ve ValidationError
		if errors.As(e, &ve) {
			v = append(v, ve...)
		} else if e != nil {
			return nil, e
		}
	}
	if p != nil {
		if rule := projectBranchRule(in.Build, p.GitBranch); rule != "" {
			v = append(v, FieldError{Field: "build.branch", Rule: rule})
		}
	}
	if len(v) > 0 {
		return nil, v
	}
	in.Build.Template = in.Build.TemplateName()
	var b *store.Build
	err := s.createProject(ctx, p, m, in.Project, func(tx pgx.Tx) error {
		var err error
		b, err = s.insertBuild(ctx, tx, who, p.ID, in.Build)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Accepted{Build: b, Project: p}, nil
}

// RetireProject (admin) marks a project deleting, cancels its pending and
// running builds and, for a managed project, enqueues the removal of its
// workspace, after which the API answers 404 for it. A bring-your-own-pod
// project's pod is never touched: it is gone from Kiln once its builds are
// cancelled. Its builds' audit rows stay.
func (s *Service) RetireProject(ctx context.Context, who *auth.Principal, id string) (*schema.Project, error) {
	if !who.Admin {
		return nil, ErrForbidden
	}
	if _, err := uuid.Parse(id); err != nil {
		return nil, fmt.Errorf("project %q: %w", id, store.ErrNotFound)
	}
	var p *schema.Project
	err := s.Store.InTx(ctx, func(tx pgx.Tx) error {
		r, err := store.LockProjectRow(ctx, tx, id)
		if err != nil {
			return err
		}
		p = &r.Project
		if p.Status == schema.ProjectDeleting {
			return nil // a second DELETE: already under way
		}
		if err := store.SetProjectStatus(ctx, tx, id, []schema.ProjectStatus{p.Status}, string(schema.ProjectDeleting), "", ""); err != nil {
			return err
		}
		p.Status = schema.ProjectDeleting
		if r.Managed != nil {
			if s.workspaces == nil {
				return fmt.Errorf("project %s is managed and this dispatcher has no cluster to remove it from: %w", p.Name, ErrNotManageable)
			}
			return s.workspaces.RetireTx(ctx, tx, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.statuses.forget(id)
	if err := s.Lifecycle.CancelProject(ctx, id, "project "+p.Name+" is being deleted"); err != nil {
		return nil, err
	}
	if !p.Managed {
		if err := store.SetProjectStatus(ctx, s.Store.Pool, id, []schema.ProjectStatus{schema.ProjectDeleting}, store.StatusDeleted, "", ""); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Cancel cancels a pending or running build the principal may see, through
// the lifecycle (which cancels a pending build's River job in the same
// transaction and wakes the watcher to remove a running one's Job). A
// terminal build returns store.ErrTerminal.
func (s *Service) Cancel(ctx context.Context, who *auth.Principal, buildID, reason string) (*store.Build, error) {
	b, err := s.GetBuild(ctx, who, buildID)
	if err != nil {
		return nil, err
	}
	if reason == "" {
		reason = "cancelled by " + who.Name
	}
	return s.Lifecycle.Cancel(ctx, b.ID, reason)
}

// GetBuild returns a build the principal may see; others are ErrNotFound.
func (s *Service) GetBuild(ctx context.Context, who *auth.Principal, id string) (*store.Build, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, fmt.Errorf("build %q: %w", id, store.ErrNotFound)
	}
	b, err := store.GetBuild(ctx, s.Store.Pool, id)
	if err != nil {
		return nil, err
	}
	if !who.CanSee(b.ProjectID) {
		return nil, fmt.Errorf("build %s: %w", id, store.ErrNotFound)
	}
	return b, nil
}

// GetProject returns a project the principal may see, by id; others are ErrNotFound.
func (s *Service) GetProject(ctx context.Context, who *auth.Principal, id string) (*schema.Project, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, fmt.Errorf("project %q: %w", id, store.ErrNotFound)
	}
	if !who.CanSee(id) {
		return nil, fmt.Errorf("project %s: %w", id, store.ErrNotFound)
	}
	return store.GetProject(ctx, s.Store.Pool, id)
}

// ProjectSpend returns what p's (from GetProject) builds spent this
// calendar month (UTC).
func (s *Service) ProjectSpend(ctx context.Context, p *schema.Project) (*schema.ProjectSpend, error) {
	spend, err := store.ProjectSpend(ctx, s.Store.Pool, p.ID, s.now())
	if err != nil {
		return nil, err
	}
	return &spend, nil
}

// GetProjectByName is GetProject by name.
func (s *Service) GetProjectByName(ctx context.Context, who *auth.Principal, name string) (*schema.Project, error) {
	p, err := store.GetProjectByName(ctx, s.Store.Pool, name)
	if err != nil {
		return nil, err
	}
	if !who.CanSee(p.ID) {
		return nil, fmt.Errorf("project %s: %w", name, store.ErrNotFound)
	}
	return p, nil
}
