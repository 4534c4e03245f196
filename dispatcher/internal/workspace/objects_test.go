package workspace_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/dispatcher/internal/workspace"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
)

const projectID = "3f2b8c1e-9d4a-4e7b-8a6c-1b2d3e4f5a6b"

func baseSpec() workspace.Spec {
	return workspace.Spec{
		ProjectID: projectID, ProjectName: "acme-web", Namespace: "kiln-p-acme-web", Name: "acme-web",
		RepoURL: "https://git.example.com/acme/web.git", Branch: "main",
		Credentials:     &schema.Credentials{Username: "bot", Token: "s3cr3t-token"},
		RunnerNamespace: "kiln-builds", RunnerServiceAccount: "kiln-runner",
	}
}

func labels(component string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/managed-by": "kiln", "kiln.dev/project": projectID,
		"app.kubernetes.io/name": "kiln-workspace", "app.kubernetes.io/instance": "acme-web",
		"app.kubernetes.io/component": component,
	}
}

func objMeta(name, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: "kiln-p-acme-web", Labels: labels(component),
		Annotations: map[string]string{"kiln.dev/project-name": "acme-web"}}
}

// want is the Set of baseSpec, written out.
func want() workspace.Set {
	nsMeta := objMeta("kiln-p-acme-web", "namespace")
	nsMeta.Namespace = ""
	nsMeta.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	restricted := &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	mounts := []corev1.VolumeMount{{Name: "workspace", MountPath: "/workspace"}, {Name: "home", MountPath: "/home/kiln"}}
	stsMeta := objMeta("acme-web", "workspace")
	return workspace.Set{
		Namespace: &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: nsMeta},
		ServiceAccount: &corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: objMeta("acme-web", "workspace"), AutomountServiceAccountToken: ptr.To(false)},
		EnvSecret: &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: objMeta("acme-web-env", "env"), Type: corev1.SecretTypeOpaque},
		GitSecret: &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: objMeta("acme-web-git", "git-credentials"), Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"git-username": []byte("bot"), "git-token": []byte("s3cr3t-token")}},
		RunnerBinding: &rbacv1.RoleBinding{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
			ObjectMeta: objMeta("kiln-runner", "runner-access"),
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "kiln-runner-exec"},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kiln-runner", Namespace: "kiln-builds"}}},
		StatefulSet: &appsv1.StatefulSet{
			TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
			ObjectMeta: stsMeta,
			Spec: appsv1.StatefulSetSpec{
				Replicas: ptr.To[int32](1),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/managed-by": "kiln",
					"kiln.dev/project": projectID, "app.kubernetes.io/instance": "acme-web"}},
				PodManagementPolicy: appsv1.ParallelPodManagement,
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels("workspace"), Annotations: map[string]string{"kiln.dev/project-name": "acme-web"}},
					Spec: corev1.PodSpec{
						ServiceAccountName:            "acme-web",
						AutomountServiceAccountToken:  ptr.To(false),
						EnableServiceLinks:            ptr.To(false),
						TerminationGracePeriodSeconds: ptr.To[int64](5),
						SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1000),
							RunAsGroup: ptr.To[int64](1000), FSGroup: ptr.To[int64](1000),
							SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
						InitContainers: []corev1.Container{{
							Name: "clone", Image: "kilnbuild/kiln-workspace:latest",
							Command: []string{"sh", "-c", workspace.CloneScript()},
							Env: []corev1.EnvVar{{Name: "KILN_REPO_URL", Value: "https://git.example.com/acme/web.git"},
								{Name: "KILN_REPO_BRANCH", Value: "main"}, {Name: "HOME", Value: "/home/kiln"}, {Name: "GIT_TERMINAL_PROMPT", Value: "0"}},
							VolumeMounts:             append(append([]corev1.VolumeMount{}, mounts...), corev1.VolumeMount{Name: "git-credentials", MountPath: "/var/run/kiln/git", ReadOnly: true}),
							TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
							SecurityContext:          restricted,
						}},
						Containers: []corev1.Container{{
							Name: "workspace", Image: "kilnbuild/kiln-workspace:latest",
							Command:      []string{"sleep", "infinity"},
							WorkingDir:   "/workspace/repo",
							EnvFrom:      []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "acme-web-env"}}}},
							Env:          []corev1.EnvVar{{Name: "HOME", Value: "/home/kiln"}},
							VolumeMounts: mounts,
							ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-d", "/workspace/repo/.git"}}},
								PeriodSeconds: 5, TimeoutSeconds: 3, FailureThreshold: 3},
							TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
							SecurityContext:          restricted,
						}},
						Volumes: []corev1.Volume{
							{Name: "workspace", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
							{Name: "home", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
							{Name: "git-credentials", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "acme-web-git", DefaultMode: ptr.To[int32](0o400)}}},
						},
					},
				},
			},
		},
	}
}

func pod(s workspace.Set) *corev1.PodSpec { return &s.StatefulSet.Spec.Template.Spec }

func TestObjects(t *testing.T) {
	t.Parallel()
	resources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("1Gi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")},
	}
	for _, tc := range []struct {
		name string
		spec func(*workspace.Spec)
		want func(*workspace.Set)
	}{
		{name: "https credentials", spec: func(*workspace.Spec) {}, want: func(*workspace.Set) {}},
		{
			name: "https token without a user name",
			spec: func(s *workspace.Spec) { s.Credentials.Username = "" },
			want: func(w *workspace.Set) { delete(w.GitSecret.Data, "git-username") },
		},
		{
			name: "public repository: no git Secret, nothing mounted",
			spec: func(s *workspace.Spec) { s.Credentials = nil },
			want: func(w *workspace.Set) {
				w.GitSecret = nil
				p := pod(*w)
				p.InitContainers[0].VolumeMounts = p.InitContainers[0].VolumeMounts[:2]
				p.Volumes = p.Volumes[:2]
			},
		},
		{
			name: "ssh",
			spec: func(s *workspace.Spec) {
				s.RepoURL = "git@git.example.com:acme/web.git"
				s.Credentials = &schema.Credentials{SSHPrivateKey: "-----BEGIN KEY-----\nabc\n", KnownHosts: "git.example.com ssh-ed25519 AAAA"}
			},
			want: func(w *workspace.Set) {
				w.GitSecret.Data = map[string][]byte{"ssh-private-key": []byte("-----BEGIN KEY-----\nabc\n"), "known-hosts": []byte("git.example.com ssh-ed25519 AAAA")}
				pod(*w).InitContainers[0].Env[0].Value = "git@git.example.com:acme/web.git"
			},
		},
		{
			name: "env, resources, image, branch and runner identity",
			spec: func(s *workspace.Spec) {
				s.Env = map[string]string{"NODE_ENV": "test", "A_FIRST": "1"}
				s.Resources = resources
				s.Image = "registry.example.com/ws:2"
				s.Branch = "release/1.x"
				s.RunnerNamespace, s.RunnerServiceAccount, s.RunnerClusterRole = "ci", "runner", "custom-exec"
			},
			want: func(w *workspace.Set) {
				p := pod(*w)
				p.Containers[0].Env = []corev1.EnvVar{{Name: "A_FIRST", Value: "1"}, {Name: "NODE_ENV", Value: "test"}, {Name: "HOME", Value: "/home/kiln"}}
				p.Containers[0].Resources, p.InitContainers[0].Resources = resources, resources
				p.Containers[0].Image, p.InitContainers[0].Image = "registry.example.com/ws:2", "registry.example.com/ws:2"
				p.InitContainers[0].Env[1].Value = "release/1.x"
				w.RunnerBinding.RoleRef.Name = "custom-exec"
				w.RunnerBinding.Subjects[0].Namespace, w.RunnerBinding.Subjects[0].Name = "ci", "runner"
			},
		},
		{
			name: "runner identity defaults",
			spec: func(s *workspace.Spec) { s.RunnerNamespace, s.RunnerServiceAccount = "", "" },
			want: func(*workspace.Set) {},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := baseSpec()
			tc.spec(&s)
			got, err := workspace.Objects(s)
			require.NoError(t, err)
			w := want()
			tc.want(&w)
			if d := cmp.Diff(w, got); d != "" {
				t.Errorf("Objects (-want +got):\n%s", d)
			}
			checkInvariants(t, s, got)
		})
	}
}

// checkInvariants: Kiln's labels on every object (and the pod), no
// credential in the main container, the secret only in the clone container.
func checkInvariants(t *testing.T, s workspace.Spec, set workspace.Set) {
	t.Helper()
	objs := []metav1.Object{set.Namespace, set.ServiceAccount, set.EnvSecret, set.StatefulSet, set.RunnerBinding, &set.StatefulSet.Spec.Template}
	if set.GitSecret != nil {
		objs = append(objs, set.GitSecret)
	}
	for _, o := range objs {
		assert.Equal(t, "kiln", o.GetLabels()["app.kubernetes.io/managed-by"], "%T %s", o, o.GetName())
		assert.Equal(t, s.ProjectID, o.GetLabels()["kiln.dev/project"], "%T %s", o, o.GetName())
	}
	p := pod(set)
	main := p.Containers[0]
	require.Len(t, p.Containers, 1)
	for _, m := range main.VolumeMounts {
		assert.NotEqual(t, "git-credentials", m.Name, "the main container mounts no credentials")
		assert.False(t, strings.HasPrefix(m.MountPath, jobtemplates.GitCredentialsDir))
	}
	for _, e := range main.EnvFrom {
		assert.Equal(t, workspace.EnvSecretName(s), e.SecretRef.Name, "envFrom only the env Secret")
	}
	var secrets []string
	if c := s.Credentials; c != nil {
		secrets = []string{c.Token, c.SSHPrivateKey, c.KnownHosts}
	}
	b, err := json.Marshal(set.StatefulSet)
	require.NoError(t, err)
	spec := string(b)
	for _, sec := range secrets {
		if sec != "" {
			assert.NotContains(t, spec, sec, "no credential in the StatefulSet (env, argv, script)")
		}
	}
	assert.NotContains(t, p.InitContainers[0].Env[0].Value, "@git.example.com/", "no credential in the URL")
}

func TestObjectsRefusesBadSpecs(t *testing.T) {
	t.Parallel()
	for name, edit := range map[string]func(*workspace.Spec){
		"no project id":     func(s *workspace.Spec) { s.ProjectID = "" },
		"bad namespace":     func(s *workspace.Spec) { s.Namespace = "Not_DNS" },
		"long name":         func(s *workspace.Spec) { s.Name = strings.Repeat("a", 53) },
		"bad name":          func(s *workspace.Spec) { s.Name = "a.b" },
		"no url":            func(s *workspace.Spec) { s.RepoURL = "" },
		"no branch":         func(s *workspace.Spec) { s.Branch = "" },
		"bad env name":      func(s *workspace.Spec) { s.Env = map[string]string{"A-B": "x"} },
		"HOME in env":       func(s *workspace.Spec) { s.Env = map[string]string{"HOME": "/root"} },
		"ssh without hosts": func(s *workspace.Spec) { s.Credentials = &schema.Credentials{SSHPrivateKey: "k"} },
		"empty credentials": func(s *workspace.Spec) { s.Credentials = &schema.Credentials{Username: "u"} },
	} {
		s := baseSpec()
		edit(&s)
		_, err := workspace.Objects(s)
		require.Error(t, err, name)
		assert.NotContains(t, err.Error(), "s3cr3t-token", name)
	}
}

// The clone script takes the URL and branch from the environment, keeps the
// helper out of .git/config (git -c before clone), and pins SSH host keys.
func TestCloneScript(t *testing.T) {
	t.Parallel()
	sc := workspace.CloneScript()
	for _, want := range []string{
		`-- "$KILN_REPO_URL"`, `--branch "$KILN_REPO_BRANCH" --single-branch`,
		"git -c credential.helper= \\\n  -c credential.helper='!f()",
		"-o IdentitiesOnly=yes", "-o StrictHostKeyChecking=yes", "creds=" + jobtemplates.GitCredentialsDir + "\n", "-o UserKnownHostsFile=$creds/known-hosts",
		`if [ -d "$dest/.git" ]`,
	} {
		assert.Contains(t, sc, want)
	}
	assert.NotContains(t, sc, "clone -c", "git clone -c would write into .git/config")
}

// The kustomize base configures DefaultImage, which Dockerfile.workspace builds.
func TestDefaultImageIsDeployed(t *testing.T) {
	t.Parallel()
	k, err := os.ReadFile("../../../deploy/base/kustomization.yaml")
	require.NoError(t, err)
	assert.Contains(t, string(k), "- KILN_WORKSPACE_IMAGE="+workspace.DefaultImage+"\n")
	d, err := os.ReadFile("../../../deploy/docker/Dockerfile.workspace")
	require.NoError(t, err)
	assert.Contains(t, string(d), "-t "+workspace.DefaultImage)
	assert.Contains(t, string(d), "WORKDIR "+workspace.WorkspaceDir+"\n")
	assert.Contains(t, string(d), "HOME="+workspace.Home)
}
