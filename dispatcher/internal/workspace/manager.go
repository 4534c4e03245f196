package workspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// ErrNotOurs: an object of the name Kiln wants exists without Kiln's labels
// for this project. It is neither adopted, changed nor deleted.
var ErrNotOurs = errors.New("exists and is not this Kiln project's")

// Manager creates, checks and deletes a workspace's objects. Each method is
// one idempotent step; it holds no state between calls.
type Manager struct {
	client kubernetes.Interface
	logger *slog.Logger
}

// NewManager returns a Manager acting through client (a nil logger discards).
func NewManager(client kubernetes.Interface, logger *slog.Logger) *Manager {
	if client == nil {
		panic("workspace.NewManager: nil client")
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Manager{client: client, logger: logger.With("component", "workspace")}
}

// ours reports whether obj carries Kiln's labels for s's project.
func ours(s Spec, obj metav1.Object) bool {
	l := obj.GetLabels()
	return l[LabelManagedBy] == ManagedBy && l[LabelProject] == Labels(s)[LabelProject]
}

func notOurs(kind, ns, name string) error {
	if ns == "" {
		return fmt.Errorf("%s %s: %w", kind, name, ErrNotOurs)
	}
	return fmt.Errorf("%s %s/%s: %w", kind, ns, name, ErrNotOurs)
}

// ensure creates an object; AlreadyExists of one of ours is done (existing
// is returned for the caller to converge), of another's is ErrNotOurs.
func ensure[T metav1.Object](ctx context.Context, s Spec, kind string, want T,
	create func(context.Context, T, metav1.CreateOptions) (T, error),
	get func(context.Context, string, metav1.GetOptions) (T, error),
) (existing T, created bool, err error) {
	var zero T
	_, err = create(ctx, want, metav1.CreateOptions{})
	if err == nil {
		return zero, true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return zero, false, fmt.Errorf("creating %s %s/%s: %w", kind, want.GetNamespace(), want.GetName(), err)
	}
	got, err := get(ctx, want.GetName(), metav1.GetOptions{})
	if err != nil {
		return zero, false, fmt.Errorf("reading %s %s/%s: %w", kind, want.GetNamespace(), want.GetName(), err)
	}
	if !ours(s, got) {
		return zero, false, notOurs(kind, want.GetNamespace(), want.GetName())
	}
	return got, false, nil
}

// EnsureNamespace creates the project's namespace. One that exists is used
// if it is this project's (kiln.dev/project) or a Kiln namespace with no
// project (app.kubernetes.io/managed-by: kiln alone: made by an operator,
// and never deleted by Kiln); otherwise ErrNotOurs.
func (m *Manager) EnsureNamespace(ctx context.Context, s Spec) error {
	set, err := Objects(s)
	if err != nil {
		return err
	}
	_, err = m.client.CoreV1().Namespaces().Create(ctx, set.Namespace, metav1.CreateOptions{})
	if err == nil {
		m.logger.InfoContext(ctx, "namespace created", "project_id", s.ProjectID, "namespace", s.Namespace)
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", s.Namespace, err)
	}
	ns, err := m.client.CoreV1().Namespaces().Get(ctx, s.Namespace, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading namespace %s: %w", s.Namespace, err)
	}
	l := ns.Labels
	switch project, has := l[LabelProject]; {
	case l[LabelManagedBy] != ManagedBy, has && project != Labels(s)[LabelProject]:
		return notOurs("namespace", "", s.Namespace)
	case ns.DeletionTimestamp != nil:
		return fmt.Errorf("namespace %s is being deleted", s.Namespace)
	case !has:
		m.logger.InfoContext(ctx, "using a pre-existing Kiln namespace", "project_id", s.ProjectID, "namespace", s.Namespace)
	}
	return nil
}

// EnsureServiceAccount creates the workspace's ServiceAccount (no automounted token).
func (m *Manager) EnsureServiceAccount(ctx context.Context, s Spec) error {
	set, err := Objects(s)
	if err != nil {
		return err
	}
	c := m.client.CoreV1().ServiceAccounts(s.Namespace)
	_, _, err = ensure(ctx, s, "serviceaccount", set.ServiceAccount, c.Create, c.Get)
	return err
}

// EnsureSecrets creates the env Secret with secretEnv (keys are variable
// names) and, with credentials, the git Secret. Existing ones of ours are
// converged: secretEnv's keys are set in the env Secret (other keys, such as
// add-on URLs SetEnv wrote, are kept) and the git Secret gets the Spec's
// credentials.
func (m *Manager) EnsureSecrets(ctx context.Context, s Spec, secretEnv map[string]string) error {
	set, err := Objects(s)
	if err != nil {
		return err
	}
	for k := range secretEnv {
		if !ValidEnvName(k) {
			return fmt.Errorf("secret_env %q: not a variable name", k)
		}
	}
	c := m.client.CoreV1().Secrets(s.Namespace)
	want := set.EnvSecret.DeepCopy()
	want.Data = toData(secretEnv)
	if existing, created, err := ensure(ctx, s, "secret", want, c.Create, c.Get); err != nil {
		return err
	} else if !created {
		if err := m.mergeSecret(ctx, s, existing.Name, secretEnv); err != nil {
			return err
		}
	}
	if set.GitSecret == nil {
		return nil
	}
	existing, created, err := ensure(ctx, s, "secret", set.GitSecret, c.Create, c.Get)
	if err != nil || created || maps.EqualFunc(existing.Data, set.GitSecret.Data, slices.Equal) {
		return err
	}
	existing.Data = set.GitSecret.Data
	if _, err := c.Update(ctx, existing, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating secret %s/%s: %w", s.Namespace, existing.Name, err)
	}
	return nil
}

// SetEnv merges env (add-on variables such as DATABASE_URL) into the env
// Secret. The workspace pod reads it when its container starts, so call it
// before EnsureStatefulSet.
func (m *Manager) SetEnv(ctx context.Context, s Spec, env map[string]string) error {
	if _, err := Objects(s); err != nil {
		return err
	}
	for k := range env {
		if !ValidEnvName(k) {
			return fmt.Errorf("env %q: not a variable name", k)
		}
	}
	return m.mergeSecret(ctx, s, EnvSecretName(s), env)
}

func (m *Manager) mergeSecret(ctx context.Context, s Spec, name string, env map[string]string) error {
	c := m.client.CoreV1().Secrets(s.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sec, err := c.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !ours(s, sec) {
			return notOurs("secret", s.Namespace, name)
		}
		changed := false
		for k, v := range env {
			if string(sec.Data[k]) != v {
				if sec.Data == nil {
					sec.Data = map[string][]byte{}
				}
				sec.Data[k], changed = []byte(v), true
			}
		}
		if !changed {
			return nil
		}
		_, err = c.Update(ctx, sec, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !errors.Is(err, ErrNotOurs) {
		return fmt.Errorf("setting variables in secret %s/%s: %w", s.Namespace, name, err)
	}
	return err
}

func toData(env map[string]string) map[string][]byte {
	d := make(map[string][]byte, len(env))
	for k, v := range env {
		d[k] = []byte(v)
	}
	return d
}

// EnsureStatefulSet creates the workspace's StatefulSet (one replica, pod
// PodName(s)). An existing one of ours is left as it is.
func (m *Manager) EnsureStatefulSet(ctx context.Context, s Spec) error {
	set, err := Objects(s)
	if err != nil {
		return err
	}
	c := m.client.AppsV1().StatefulSets(s.Namespace)
	_, _, err = ensure(ctx, s, "statefulset", set.StatefulSet, c.Create, c.Get)
	return err
}

// EnsureRunnerAccess creates the RoleBinding RunnerBindingName that grants
// the runner's ServiceAccount the ClusterRole RunnerClusterRole (pods get,
// pods/exec) in the project namespace only.
func (m *Manager) EnsureRunnerAccess(ctx context.Context, s Spec) error {
	set, err := Objects(s)
	if err != nil {
		return err
	}
	c := m.client.RbacV1().RoleBindings(s.Namespace)
	_, _, err = ensure(ctx, s, "rolebinding", set.RunnerBinding, c.Create, c.Get)
	return err
}

// remove deletes an object of ours: gone once it is NotFound. An object of
// the name that is not ours is left alone and reported gone (nothing of
// ours is left); one being deleted is not gone yet.
func remove[T metav1.Object](ctx context.Context, s Spec, kind, ns, name string,
	get func(context.Context, string, metav1.GetOptions) (T, error),
	del func(context.Context, string, metav1.DeleteOptions) error,
) (bool, error) {
	what := kind + " " + name
	if ns != "" {
		what = kind + " " + ns + "/" + name
	}
	obj, err := get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("reading %s: %w", what, err)
	case !ours(s, obj):
		return true, nil
	case obj.GetDeletionTimestamp() != nil:
		return false, nil
	}
	uid := obj.GetUID()
	err = del(ctx, name, metav1.DeleteOptions{
		Preconditions:     &metav1.Preconditions{UID: &uid},
		PropagationPolicy: ptr.To(metav1.DeletePropagationBackground),
	})
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case apierrors.IsConflict(err): // replaced meanwhile: look again next time
		return false, nil
	case err != nil:
		return false, fmt.Errorf("deleting %s: %w", what, err)
	}
	if _, err := get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return true, nil
	}
	return false, nil
}

// DeleteRunnerAccess deletes the runner's RoleBinding.
func (m *Manager) DeleteRunnerAccess(ctx context.Context, s Spec) (bool, error) {
	c := m.client.RbacV1().RoleBindings(s.Namespace)
	return remove(ctx, s, "rolebinding", s.Namespace, RunnerBindingName, c.Get, c.Delete)
}

// DeleteStatefulSet deletes the StatefulSet; gone when it and its pod are
// gone (the garbage collector deletes the pod after the StatefulSet).
func (m *Manager) DeleteStatefulSet(ctx context.Context, s Spec) (bool, error) {
	c := m.client.AppsV1().StatefulSets(s.Namespace)
	gone, err := remove(ctx, s, "statefulset", s.Namespace, s.Name, c.Get, c.Delete)
	if err != nil || !gone {
		return false, err
	}
	pod, err := m.client.CoreV1().Pods(s.Namespace).Get(ctx, PodName(s), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("reading pod %s/%s: %w", s.Namespace, PodName(s), err)
	}
	return !ours(s, pod), nil
}

// DeleteSecrets deletes the env and git Secrets.
func (m *Manager) DeleteSecrets(ctx context.Context, s Spec) (bool, error) {
	c := m.client.CoreV1().Secrets(s.Namespace)
	envGone, err := remove(ctx, s, "secret", s.Namespace, EnvSecretName(s), c.Get, c.Delete)
	if err != nil {
		return false, err
	}
	gitGone, err := remove(ctx, s, "secret", s.Namespace, GitSecretName(s), c.Get, c.Delete)
	return envGone && gitGone, err
}

// DeleteServiceAccount deletes the workspace's ServiceAccount.
func (m *Manager) DeleteServiceAccount(ctx context.Context, s Spec) (bool, error) {
	c := m.client.CoreV1().ServiceAccounts(s.Namespace)
	return remove(ctx, s, "serviceaccount", s.Namespace, s.Name, c.Get, c.Delete)
}

// DeleteNamespace deletes the namespace if it is this project's
// (kiln.dev/project); a pre-existing Kiln namespace, or anyone else's, is
// left (gone is true). Gone once the namespace controller has emptied and
// removed it.
func (m *Manager) DeleteNamespace(ctx context.Context, s Spec) (bool, error) {
	c := m.client.CoreV1().Namespaces()
	return remove(ctx, s, "namespace", "", s.Namespace, c.Get, c.Delete)
}

// Leftovers lists every object of the project that still exists, as
// "Kind/namespace/name" ("Namespace/name" for the namespace): the namespace
// if it is the project's, and the labelled ServiceAccounts, Secrets,
// StatefulSets, RoleBindings and pods in it. Empty once the Deletes are done.
func (m *Manager) Leftovers(ctx context.Context, s Spec) ([]string, error) {
	var out []string
	ns, err := m.client.CoreV1().Namespaces().Get(ctx, s.Namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading namespace %s: %w", s.Namespace, err)
	case ours(s, ns):
		out = append(out, "Namespace/"+ns.Name)
	}
	opts := metav1.ListOptions{LabelSelector: labels.SelectorFromSet(selectorLabels(s)).String()}
	core, name := m.client.CoreV1(), s.Namespace
	lists := []struct {
		kind string
		list func() (runtime.Object, error)
	}{
		{"ServiceAccount", func() (runtime.Object, error) { return core.ServiceAccounts(name).List(ctx, opts) }},
		{"Secret", func() (runtime.Object, error) { return core.Secrets(name).List(ctx, opts) }},
		{"StatefulSet", func() (runtime.Object, error) { return m.client.AppsV1().StatefulSets(name).List(ctx, opts) }},
		{"RoleBinding", func() (runtime.Object, error) { return m.client.RbacV1().RoleBindings(name).List(ctx, opts) }},
		{"Pod", func() (runtime.Object, error) { return core.Pods(name).List(ctx, opts) }},
	}
	for _, l := range lists {
		obj, err := l.list()
		if err != nil {
			return nil, fmt.Errorf("listing %ss in %s: %w", strings.ToLower(l.kind), name, err)
		}
		items, err := apimeta.ExtractList(obj)
		if err != nil {
			return nil, fmt.Errorf("listing %ss in %s: %w", strings.ToLower(l.kind), name, err)
		}
		for _, it := range items {
			acc, err := apimeta.Accessor(it)
			if err != nil {
				return nil, err
			}
			out = append(out, l.kind+"/"+name+"/"+acc.GetName())
		}
	}
	return out, nil
}
