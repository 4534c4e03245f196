package workspace

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

const (
	// ContainerName is the main container of the workspace pod, the one the
	// runner execs the agent and git in.
	ContainerName = "workspace"
	// CloneContainerName is the init container that clones the repository.
	CloneContainerName = "clone"
	// Workdir is where the clone is: in the emptyDir "workspace" mounted at
	// WorkspaceDir.
	Workdir      = "/workspace/repo"
	WorkspaceDir = "/workspace"
	// Home is HOME in the workspace (an emptyDir "home"): the agent's
	// sessions live there.
	Home = "/home/kiln"
	// RunnerClusterRole is the default ClusterRole the runner's RoleBinding
	// refers to (deploy/base/rbac/dispatcher.yaml): pods get, pods/exec.
	RunnerClusterRole = "kiln-runner-exec"
	// RunnerBindingName is the name of the runner's RoleBinding in the
	// project namespace (so one managed project per namespace).
	RunnerBindingName = "kiln-runner"
	// DefaultImage is the default workspace image (deploy/docker/Dockerfile.workspace).
	DefaultImage = "kilnbuild/kiln-workspace:latest"
	// DefaultRunnerNamespace and DefaultRunnerServiceAccount are the
	// runner's identity when a Spec names none.
	DefaultRunnerNamespace      = "kiln-builds"
	DefaultRunnerServiceAccount = "kiln-runner"
	// UID is the workspace user's uid and gid (the image's user kiln).
	UID = 1000
)

// Labels and annotations of every object a Manager creates. LabelProject
// holds the project id (the build Jobs' kiln.dev/project holds the project
// name: jobtemplates.LabelProject; these objects are not build objects).
const (
	LabelManagedBy        = jobtemplates.LabelManagedBy
	ManagedBy             = jobtemplates.ManagedBy
	LabelProject          = "kiln.dev/project"
	LabelName             = "app.kubernetes.io/name"
	LabelInstance         = "app.kubernetes.io/instance"
	LabelComponent        = "app.kubernetes.io/component"
	AnnotationProjectName = "kiln.dev/project-name"
	// AppName is the app.kubernetes.io/name of every workspace object.
	AppName = "kiln-workspace"
)

// Environment of the clone init container.
const (
	EnvRepoURL    = "KILN_REPO_URL"
	EnvRepoBranch = "KILN_REPO_BRANCH"
)

// Spec is everything the objects are built from.
type Spec struct {
	ProjectID, ProjectName string
	// Namespace is the project's namespace.
	Namespace string
	// Name is the base name: StatefulSet Name, pod Name+"-0",
	// ServiceAccount Name, Secrets Name+"-env" and Name+"-git".
	Name  string
	Image string // default DefaultImage
	// Env is the plain environment of the workspace container (not HOME).
	Env       map[string]string
	Resources corev1.ResourceRequirements
	// RepoURL and Branch: what the clone init container clones. The URL
	// carries no credentials.
	RepoURL, Branch string
	// Credentials reach a private repository; nil: public.
	Credentials *schema.Credentials
	// RunnerNamespace/RunnerServiceAccount is the subject of the runner's
	// RoleBinding (default DefaultRunnerNamespace/DefaultRunnerServiceAccount).
	RunnerNamespace, RunnerServiceAccount string
	// RunnerClusterRole is what that RoleBinding grants (default RunnerClusterRole).
	RunnerClusterRole string
}

// Set is every object of a workspace, as Objects builds them.
type Set struct {
	Namespace      *corev1.Namespace
	ServiceAccount *corev1.ServiceAccount
	// EnvSecret has no data here: EnsureSecrets and SetEnv fill it.
	EnvSecret *corev1.Secret
	// GitSecret is nil without credentials.
	GitSecret     *corev1.Secret
	StatefulSet   *appsv1.StatefulSet
	RunnerBinding *rbacv1.RoleBinding
}

// PodName is the workspace pod's name: Name+"-0".
func PodName(s Spec) string { return s.Name + "-0" }

// EnvSecretName is the Secret holding secret_env and the add-ons' URLs (keys
// are variable names), the main container's envFrom.
func EnvSecretName(s Spec) string { return s.Name + "-env" }

// GitSecretName is the Secret holding the repository credentials, mounted
// only into the clone init container.
func GitSecretName(s Spec) string { return s.Name + "-git" }

// Labels are the labels of every object of the workspace.
func Labels(s Spec) map[string]string {
	return map[string]string{
		LabelManagedBy: ManagedBy,
		LabelProject:   jobtemplates.LabelValue(s.ProjectID),
		LabelName:      AppName,
		LabelInstance:  s.Name,
	}
}

// selectorLabels select the workspace pod (and, with LabelManagedBy and
// LabelProject alone, every object of the project: Leftovers).
func selectorLabels(s Spec) map[string]string {
	return map[string]string{LabelManagedBy: ManagedBy, LabelProject: jobtemplates.LabelValue(s.ProjectID)}
}

// withDefaults fills the Spec's defaults.
func withDefaults(s Spec) Spec {
	s.Image = cmp.Or(s.Image, DefaultImage)
	s.RunnerNamespace = cmp.Or(s.RunnerNamespace, DefaultRunnerNamespace)
	s.RunnerServiceAccount = cmp.Or(s.RunnerServiceAccount, DefaultRunnerServiceAccount)
	s.RunnerClusterRole = cmp.Or(s.RunnerClusterRole, RunnerClusterRole)
	return s
}

// envName is what a workspace variable may be called (a shell can read it).
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidEnvName reports whether name may be a workspace variable.
func ValidEnvName(name string) bool { return envName.MatchString(name) }

func validate(s Spec) error {
	var errs []error
	if s.ProjectID == "" {
		errs = append(errs, errors.New("project id: required"))
	}
	for what, v := range map[string]string{"namespace": s.Namespace, "runner namespace": s.RunnerNamespace} {
		for _, m := range validation.IsDNS1123Label(v) {
			errs = append(errs, fmt.Errorf("%s %q: %s", what, v, m))
		}
	}
	// The pod name (Name-0) must be a label; the StatefulSet controller adds
	// a controller-revision-hash label of Name-<10 chars>, so leave room.
	if len(s.Name) > 52 {
		errs = append(errs, fmt.Errorf("name %q: at most 52 characters", s.Name))
	}
	for _, m := range validation.IsDNS1123Label(s.Name) {
		errs = append(errs, fmt.Errorf("name %q: %s", s.Name, m))
	}
	if s.RepoURL == "" {
		errs = append(errs, errors.New("repository url: required"))
	}
	if s.Branch == "" {
		errs = append(errs, errors.New("repository branch: required"))
	}
	for k := range s.Env {
		if !ValidEnvName(k) {
			errs = append(errs, fmt.Errorf("env %q: not a variable name", k))
		}
		if k == "HOME" {
			errs = append(errs, errors.New("env HOME: set by the workspace"))
		}
	}
	if c := s.Credentials; c != nil {
		switch c.Kind() {
		case schema.CredentialsSSH:
			if c.KnownHosts == "" {
				errs = append(errs, errors.New("credentials: known_hosts required with ssh_private_key"))
			}
		case schema.CredentialsHTTPS:
		default:
			errs = append(errs, errors.New("credentials: a token or an ssh_private_key"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("workspace spec: %w", err)
	}
	return nil
}

// Objects builds every object of the workspace. It has no side effects.
func Objects(s Spec) (Set, error) {
	s = withDefaults(s)
	if err := validate(s); err != nil {
		return Set{}, err
	}
	meta := func(name, component string) metav1.ObjectMeta {
		l := Labels(s)
		l[LabelComponent] = component
		return metav1.ObjectMeta{Name: name, Namespace: s.Namespace, Labels: l,
			Annotations: map[string]string{AnnotationProjectName: s.ProjectName}}
	}
	nsMeta := meta(s.Namespace, "namespace")
	nsMeta.Namespace = ""
	// The workspace pod meets the restricted Pod Security Standard.
	nsMeta.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	set := Set{
		Namespace: &corev1.Namespace{TypeMeta: typeMeta("v1", "Namespace"), ObjectMeta: nsMeta},
		ServiceAccount: &corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(s.Name, "workspace"),
			AutomountServiceAccountToken: ptr.To(false)},
		EnvSecret: &corev1.Secret{TypeMeta: typeMeta("v1", "Secret"), ObjectMeta: meta(EnvSecretName(s), "env"),
			Type: corev1.SecretTypeOpaque},
		RunnerBinding: &rbacv1.RoleBinding{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"),
			ObjectMeta: meta(RunnerBindingName, "runner-access"),
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: s.RunnerClusterRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: s.RunnerServiceAccount, Namespace: s.RunnerNamespace}},
		},
	}
	if data := gitSecretData(s.Credentials); data != nil {
		set.GitSecret = &corev1.Secret{TypeMeta: typeMeta("v1", "Secret"), ObjectMeta: meta(GitSecretName(s), "git-credentials"),
			Type: corev1.SecretTypeOpaque, Data: data}
	}
	set.StatefulSet = statefulSet(s, meta(s.Name, "workspace"), set.GitSecret != nil)
	return set, nil
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

// gitSecretData is the git Secret's data, keyed as the build Jobs' project
// Secret is (jobtemplates.SecretKey*); nil without credentials.
func gitSecretData(c *schema.Credentials) map[string][]byte {
	switch c.Kind() {
	case schema.CredentialsHTTPS:
		d := map[string][]byte{jobtemplates.SecretKeyGitToken: []byte(c.Token)}
		if c.Username != "" {
			d[jobtemplates.SecretKeyGitUsername] = []byte(c.Username)
		}
		return d
	case schema.CredentialsSSH:
		return map[string][]byte{
			jobtemplates.SecretKeySSHKey:     []byte(c.SSHPrivateKey),
			jobtemplates.SecretKeyKnownHosts: []byte(c.KnownHosts),
		}
	}
	return nil
}

// cloneScript is the clone init container's fixed script. The URL and branch
// come from the environment, never from the script's text. It clones only
// when Workdir is not a repository yet (a restarted pod keeps its emptyDir),
// into a scratch directory renamed into place, so a clone cut short is never
// taken for a finished one. `git -c` before the subcommand is not written
// into .git/config, so the credential helper (which prints the token from the
// mounted file to git on its stdin, never through argv) is used for this
// clone only and the remote URL stays credential-free.
var cloneScript = fmt.Sprintf(`set -eu
dest=%[1]s
if [ -d "$dest/.git" ]; then
  echo "kiln: $dest is already a clone"
  exit 0
fi
creds=%[2]s
tmp=%[3]s/.kiln-clone
rm -rf "$tmp"
if [ -f "$creds/%[4]s" ]; then
  export GIT_SSH_COMMAND="ssh -i $creds/%[4]s -o IdentitiesOnly=yes -o UserKnownHostsFile=$creds/%[5]s -o StrictHostKeyChecking=yes"
fi
git -c credential.helper= \
  -c credential.helper='!f() { test "$1" = get || exit 0; test -f %[2]s/%[6]s || exit 0; u=git; if [ -s %[2]s/%[7]s ]; then u=$(cat %[2]s/%[7]s); fi; echo "username=$u"; echo "password=$(cat %[2]s/%[6]s)"; }; f' \
  clone --quiet --branch "$KILN_REPO_BRANCH" --single-branch -- "$KILN_REPO_URL" "$tmp"
rm -rf "$dest"
mv "$tmp" "$dest"
echo "kiln: cloned $KILN_REPO_BRANCH into $dest"
`, Workdir, jobtemplates.GitCredentialsDir, WorkspaceDir,
	jobtemplates.SecretKeySSHKey, jobtemplates.SecretKeyKnownHosts, jobtemplates.SecretKeyGitToken, jobtemplates.SecretKeyGitUsername)

// CloneScript is the clone init container's script (for docs and tests).
func CloneScript() string { return cloneScript }

func statefulSet(s Spec, meta metav1.ObjectMeta, withGit bool) *appsv1.StatefulSet {
	podLabels := maps.Clone(meta.Labels)
	restricted := &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	workspaceMount := corev1.VolumeMount{Name: "workspace", MountPath: WorkspaceDir}
	homeMount := corev1.VolumeMount{Name: "home", MountPath: Home}

	clone := corev1.Container{
		Name:    CloneContainerName,
		Image:   s.Image,
		Command: []string{"sh", "-c", cloneScript},
		Env: []corev1.EnvVar{
			{Name: EnvRepoURL, Value: s.RepoURL},
			{Name: EnvRepoBranch, Value: s.Branch},
			{Name: "HOME", Value: Home},
			{Name: "GIT_TERMINAL_PROMPT", Value: "0"},
		},
		Resources:                s.Resources,
		VolumeMounts:             []corev1.VolumeMount{workspaceMount, homeMount},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext:          restricted,
	}
	volumes := []corev1.Volume{
		{Name: "workspace", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "home", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	if withGit {
		clone.VolumeMounts = append(clone.VolumeMounts, corev1.VolumeMount{Name: "git-credentials",
			MountPath: jobtemplates.GitCredentialsDir, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: "git-credentials", VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: GitSecretName(s), DefaultMode: ptr.To[int32](0o400)}}})
	}

	env := make([]corev1.EnvVar, 0, len(s.Env)+1)
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		env = append(env, corev1.EnvVar{Name: k, Value: s.Env[k]})
	}
	env = append(env, corev1.EnvVar{Name: "HOME", Value: Home})
	main := corev1.Container{
		Name:         ContainerName,
		Image:        s.Image,
		Command:      []string{"sleep", "infinity"},
		WorkingDir:   Workdir,
		EnvFrom:      []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: EnvSecretName(s)}}}},
		Env:          env,
		Resources:    s.Resources,
		VolumeMounts: []corev1.VolumeMount{workspaceMount, homeMount},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-d", Workdir + "/.git"}}},
			PeriodSeconds: 5, TimeoutSeconds: 3, FailureThreshold: 3,
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext:          restricted,
	}

	return &appsv1.StatefulSet{
		TypeMeta:   typeMeta("apps/v1", "StatefulSet"),
		ObjectMeta: meta,
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{
				LabelManagedBy: ManagedBy, LabelProject: podLabels[LabelProject], LabelInstance: s.Name}},
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: maps.Clone(meta.Annotations)},
				Spec: corev1.PodSpec{
					ServiceAccountName:            s.Name,
					AutomountServiceAccountToken:  ptr.To(false),
					EnableServiceLinks:            ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To[int64](UID),
						RunAsGroup:     ptr.To[int64](UID),
						FSGroup:        ptr.To[int64](UID),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					InitContainers: []corev1.Container{clone},
					Containers:     []corev1.Container{main},
					Volumes:        volumes,
				},
			},
		},
	}
}
