package jobtemplates

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/schema"
)

// Environment of the jobrunner container: the contract between Render and the runner.
const (
	EnvDispatcherURL = "KILN_DISPATCHER_URL"
	EnvBuildID       = "KILN_BUILD_ID"
	EnvProjectID     = "KILN_PROJECT_ID"
	EnvTemplate      = "KILN_TEMPLATE"
	// EnvRunnerToken comes from the build's Secret (key SecretKeyRunnerToken).
	EnvRunnerToken = "KILN_RUNNER_TOKEN"
	// EnvRunnerConfig holds the RunnerConfig as JSON; ParseRunnerConfig reads it.
	EnvRunnerConfig = "KILN_RUNNER_CONFIG"
	// EnvGitURL is the managed project's repository URL, set beside
	// EnvGitCredentials: the runner offers an HTTPS token only to that
	// URL's host, whatever the workspace's .git/config says.
	EnvGitURL = "KILN_GIT_URL"
)

// gitCredentialsVolume is the volume of the project's credentials Secret.
const gitCredentialsVolume = "git-credentials"

// The runner's identity: the container runs as this non-root user and group.
const (
	RunAsUser  int64 = 65532
	RunAsGroup int64 = 65532
)

// tmpDir is an emptyDir: the root filesystem is read-only.
const tmpDir = "/tmp"

// RunnerConfig is what the runner needs from the template, passed in
// EnvRunnerConfig. The spec's prompt, variables and the project's target are
// fetched from the dispatcher, not passed here.
type RunnerConfig struct {
	Template       string    `json:"template"`
	Agent          Agent     `json:"agent"`
	Artifacts      Artifacts `json:"artifacts"`
	PromptPreamble string    `json:"promptPreamble,omitempty"`
	// DeadlineSeconds is the Job's activeDeadlineSeconds; GracePeriodSeconds
	// is how long the runner has between SIGTERM and SIGKILL.
	DeadlineSeconds    int64 `json:"deadlineSeconds"`
	GracePeriodSeconds int64 `json:"gracePeriodSeconds"`
}

// ParseRunnerConfig decodes the value of EnvRunnerConfig.
func ParseRunnerConfig(s string) (RunnerConfig, error) {
	var c RunnerConfig
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return RunnerConfig{}, fmt.Errorf("parsing %s: %w", EnvRunnerConfig, err)
	}
	return c, nil
}

// RenderInput is everything Render needs. Namespace, DispatcherURL and Image
// come from the dispatcher's configuration; RunnerToken is minted per build.
type RenderInput struct {
	Build    schema.Build   // ID required; Spec.TemplateName() must be Template.Name
	Project  schema.Project // ID and Name label the Job
	Template *Template      // a validated template, e.g. from Catalog.Get

	// Namespace is where the Job and Secret are created (required).
	Namespace string
	// DispatcherURL is the dispatcher's base URL as seen from the Job's pod
	// (required, absolute http or https).
	DispatcherURL string
	// RunnerToken is the build's runner token (required). It goes only into
	// the Secret; the Job refers to it with a secretKeyRef.
	RunnerToken string
	// Image overrides the template's runner image when set.
	Image string
}

// ErrInvalidInput is wrapped by Render's errors about its input.
var ErrInvalidInput = errors.New("invalid render input")

// Render turns a build into its Job and the Secret holding its runner token.
// It is pure: same input, same output, no I/O. Create the Job first, then the
// Secret with OwnedBy(secret, createdJob) so the Secret goes with the Job; the
// kubelet retries the pod's secretKeyRef until the Secret exists.
//
// For a project whose Repository has Credentials, the pod also mounts the
// keys of that kind (and no other key) of the project's Secret,
// ProjectSecretName(project id), read-only with mode 0400 at
// GitCredentialsDir, and the runner gets EnvGitCredentials and EnvGitURL.
// That Secret is the dispatcher's, kept for the project's lifetime; Render
// neither returns nor owns it.
func Render(in RenderInput) (*batchv1.Job, *corev1.Secret, error) {
	if err := in.validate(); err != nil {
		return nil, nil, err
	}
	t := in.Template
	jobName := JobName(in.Build.ID)
	lbls := map[string]string{
		LabelManagedBy: ManagedBy,
		LabelBuildID:   LabelValue(in.Build.ID),
		LabelProject:   LabelValue(in.Project.Name),
		LabelProjectID: LabelValue(in.Project.ID),
		LabelTemplate:  t.Name,
	}
	annotations := map[string]string{
		AnnotationBuildID: in.Build.ID,
		AnnotationProject: in.Project.Name,
	}
	limits, err := t.BuildLimits(in.Build.Spec)
	if err != nil {
		return nil, nil, err
	}
	agent := t.Agent
	agent.MaxTurns, agent.MaxBudgetUSD = limits.MaxTurns, limits.MaxBudgetUSD
	cfg, err := json.Marshal(RunnerConfig{
		Template:           t.Name,
		Agent:              agent,
		Artifacts:          t.Artifacts,
		PromptPreamble:     t.PromptPreamble,
		DeadlineSeconds:    t.ActiveDeadlineSeconds,
		GracePeriodSeconds: t.TerminationGracePeriodSeconds,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("encoding runner config: %w", err)
	}
	secretName := SecretName(in.Build.ID)

	container := corev1.Container{
		Name:            ContainerName,
		Image:           cmp.Or(in.Image, t.Runner.Image),
		ImagePullPolicy: t.Runner.PullPolicy,
		Env: []corev1.EnvVar{
			{Name: EnvDispatcherURL, Value: in.DispatcherURL},
			{Name: EnvBuildID, Value: in.Build.ID},
			{Name: EnvProjectID, Value: in.Project.ID},
			{Name: EnvTemplate, Value: t.Name},
			{Name: EnvRunnerToken, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: secretName},
				Key:                  SecretKeyRunnerToken,
			}}},
			{Name: EnvRunnerConfig, Value: string(cfg)},
			{Name: "HOME", Value: tmpDir},
			{Name: "TMPDIR", Value: tmpDir},
		},
		Resources:                *t.Resources.DeepCopy(),
		VolumeMounts:             []corev1.VolumeMount{{Name: "tmp", MountPath: tmpDir}},
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To(RunAsUser),
			RunAsGroup:               ptr.To(RunAsGroup),
			AllowPrivilegeEscalation: ptr.To(false),
			Privileged:               ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	volumes := []corev1.Volume{{
		Name:         "tmp",
		VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
	}}
	if keys := gitCredentialKeys(in.Project.Repository); keys != nil {
		items := make([]corev1.KeyToPath, len(keys))
		for i, k := range keys {
			items[i] = corev1.KeyToPath{Key: k, Path: k}
		}
		// Only the keys of the repository's kind: never the project's secret_env.
		volumes = append(volumes, corev1.Volume{Name: gitCredentialsVolume, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{
				SecretName:  ProjectSecretName(in.Project.ID),
				Items:       items,
				DefaultMode: ptr.To[int32](0o400),
			}}})
		container.VolumeMounts = append(container.VolumeMounts,
			corev1.VolumeMount{Name: gitCredentialsVolume, MountPath: GitCredentialsDir, ReadOnly: true})
		container.Env = append(container.Env,
			corev1.EnvVar{Name: EnvGitCredentials, Value: GitCredentialsDir},
			corev1.EnvVar{Name: EnvGitURL, Value: in.Project.Repository.URL})
	}
	var tolerations []corev1.Toleration
	if t.Tolerations != nil {
		tolerations = make([]corev1.Toleration, len(t.Tolerations))
		for i := range t.Tolerations {
			t.Tolerations[i].DeepCopyInto(&tolerations[i])
		}
	}

	job := &batchv1.Job{
		TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        jobName,
			Namespace:   in.Namespace,
			Labels:      maps.Clone(lbls),
			Annotations: maps.Clone(annotations),
		},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr.To[int32](0),
			ActiveDeadlineSeconds:   ptr.To(t.ActiveDeadlineSeconds),
			TTLSecondsAfterFinished: ptr.To(t.TTLSecondsAfterFinished),
			PodReplacementPolicy:    ptr.To(batchv1.Failed),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      maps.Clone(lbls),
					Annotations: maps.Clone(annotations),
				},
				Spec: corev1.PodSpec{
					RestartPolicy:                 corev1.RestartPolicyNever,
					ServiceAccountName:            t.ServiceAccountName,
					AutomountServiceAccountToken:  ptr.To(true),
					EnableServiceLinks:            ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To(t.TerminationGracePeriodSeconds),
					NodeSelector:                  maps.Clone(t.NodeSelector),
					Tolerations:                   tolerations,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To(RunAsUser),
						RunAsGroup:     ptr.To(RunAsGroup),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{container},
					Volumes:    volumes,
				},
			},
		},
	}
	secret := &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        secretName,
			Namespace:   in.Namespace,
			Labels:      maps.Clone(lbls),
			Annotations: maps.Clone(annotations),
		},
		Type:      corev1.SecretTypeOpaque,
		Immutable: ptr.To(true),
		Data:      map[string][]byte{SecretKeyRunnerToken: []byte(in.RunnerToken)},
	}
	return job, secret, nil
}

// gitCredentialKeys are the keys of the project's credentials Secret the
// Job mounts: those of the repository's credential kind; nil for none.
func gitCredentialKeys(r *schema.Repository) []string {
	if r == nil {
		return nil
	}
	switch r.Credentials {
	case schema.CredentialsHTTPS:
		return []string{SecretKeyGitUsername, SecretKeyGitToken}
	case schema.CredentialsSSH:
		return []string{SecretKeySSHKey, SecretKeyKnownHosts}
	}
	return nil
}

func (in RenderInput) validate() error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if in.Build.ID == "" {
		add("build.id: required")
	}
	switch {
	case in.Template == nil:
		add("template: required")
	case in.Template.Name != in.Build.Spec.TemplateName():
		add("template: is %q but the build asks for %q", in.Template.Name, in.Build.Spec.TemplateName())
	default:
		if err := Validate(in.Template); err != nil {
			add("template %s: %v", in.Template.Name, err)
		}
	}
	if in.Namespace == "" {
		add("namespace: required")
	} else if msgs := content.IsDNS1123Label(in.Namespace); len(msgs) > 0 {
		add("namespace: %s", strings.Join(msgs, ", "))
	}
	if u, err := url.Parse(in.DispatcherURL); err != nil || !slices.Contains([]string{"http", "https"}, u.Scheme) || u.Host == "" {
		add("dispatcherURL: must be an absolute http or https URL (got %q)", in.DispatcherURL)
	}
	if in.RunnerToken == "" {
		add("runnerToken: required")
	}
	if r := in.Project.Repository; r != nil {
		switch r.Credentials {
		case "", schema.CredentialsHTTPS, schema.CredentialsSSH:
		default:
			add("project.repository.credentials: must be %q, %q or empty (got %q)", schema.CredentialsHTTPS, schema.CredentialsSSH, r.Credentials)
		}
		if r.Credentials != "" && in.Project.ID == "" {
			add("project.id: required with repository credentials")
		}
	}
	if in.Image != "" && (!imageRef.MatchString(in.Image) || len(in.Image) > 512) {
		add("image: must be an image reference like repo/name:tag (got %q)", in.Image)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidInput, strings.Join(problems, "; "))
	}
	return nil
}

// OwnedBy returns a copy of secret owned by job (controller=false), so that
// deleting the Job, or its TTL expiring, deletes the Secret. job must be the
// created Job: it panics if job has no UID, a programmer error. An existing
// reference to the same Job is replaced, so OwnedBy is idempotent.
func OwnedBy(secret *corev1.Secret, job *batchv1.Job) *corev1.Secret {
	if job.UID == "" {
		panic("jobtemplates.OwnedBy: job has no UID; pass the Job the API server returned")
	}
	s := secret.DeepCopy()
	ref := metav1.OwnerReference{
		APIVersion: batchv1.SchemeGroupVersion.String(),
		Kind:       "Job",
		Name:       job.Name,
		UID:        job.UID,
		Controller: ptr.To(false),
	}
	s.OwnerReferences = slices.DeleteFunc(s.OwnerReferences, func(r metav1.OwnerReference) bool { return r.UID == job.UID })
	s.OwnerReferences = append(s.OwnerReferences, ref)
	return s
}
