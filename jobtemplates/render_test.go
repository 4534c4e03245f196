package jobtemplates

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/schema"
)

const (
	testBuildID   = "0b9f3c4e-6a51-4f2e-9d3b-5c1f7e2a8d10"
	testProjectID = "7d4c2b1a-1111-4222-8333-944455556666"
	testToken     = "kiln_rt_s3cr3t-t0ken-value-do-not-leak"
)

// setup returns a valid RenderInput for the embedded default template.
func setup(t *testing.T) RenderInput {
	t.Helper()
	tmpl, ok := Embedded().Get("default")
	require.True(t, ok)
	return RenderInput{
		Build:         schema.Build{ID: testBuildID, ProjectID: testProjectID, Spec: schema.BuildSpec{Prompt: "add a test"}},
		Project:       schema.Project{ID: testProjectID, Name: "web-shop", Namespace: "projects"},
		Template:      tmpl,
		Namespace:     "kiln-builds",
		DispatcherURL: "http://kiln-dispatcher.kiln.svc:8080",
		RunnerToken:   testToken,
	}
}

// wantJob is the Job Render makes from setup's input, written out in full.
func wantJob(t *testing.T) *batchv1.Job {
	t.Helper()
	labels := map[string]string{
		"app.kubernetes.io/managed-by": "kiln",
		"kiln.dev/build-id":            testBuildID,
		"kiln.dev/project":             "web-shop",
		"kiln.dev/project-id":          testProjectID,
		"kiln.dev/template":            "default",
	}
	annotations := map[string]string{"kiln.dev/build-id": testBuildID, "kiln.dev/project": "web-shop"}
	cfg, err := json.Marshal(RunnerConfig{
		Template: "default",
		Agent: Agent{
			Adapter:  "claude-code",
			MaxTurns: 50, MaxBudgetUSD: 5,
			AllowedTools: []string{"Read", "Edit", "Write", "Glob", "Grep",
				"Bash(go build:*)", "Bash(go test:*)", "Bash(go vet:*)", "Bash(go mod tidy:*)", "Bash(gofmt:*)",
				"Bash(git status:*)", "Bash(git diff:*)", "Bash(git log:*)", "Bash(ls:*)"},
			DisallowedTools: []string{"Bash(git commit:*)", "Bash(git push:*)"},
			PermissionMode:  "default",
		},
		Artifacts: Artifacts{MaxBytes: 10 << 20},
		PromptPreamble: "You are working in a git repository checked out in the current directory.\n" +
			"Make the change requested below, keep the code building and its tests passing.\n" +
			"Do not commit, push or change git configuration: that is done for you afterwards.\n",
		DeadlineSeconds:    3600,
		GracePeriodSeconds: 60,
	})
	require.NoError(t, err)
	return &batchv1.Job{
		TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        "kiln-build-" + testBuildID,
			Namespace:   "kiln-builds",
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr.To[int32](0),
			ActiveDeadlineSeconds:   ptr.To[int64](3600),
			TTLSecondsAfterFinished: ptr.To[int32](3600),
			PodReplacementPolicy:    ptr.To(batchv1.Failed),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec: corev1.PodSpec{
					RestartPolicy:                 corev1.RestartPolicyNever,
					ServiceAccountName:            "kiln-runner",
					AutomountServiceAccountToken:  ptr.To(true),
					EnableServiceLinks:            ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To[int64](60),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To[int64](65532),
						RunAsGroup:     ptr.To[int64](65532),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:            "jobrunner",
						Image:           "kilnbuild/kiln-jobrunner:latest",
						ImagePullPolicy: corev1.PullIfNotPresent,
						Env: []corev1.EnvVar{
							{Name: "KILN_DISPATCHER_URL", Value: "http://kiln-dispatcher.kiln.svc:8080"},
							{Name: "KILN_BUILD_ID", Value: testBuildID},
							{Name: "KILN_PROJECT_ID", Value: testProjectID},
							{Name: "KILN_TEMPLATE", Value: "default"},
							{Name: "KILN_RUNNER_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
								LocalObjectReference: corev1.LocalObjectReference{Name: "kiln-build-" + testBuildID + "-token"},
								Key:                  "runner-token",
							}}},
							{Name: "KILN_RUNNER_CONFIG", Value: string(cfg)},
							{Name: "HOME", Value: "/tmp"},
							{Name: "TMPDIR", Value: "/tmp"},
						},
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{
								corev1.ResourceCPU:    resource.MustParse("50m"),
								corev1.ResourceMemory: resource.MustParse("64Mi"),
							},
							Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
						},
						VolumeMounts:             []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
						TerminationMessagePath:   "/dev/termination-log",
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						SecurityContext: &corev1.SecurityContext{
							RunAsNonRoot:             ptr.To(true),
							RunAsUser:                ptr.To[int64](65532),
							RunAsGroup:               ptr.To[int64](65532),
							AllowPrivilegeEscalation: ptr.To(false),
							Privileged:               ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
							SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						},
					}},
					Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			},
		},
	}
}

func wantSecret() *corev1.Secret {
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      "kiln-build-" + testBuildID + "-token",
			Namespace: "kiln-builds",
			Labels: map[string]string{
				"app.kubernetes.io/managed-by": "kiln",
				"kiln.dev/build-id":            testBuildID,
				"kiln.dev/project":             "web-shop",
				"kiln.dev/project-id":          testProjectID,
				"kiln.dev/template":            "default",
			},
			Annotations: map[string]string{"kiln.dev/build-id": testBuildID, "kiln.dev/project": "web-shop"},
		},
		Type:      corev1.SecretTypeOpaque,
		Immutable: ptr.To(true),
		Data:      map[string][]byte{"runner-token": []byte(testToken)},
	}
}

// quantityCmp compares quantities by value, not by their cached string form.
var quantityCmp = cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })

func podSpec(j *batchv1.Job) *corev1.PodSpec { return &j.Spec.Template.Spec }

func setLabel(j *batchv1.Job, k, v string) {
	j.Labels[k] = v
	j.Spec.Template.Labels[k] = v
}

func TestRenderDefault(t *testing.T) {
	t.Parallel()
	job, secret, err := Render(setup(t))
	require.NoError(t, err)
	if d := cmp.Diff(wantJob(t), job, quantityCmp); d != "" {
		t.Errorf("job (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantSecret(), secret); d != "" {
		t.Errorf("secret (-want +got):\n%s", d)
	}
}

func TestRenderOverrides(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(in *RenderInput)
		want func(j *batchv1.Job)
	}{
		{
			name: "image override",
			edit: func(in *RenderInput) { in.Image = "kiln-jobrunner:test" },
			want: func(j *batchv1.Job) { podSpec(j).Containers[0].Image = "kiln-jobrunner:test" },
		},
		{
			name: "template image and pull policy",
			edit: func(in *RenderInput) {
				in.Template.Runner = Runner{Image: "example/runner@sha256:abc", PullPolicy: corev1.PullAlways}
			},
			want: func(j *batchv1.Job) {
				podSpec(j).Containers[0].Image = "example/runner@sha256:abc"
				podSpec(j).Containers[0].ImagePullPolicy = corev1.PullAlways
			},
		},
		{
			name: "resources",
			edit: func(in *RenderInput) {
				in.Template.Resources = corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")},
				}
			},
			want: func(j *batchv1.Job) {
				podSpec(j).Containers[0].Resources = corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1000m")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1024Mi")},
				}
			},
		},
		{
			name: "node selector and tolerations",
			edit: func(in *RenderInput) {
				in.Template.NodeSelector = map[string]string{"kiln.dev/pool": "builds", "kubernetes.io/arch": "arm64"}
				in.Template.Tolerations = []corev1.Toleration{
					{Key: "kiln.dev/builds", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
					{Key: "spot", Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](30)},
				}
			},
			want: func(j *batchv1.Job) {
				podSpec(j).NodeSelector = map[string]string{"kiln.dev/pool": "builds", "kubernetes.io/arch": "arm64"}
				podSpec(j).Tolerations = []corev1.Toleration{
					{Key: "kiln.dev/builds", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
					{Key: "spot", Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](30)},
				}
			},
		},
		{
			name: "deadline, ttl, grace and service account",
			edit: func(in *RenderInput) {
				in.Template.ActiveDeadlineSeconds = 600
				in.Template.TTLSecondsAfterFinished = 120
				in.Template.TerminationGracePeriodSeconds = 20
				in.Template.ServiceAccountName = "builder"
			},
			want: func(j *batchv1.Job) {
				j.Spec.ActiveDeadlineSeconds = ptr.To[int64](600)
				j.Spec.TTLSecondsAfterFinished = ptr.To[int32](120)
				podSpec(j).TerminationGracePeriodSeconds = ptr.To[int64](20)
				podSpec(j).ServiceAccountName = "builder"
				env := podSpec(j).Containers[0].Env
				for i := range env {
					if env[i].Name == EnvRunnerConfig {
						env[i].Value = strings.Replace(strings.Replace(env[i].Value,
							`"deadlineSeconds":3600`, `"deadlineSeconds":600`, 1),
							`"gracePeriodSeconds":60`, `"gracePeriodSeconds":20`, 1)
					}
				}
			},
		},
		{
			name: "odd project name is sanitised in the label, kept in the annotation",
			edit: func(in *RenderInput) { in.Project.Name = "Web Shop/ünïcode" },
			want: func(j *batchv1.Job) {
				setLabel(j, LabelProject, "Web-Shop--n-code-"+hashOf("Web Shop/ünïcode"))
				j.Annotations[AnnotationProject] = "Web Shop/ünïcode"
				j.Spec.Template.Annotations[AnnotationProject] = "Web Shop/ünïcode"
			},
		},
		{
			name: "managed project without credentials",
			edit: func(in *RenderInput) {
				in.Project.Managed = true
				in.Project.Repository = &schema.Repository{URL: "https://git.example/acme/site.git", Branch: "main"}
			},
			want: func(j *batchv1.Job) {},
		},
		{
			name: "https credentials",
			edit: func(in *RenderInput) {
				in.Project.Managed = true
				in.Project.Repository = &schema.Repository{URL: "https://git.example/acme/site.git", Branch: "main",
					Credentials: schema.CredentialsHTTPS, Username: "kiln"}
			},
			want: func(j *batchv1.Job) {
				withGitCredentials(j, "https://git.example/acme/site.git", SecretKeyGitUsername, SecretKeyGitToken)
			},
		},
		{
			name: "ssh credentials",
			edit: func(in *RenderInput) {
				in.Project.Managed = true
				in.Project.Repository = &schema.Repository{URL: "git@git.example:acme/site.git", Branch: "main",
					Credentials: schema.CredentialsSSH}
			},
			want: func(j *batchv1.Job) {
				withGitCredentials(j, "git@git.example:acme/site.git", SecretKeySSHKey, SecretKeyKnownHosts)
			},
		},
		{
			name: "build id that is not a DNS label",
			edit: func(in *RenderInput) { in.Build.ID = "Build_42" },
			want: func(j *batchv1.Job) {
				name := "kiln-build-build-42-" + hashOf("Build_42")
				j.Name = name
				setLabel(j, LabelBuildID, "Build_42")
				j.Annotations[AnnotationBuildID] = "Build_42"
				j.Spec.Template.Annotations[AnnotationBuildID] = "Build_42"
				c := &podSpec(j).Containers[0]
				c.Env[1].Value = "Build_42"
				c.Env[4].ValueFrom.SecretKeyRef.Name = name + "-token"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := setup(t)
			tt.edit(&in)
			got, _, err := Render(in)
			require.NoError(t, err)
			want := wantJob(t)
			tt.want(want)
			if d := cmp.Diff(want, got, quantityCmp); d != "" {
				t.Errorf("job (-want +got):\n%s", d)
			}
		})
	}
}

// withGitCredentials is what a project's repository credentials add to the
// Job: the keys of their kind from the project's Secret, mounted read-only,
// and the runner told where they are and for which repository.
func withGitCredentials(j *batchv1.Job, url string, keys ...string) {
	spec := podSpec(j)
	var items []corev1.KeyToPath
	for _, k := range keys {
		items = append(items, corev1.KeyToPath{Key: k, Path: k})
	}
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "git-credentials", VolumeSource: corev1.VolumeSource{
		Secret: &corev1.SecretVolumeSource{SecretName: "kiln-project-" + testProjectID, Items: items, DefaultMode: ptr.To[int32](0o400)},
	}})
	c := &spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "git-credentials", MountPath: "/var/run/kiln/git", ReadOnly: true})
	c.Env = append(c.Env, corev1.EnvVar{Name: "KILN_GIT_CREDENTIALS", Value: "/var/run/kiln/git"},
		corev1.EnvVar{Name: "KILN_GIT_URL", Value: url})
}

// hashOf is the suffix names and labels get when they had to be changed.
func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:10]
}

func TestRenderInvalidInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		edit    func(in *RenderInput)
		wantErr string
	}{
		{"no build id", func(in *RenderInput) { in.Build.ID = "" }, "build.id: required"},
		{"no template", func(in *RenderInput) { in.Template = nil }, "template: required"},
		{"template mismatch", func(in *RenderInput) { in.Build.Spec.Template = "readonly" }, `template: is "default" but the build asks for "readonly"`},
		{"invalid template", func(in *RenderInput) { in.Template.Agent.PermissionMode = "bypassPermissions" }, "template default: agent.permissionMode"},
		{"no namespace", func(in *RenderInput) { in.Namespace = "" }, "namespace: required"},
		{"bad namespace", func(in *RenderInput) { in.Namespace = "Kiln_Builds" }, "namespace: "},
		{"relative dispatcher url", func(in *RenderInput) { in.DispatcherURL = "kiln:8080" }, "dispatcherURL: must be an absolute http or https URL"},
		{"no dispatcher url", func(in *RenderInput) { in.DispatcherURL = "" }, "dispatcherURL: "},
		{"no token", func(in *RenderInput) { in.RunnerToken = "" }, "runnerToken: required"},
		{"bad image override", func(in *RenderInput) { in.Image = "has space:1" }, "image: must be an image reference"},
		{"unknown credential kind", func(in *RenderInput) {
			in.Project.Repository = &schema.Repository{URL: "https://git.example/a.git", Credentials: "netrc"}
		}, `project.repository.credentials: must be "https", "ssh" or empty (got "netrc")`},
		{"credentials without a project id", func(in *RenderInput) {
			in.Project.ID = ""
			in.Project.Repository = &schema.Repository{URL: "https://git.example/a.git", Credentials: "https"}
		}, "project.id: required with repository credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := setup(t)
			tt.edit(&in)
			job, secret, err := Render(in)
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrInvalidInput), "%v", err)
			require.Contains(t, err.Error(), tt.wantErr)
			require.Nil(t, job)
			require.Nil(t, secret)
		})
	}
}

// The token lives only in the Secret: never in the Job, its labels,
// annotations, env values or the runner config.
func TestRenderTokenOnlyInSecret(t *testing.T) {
	t.Parallel()
	for _, name := range Embedded().Names() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in := setup(t)
			in.Template, _ = Embedded().Get(name)
			in.Build.Spec.Template = name
			job, secret, err := Render(in)
			require.NoError(t, err)
			b, err := json.Marshal(job)
			require.NoError(t, err)
			require.NotContains(t, string(b), testToken)
			require.Equal(t, testToken, string(secret.Data[SecretKeyRunnerToken]))
			env := job.Spec.Template.Spec.Containers[0].Env
			var ref *corev1.SecretKeySelector
			for _, e := range env {
				if e.Name == EnvRunnerToken {
					require.Empty(t, e.Value)
					ref = e.ValueFrom.SecretKeyRef
				}
			}
			require.NotNil(t, ref)
			require.Equal(t, secret.Name, ref.Name)
			require.Equal(t, SecretKeyRunnerToken, ref.Key)
		})
	}
}

func TestRenderIsPure(t *testing.T) {
	t.Parallel()
	in := setup(t)
	in.Template.NodeSelector = map[string]string{"pool": "a"}
	in.Template.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists}}
	before := in.Template.DeepCopy()
	j1, s1, err := Render(in)
	require.NoError(t, err)
	j2, s2, err := Render(in)
	require.NoError(t, err)
	require.Empty(t, cmp.Diff(j1, j2, quantityCmp))
	require.Empty(t, cmp.Diff(s1, s2))

	// The Job shares no memory with the template or the other Job.
	podSpec(j1).NodeSelector["pool"] = "b"
	podSpec(j1).Tolerations[0].Key = "changed"
	j1.Labels[LabelTemplate] = "changed"
	podSpec(j1).Containers[0].Resources.Limits[corev1.ResourceMemory] = resource.MustParse("1Ti")
	require.Empty(t, cmp.Diff(before, in.Template, quantityCmp))
	require.Equal(t, "default", j2.Spec.Template.Labels[LabelTemplate])
}

func TestRunnerConfigRoundTrip(t *testing.T) {
	t.Parallel()
	in := setup(t)
	job, _, err := Render(in)
	require.NoError(t, err)
	var raw string
	for _, e := range job.Spec.Template.Spec.Containers[0].Env {
		if e.Name == EnvRunnerConfig {
			raw = e.Value
		}
	}
	cfg, err := ParseRunnerConfig(raw)
	require.NoError(t, err)
	want := RunnerConfig{
		Template:           "default",
		Agent:              in.Template.Agent,
		Artifacts:          in.Template.Artifacts,
		PromptPreamble:     in.Template.PromptPreamble,
		DeadlineSeconds:    3600,
		GracePeriodSeconds: 60,
	}
	require.Empty(t, cmp.Diff(want, cfg, cmpopts.EquateEmpty()))

	_, err = ParseRunnerConfig(`{"template":"x","surprise":1}`)
	require.ErrorContains(t, err, EnvRunnerConfig)
}

func TestOwnedBy(t *testing.T) {
	t.Parallel()
	_, secret, err := Render(setup(t))
	require.NoError(t, err)
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: JobName(testBuildID), UID: types.UID("uid-1")}}

	got := OwnedBy(secret, job)
	want := wantSecret()
	want.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: "batch/v1", Kind: "Job", Name: JobName(testBuildID), UID: "uid-1", Controller: ptr.To(false),
	}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("secret (-want +got):\n%s", d)
	}
	require.Empty(t, secret.OwnerReferences, "input secret must not change")
	require.Empty(t, cmp.Diff(want, OwnedBy(got, job)), "OwnedBy must be idempotent")

	require.Panics(t, func() { OwnedBy(secret, &batchv1.Job{}) })
}
