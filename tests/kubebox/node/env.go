package node

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// configError is a container configuration problem the kubelet reports as
// CreateContainerConfigError; the container is retried later.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

// containerEnv builds a container's environment as the kubelet does: the
// image's defaults, then envFrom, then env (each value expanded against what
// came before), then the kubernetes service variables for names still unset.
func (n *Node) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]string, error) {
	var (
		order []string
		vals  = map[string]string{}
	)
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	hostname := podHostname(pod)
	base := [][2]string{
		{"PATH", cmpOr(os.Getenv("PATH"), defaultPath)},
		{"HOSTNAME", hostname},
		{"HOME", "/root"},
	}
	for _, kv := range base {
		set(kv[0], kv[1])
	}
	service := n.serviceEnv()

	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := n.configMap(ctx, pod.Namespace, from.ConfigMapRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && ptrTrue(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, lookupError("configmap", from.ConfigMapRef.Name, err)
			}
			for k, v := range cm.Data {
				set(from.Prefix+k, v)
			}
		case from.SecretRef != nil:
			s, err := n.secret(ctx, pod.Namespace, from.SecretRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && ptrTrue(from.SecretRef.Optional) {
					continue
				}
				return nil, lookupError("secret", from.SecretRef.Name, err)
			}
			for k, v := range s.Data {
				set(from.Prefix+k, string(v))
			}
		}
	}

	mapping := func(name string) (string, bool) {
		if v, ok := vals[name]; ok {
			return v, true
		}
		v, ok := service[name]
		return v, ok
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, mapping))
			continue
		}
		v, ok, err := n.envValueFrom(ctx, pod, c, e.ValueFrom)
		if err != nil {
			return nil, err
		}
		if ok {
			set(e.Name, v)
		}
	}
	// The kubernetes Service's variables are set even without service links.
	for _, k := range serviceEnvOrder {
		if _, ok := vals[k]; !ok {
			set(k, service[k])
		}
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vals[k])
	}
	return env, nil
}

var serviceEnvOrder = []string{
	"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBERNETES_SERVICE_PORT_HTTPS",
	"KUBERNETES_PORT", "KUBERNETES_PORT_443_TCP", "KUBERNETES_PORT_443_TCP_PROTO",
	"KUBERNETES_PORT_443_TCP_PORT", "KUBERNETES_PORT_443_TCP_ADDR",
}

// serviceEnv is the kubernetes Service's environment, pointing at the real
// apiserver address (there is no service proxy on this node).
func (n *Node) serviceEnv() map[string]string {
	host, port := n.cfg.APIServerHost, strconv.Itoa(n.cfg.APIServerPort)
	url := "tcp://" + host + ":" + port
	return map[string]string{
		"KUBERNETES_SERVICE_HOST":       host,
		"KUBERNETES_SERVICE_PORT":       port,
		"KUBERNETES_SERVICE_PORT_HTTPS": port,
		"KUBERNETES_PORT":               url,
		"KUBERNETES_PORT_443_TCP":       url,
		"KUBERNETES_PORT_443_TCP_PROTO": "tcp",
		"KUBERNETES_PORT_443_TCP_PORT":  port,
		"KUBERNETES_PORT_443_TCP_ADDR":  host,
	}
}

func (n *Node) envValueFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, from *corev1.EnvVarSource) (string, bool, error) {
	switch {
	case from.FieldRef != nil:
		v, err := podFieldValue(pod, from.FieldRef.FieldPath)
		return v, err == nil, err
	case from.ResourceFieldRef != nil:
		v, err := resourceFieldValue(c, n.capacity(), from.ResourceFieldRef)
		return v, err == nil, err
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		cm, err := n.configMap(ctx, pod.Namespace, ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && ptrTrue(ref.Optional) {
				return "", false, nil
			}
			return "", false, lookupError("configmap", ref.Name, err)
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if v, ok := cm.BinaryData[ref.Key]; ok {
			return string(v), true, nil
		}
		if ptrTrue(ref.Optional) {
			return "", false, nil
		}
		return "", false, &configError{fmt.Sprintf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)}
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		s, err := n.secret(ctx, pod.Namespace, ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && ptrTrue(ref.Optional) {
				return "", false, nil
			}
			return "", false, lookupError("secret", ref.Name, err)
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), true, nil
		}
		if ptrTrue(ref.Optional) {
			return "", false, nil
		}
		return "", false, &configError{fmt.Sprintf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)}
	}
	return "", false, nil
}

func lookupError(kind, name string, err error) error {
	if apierrors.IsNotFound(err) {
		return &configError{fmt.Sprintf("%s %q not found", kind, name)}
	}
	return fmt.Errorf("getting %s %s: %w", kind, name, err)
}

// podFieldValue resolves a downward-API field path.
func podFieldValue(pod *corev1.Pod, path string) (string, error) {
	if k, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[k], nil
	}
	if k, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[k], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs":
		return podIP, nil
	}
	return "", &configError{fmt.Sprintf("unsupported fieldPath: %s", path)}
}

func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return "", false
	}
	return strings.Trim(strings.TrimSuffix(rest, "]"), `'"`), true
}

// formatMap renders labels or annotations as the downward API does.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String()
}

func resourceFieldValue(c *corev1.Container, capacity corev1.ResourceList, ref *corev1.ResourceFieldSelector) (string, error) {
	if c == nil {
		return "", &configError{"resourceFieldRef needs a container"}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	var q resource.Quantity
	var ok bool
	switch ref.Resource {
	case "limits.cpu":
		q, ok = c.Resources.Limits[corev1.ResourceCPU]
		if !ok {
			q = capacity[corev1.ResourceCPU]
		}
	case "limits.memory":
		q, ok = c.Resources.Limits[corev1.ResourceMemory]
		if !ok {
			q = capacity[corev1.ResourceMemory]
		}
	case "limits.ephemeral-storage":
		q, ok = c.Resources.Limits[corev1.ResourceEphemeralStorage]
		if !ok {
			q = capacity[corev1.ResourceEphemeralStorage]
		}
	case "requests.cpu":
		q = c.Resources.Requests[corev1.ResourceCPU]
	case "requests.memory":
		q = c.Resources.Requests[corev1.ResourceMemory]
	case "requests.ephemeral-storage":
		q = c.Resources.Requests[corev1.ResourceEphemeralStorage]
	default:
		return "", &configError{fmt.Sprintf("unsupported container resource: %s", ref.Resource)}
	}
	if strings.HasSuffix(ref.Resource, ".cpu") {
		v := int64(math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue())))
		if v == 0 && ref.Resource == "requests.cpu" {
			v = 1
		}
		return strconv.FormatInt(v, 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

// expand replaces $(VAR) references as Kubernetes does: $$ escapes a dollar
// and references to unknown names are kept verbatim.
func expand(input string, mapping func(string) (string, bool)) string {
	if !strings.Contains(input, "$") {
		return input
	}
	var b strings.Builder
	for i := 0; i < len(input); i++ {
		if input[i] != '$' || i+1 >= len(input) {
			b.WriteByte(input[i])
			continue
		}
		switch next := input[i+1]; next {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(input[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := input[i+2 : i+2+end]
			if v, ok := mapping(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// envMapping looks names up in a KEY=VALUE list (last wins).
func envMapping(env []string) func(string) (string, bool) {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

func ptrTrue(b *bool) bool { return b != nil && *b }

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func podHostname(pod *corev1.Pod) string {
	h := pod.Name
	if pod.Spec.Hostname != "" {
		h = pod.Spec.Hostname
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}
