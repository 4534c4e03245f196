package deploy

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kilnbuild/kiln/jobtemplates"
)

// docs/design.md, "Kubernetes": the dispatcher needs, in the builds namespace, jobs
// and secrets (create, get, list, watch, delete), pods and pods/log (get,
// list, watch), events (list). The runner needs pods (get) and pods/exec
// (create, get) in project namespaces. (A project that finds its pod by
// label selector needs list as well; the manifests grant it to none.)
var (
	dispatcherRules = map[string][]string{
		"batch/jobs": {"create", "delete", "get", "list", "watch"},
		"/secrets":   {"create", "delete", "get", "list", "watch"},
		"/pods":      {"get", "list", "watch"},
		"/pods/log":  {"get", "list", "watch"},
		"/events":    {"list"},
	}
	runnerRules = map[string][]string{
		"/pods":      {"get"},
		"/pods/exec": {"create", "get"},
	}
	// Managed projects (docs/workspaces.md): the dispatcher provisions
	// namespaces and workspaces, and grants the runner exec there with bind
	// on kiln-runner-exec only.
	provisioningRules = map[string][]string{
		"/namespaces":                            {"create", "delete", "get"},
		"/serviceaccounts":                       {"create", "delete", "get", "list"},
		"/secrets":                               {"create", "delete", "get", "list", "update"},
		"apps/statefulsets":                      {"create", "delete", "get", "list"},
		"rbac.authorization.k8s.io/rolebindings": {"create", "delete", "get", "list"},
		"/pods":                                  {"get", "list", "watch"},
		"rbac.authorization.k8s.io/clusterroles": {"bind"},
	}
	wantClusterScoped = []string{
		"ClusterRole/kiln-dispatcher-provisioning", "ClusterRoleBinding/kiln-dispatcher-provisioning",
		"ClusterRole/kiln-runner-exec",
		"ValidatingAdmissionPolicy/kiln-dispatcher-namespaces", "ValidatingAdmissionPolicyBinding/kiln-dispatcher-namespaces",
	}
)

func rules(rs []rbacv1.PolicyRule) map[string][]string {
	out := map[string][]string{}
	for _, r := range rs {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := g + "/" + res
				out[k] = append(out[k], r.Verbs...)
				slices.Sort(out[k])
				out[k] = slices.Compact(out[k])
			}
		}
	}
	return out
}

func TestManifestsStructure(t *testing.T) {
	t.Parallel()
	for name, dir := range kustomizations {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			objs := objects(t, render(t, dir))
			checkStructure(t, name, objs)
		})
	}
}

func checkStructure(t *testing.T, name string, objs []*unstructured.Unstructured) {
	wantReplicas := map[string]int32{"base": 2, "example": 3}[name]

	// Nothing cluster-wide but the namespaces and what managed projects need.
	var clusterScoped []string
	for _, o := range objs {
		if o.GetNamespace() == "" && o.GetKind() != "Namespace" {
			clusterScoped = append(clusterScoped, o.GetKind()+"/"+o.GetName())
		}
		assert.Equal(t, "kiln", o.GetLabels()["app.kubernetes.io/part-of"], "%s %s: part-of label", o.GetKind(), o.GetName())
	}
	assert.ElementsMatch(t, wantClusterScoped, clusterScoped, "least privilege: only these cluster-scoped objects")
	for _, ns := range []string{"kiln", "kiln-builds"} {
		find(t, objs, "Namespace", "", ns)
	}

	// The dispatcher Deployment.
	dep := as[appsv1.Deployment](t, find(t, objs, "Deployment", "kiln", "kiln-dispatcher"))
	require.NotNil(t, dep.Spec.Replicas)
	assert.Equal(t, wantReplicas, *dep.Spec.Replicas, "replicas")
	pod := dep.Spec.Template.Spec
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	assert.Equal(t, []string{"serve"}, c.Args)
	require.NotNil(t, c.ReadinessProbe, "readiness probe")
	require.NotNil(t, c.ReadinessProbe.HTTPGet)
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	require.NotNil(t, c.LivenessProbe, "liveness probe")
	require.NotNil(t, c.LivenessProbe.HTTPGet)
	assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	require.Len(t, c.Ports, 1)
	assert.Equal(t, "http", c.Ports[0].Name)
	assert.Equal(t, "http", c.ReadinessProbe.HTTPGet.Port.String())
	assert.False(t, c.Resources.Requests.Cpu().IsZero(), "cpu request")
	assert.False(t, c.Resources.Requests.Memory().IsZero(), "memory request")
	assert.False(t, c.Resources.Limits.Memory().IsZero(), "memory limit")
	checkRestricted(t, "dispatcher", pod, c)
	assert.True(t, len(pod.TopologySpreadConstraints) > 0 || (pod.Affinity != nil && pod.Affinity.PodAntiAffinity != nil),
		"replicas are spread over nodes")
	assert.Equal(t, "kiln-dispatcher", pod.ServiceAccountName)
	find(t, objs, "ServiceAccount", "kiln", pod.ServiceAccountName)
	podLabels := labels.Set(dep.Spec.Template.Labels)

	// Settings from the generated ConfigMap, the database URL from a Secret.
	require.Len(t, c.EnvFrom, 1)
	require.NotNil(t, c.EnvFrom[0].ConfigMapRef)
	env := as[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "kiln", c.EnvFrom[0].ConfigMapRef.Name)).Data
	var dbFromSecret bool
	for _, e := range c.Env {
		if e.Name == "KILN_DATABASE_URL" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			dbFromSecret = true
		}
	}
	assert.True(t, dbFromSecret, "KILN_DATABASE_URL comes from a Secret")
	assert.NotContains(t, env, "KILN_DATABASE_URL", "no database URL in a ConfigMap")
	assert.True(t, strings.HasPrefix(env["KILN_LISTEN_ADDR"], "0.0.0.0:"), "listens on all interfaces in a pod, got %q", env["KILN_LISTEN_ADDR"])

	// Templates: mounted where KILN_TEMPLATES_DIR points, copies of the built-in ones.
	var tmplCM string
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil {
			tmplCM = v.ConfigMap.Name
		}
	}
	require.NotEmpty(t, tmplCM, "a ConfigMap volume with the job templates")
	var mountedAt string
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(tmplCM, m.Name) || m.Name == "templates" {
			mountedAt = m.MountPath
		}
	}
	assert.Equal(t, env["KILN_TEMPLATES_DIR"], mountedAt, "KILN_TEMPLATES_DIR is the templates mount")
	tcm := as[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "kiln", tmplCM))
	builtin := jobtemplates.Embedded().Names()
	require.NotEmpty(t, builtin)
	buildNS := env["KILN_BUILD_NAMESPACE"]
	require.Equal(t, "kiln-builds", buildNS)
	for file, body := range tcm.Data {
		tmpl, err := jobtemplates.Parse(file, []byte(body))
		require.NoError(t, err, "template %s", file)
		find(t, objs, "ServiceAccount", buildNS, tmpl.ServiceAccountName)
	}
	assert.Len(t, tcm.Data, len(builtin), "every built-in template is in the ConfigMap")

	// The runner pods reach the dispatcher through its Service.
	svc := as[corev1.Service](t, find(t, objs, "Service", "kiln", "kiln-dispatcher"))
	assert.True(t, labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels), "Service selects the dispatcher pods")
	require.Len(t, svc.Spec.Ports, 1)
	assert.Equal(t, "http", svc.Spec.Ports[0].TargetPort.String())
	u, err := url.Parse(env["KILN_DISPATCHER_URL"])
	require.NoError(t, err)
	assert.Equal(t, svc.Name+"."+svc.Namespace+".svc", u.Hostname(), "KILN_DISPATCHER_URL names the Service")
	assert.Equal(t, "8080", u.Port())
	assert.EqualValues(t, 8080, svc.Spec.Ports[0].Port)

	// PodDisruptionBudget.
	pdb := as[policyv1.PodDisruptionBudget](t, find(t, objs, "PodDisruptionBudget", "kiln", "kiln-dispatcher"))
	require.NotNil(t, pdb.Spec.MinAvailable)
	assert.Less(t, pdb.Spec.MinAvailable.IntValue(), int(wantReplicas), "a drain can evict one replica")
	sel, err := metav1LabelSelector(pdb.Spec.Selector)
	require.NoError(t, err)
	assert.True(t, sel.Matches(podLabels), "PDB selects the dispatcher pods")

	// Migrations Job.
	job := as[batchv1.Job](t, find(t, objs, "Job", "kiln", "kiln-migrate"))
	jc := job.Spec.Template.Spec.Containers[0]
	assert.Equal(t, []string{"migrate"}, jc.Args)
	assert.Equal(t, c.Image, jc.Image, "migrations run the dispatcher's image")
	checkRestricted(t, "migrate", job.Spec.Template.Spec, jc)

	// RBAC: exactly the verbs of docs/design.md, "Kubernetes".
	role := as[rbacv1.Role](t, find(t, objs, "Role", buildNS, "kiln-dispatcher"))
	assert.Equal(t, dispatcherRules, rules(role.Rules), "dispatcher Role in %s", buildNS)
	rb := as[rbacv1.RoleBinding](t, find(t, objs, "RoleBinding", buildNS, "kiln-dispatcher"))
	assert.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kiln-dispatcher", Namespace: "kiln"}}, rb.Subjects)
	runnerNS := 0
	for _, o := range all(objs, "Role") {
		r := as[rbacv1.Role](t, o)
		if r.Name != "kiln-runner" {
			continue
		}
		runnerNS++
		assert.Equal(t, runnerRules, rules(r.Rules), "runner Role in %s", r.Namespace)
		b := as[rbacv1.RoleBinding](t, find(t, objs, "RoleBinding", r.Namespace, "kiln-runner"))
		assert.Equal(t, "kiln-runner", b.RoleRef.Name)
		assert.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kiln-runner", Namespace: buildNS}}, b.Subjects)
	}
	assert.Equal(t, map[string]int{"base": 1, "example": 2}[name], runnerNS, "runner Roles, one per project namespace")
	for _, o := range all(objs, "Role") {
		assert.Contains(t, []string{"kiln-dispatcher", "kiln-runner"}, o.GetName(), "unexpected Role")
	}
	checkProvisioningRBAC(t, objs, buildNS)
	// The workspace image (deploy/docker/Dockerfile.workspace; the
	// workspace package's DefaultImage, which its own test keeps equal).
	assert.Equal(t, map[string]string{"base": "kilnbuild/kiln-workspace:latest", "example": "registry.example.com/kiln/workspace:v0.1.0"}[name],
		env["KILN_WORKSPACE_IMAGE"], "KILN_WORKSPACE_IMAGE")

	// NetworkPolicies.
	np := as[networkingv1.NetworkPolicy](t, find(t, objs, "NetworkPolicy", "kiln", "kiln-dispatcher"))
	sel, err = metav1LabelSelector(&np.Spec.PodSelector)
	require.NoError(t, err)
	assert.True(t, sel.Matches(podLabels), "dispatcher NetworkPolicy selects its pods")
	require.Len(t, np.Spec.Ingress, 1)
	assert.EqualValues(t, 8080, np.Spec.Ingress[0].Ports[0].Port.IntValue())
	assert.Equal(t, []int{53, 443, 5432, 6443}, egressPorts(np), "dispatcher egress: DNS, HTTPS/apiserver, Postgres")
	bp := as[networkingv1.NetworkPolicy](t, find(t, objs, "NetworkPolicy", buildNS, "kiln-builds"))
	assert.Equal(t, jobtemplates.ManagedBy, bp.Spec.PodSelector.MatchLabels[jobtemplates.LabelManagedBy], "selects build pods")
	assert.Empty(t, bp.Spec.Ingress, "no ingress to build pods")
	assert.Contains(t, bp.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
	var toDispatcher bool
	for _, e := range bp.Spec.Egress {
		for _, p := range e.To {
			if p.PodSelector != nil && labels.SelectorFromSet(p.PodSelector.MatchLabels).Matches(podLabels) {
				toDispatcher = true
			}
		}
	}
	assert.True(t, toDispatcher, "build pods may reach the dispatcher")
	assert.Equal(t, []int{53, 443, 6443, 8080}, egressPorts(bp))

	// ServiceMonitor scrapes the Service's port at /metrics.
	sm := find(t, objs, "ServiceMonitor", "kiln", "kiln-dispatcher")
	assert.Equal(t, "monitoring.coreos.com/v1", sm.GetAPIVersion())
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	require.Len(t, eps, 1)
	assert.Equal(t, "http", eps[0].(map[string]any)["port"])
	assert.Equal(t, "/metrics", eps[0].(map[string]any)["path"])
	smSel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	assert.True(t, labels.SelectorFromSet(smSel).Matches(labels.Set(svc.Labels)), "ServiceMonitor selects the Service")
}

func checkRestricted(t *testing.T, what string, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	require.NotNil(t, pod.SecurityContext, what)
	require.NotNil(t, pod.SecurityContext.RunAsNonRoot, what)
	assert.True(t, *pod.SecurityContext.RunAsNonRoot, what+": runAsNonRoot")
	require.NotNil(t, pod.SecurityContext.RunAsUser, what)
	assert.NotZero(t, *pod.SecurityContext.RunAsUser, what+": runAsUser")
	require.NotNil(t, c.SecurityContext, what)
	sc := c.SecurityContext
	require.NotNil(t, sc.ReadOnlyRootFilesystem, what)
	assert.True(t, *sc.ReadOnlyRootFilesystem, what+": read-only root filesystem")
	require.NotNil(t, sc.AllowPrivilegeEscalation, what)
	assert.False(t, *sc.AllowPrivilegeEscalation, what+": no privilege escalation")
	require.NotNil(t, sc.Capabilities, what)
	assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, what+": drop ALL capabilities")
	assert.Empty(t, sc.Capabilities.Add, what)
}

func egressPorts(np *networkingv1.NetworkPolicy) []int {
	var out []int
	for _, e := range np.Spec.Egress {
		for _, p := range e.Ports {
			out = append(out, p.Port.IntValue())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// checkProvisioningRBAC: the provisioning ClusterRole has exactly its
// verbs (bind only on kiln-runner-exec), is bound to the dispatcher only,
// kiln-runner-exec is the runner Role's rules, and the admission policy
// matches the dispatcher and spares its builds namespace.
func checkProvisioningRBAC(t *testing.T, objs []*unstructured.Unstructured, buildNS string) {
	t.Helper()
	cr := as[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", "", "kiln-dispatcher-provisioning"))
	assert.Equal(t, provisioningRules, rules(cr.Rules), "provisioning ClusterRole")
	for _, r := range cr.Rules {
		if slices.Contains(r.Verbs, "bind") {
			assert.Equal(t, []string{"kiln-runner-exec"}, r.ResourceNames, "bind only kiln-runner-exec")
			assert.Equal(t, []string{"bind"}, r.Verbs)
		} else {
			assert.Empty(t, r.ResourceNames)
		}
		assert.NotContains(t, r.Verbs, "escalate")
		assert.NotContains(t, r.Verbs, "*")
		assert.NotContains(t, r.Resources, "*")
	}
	crb := as[rbacv1.ClusterRoleBinding](t, find(t, objs, "ClusterRoleBinding", "", "kiln-dispatcher-provisioning"))
	assert.Equal(t, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}, crb.RoleRef)
	assert.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kiln-dispatcher", Namespace: "kiln"}}, crb.Subjects)
	exec := as[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", "", "kiln-runner-exec"))
	assert.Equal(t, runnerRules, rules(exec.Rules), "kiln-runner-exec")
	for _, o := range all(objs, "ClusterRoleBinding") {
		assert.NotEqual(t, "kiln-runner-exec", as[rbacv1.ClusterRoleBinding](t, o).RoleRef.Name, "exec is never granted cluster-wide")
	}

	vap := as[admissionv1.ValidatingAdmissionPolicy](t, find(t, objs, "ValidatingAdmissionPolicy", "", "kiln-dispatcher-namespaces"))
	require.Len(t, vap.Spec.MatchConditions, 1)
	assert.Contains(t, vap.Spec.MatchConditions[0].Expression, "'system:serviceaccount:kiln:kiln-dispatcher'")
	require.NotNil(t, vap.Spec.FailurePolicy)
	assert.Equal(t, admissionv1.Fail, *vap.Spec.FailurePolicy)
	var covered []string
	for _, r := range vap.Spec.MatchConstraints.ResourceRules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				covered = append(covered, g+"/"+res)
			}
		}
	}
	for k := range provisioningRules {
		if k != "/pods" && k != "rbac.authorization.k8s.io/clusterroles" { // never written
			assert.Contains(t, covered, k, "the policy covers every kind the dispatcher writes")
		}
	}
	vb := as[admissionv1.ValidatingAdmissionPolicyBinding](t, find(t, objs, "ValidatingAdmissionPolicyBinding", "", "kiln-dispatcher-namespaces"))
	assert.Equal(t, vap.Name, vb.Spec.PolicyName)
	assert.Equal(t, []admissionv1.ValidationAction{admissionv1.Deny}, vb.Spec.ValidationActions)
	require.NotNil(t, vb.Spec.MatchResources)
	require.NotNil(t, vb.Spec.MatchResources.NamespaceSelector)
	assert.Equal(t, []metav1.LabelSelectorRequirement{{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn,
		Values: []string{buildNS}}}, vb.Spec.MatchResources.NamespaceSelector.MatchExpressions, "only the builds namespace is spared")
}
