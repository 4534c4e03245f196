package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/tests/kubebox/node/internal/nsinit"
)

// rootCAConfigMap is the ConfigMap the controller-manager publishes in every
// namespace; the default service-account volume projects its ca.crt.
const rootCAConfigMap = "kube-root-ca.crt"

// mountError is a volume that could not be set up; the kubelet reports it as
// a FailedMount event and keeps the pod in ContainerCreating.
type mountError struct {
	volume string
	err    error
}

func (e *mountError) Error() string {
	return fmt.Sprintf("MountVolume.SetUp failed for volume %q : %v", e.volume, e.err)
}

type volumeFile struct {
	data []byte
	mode os.FileMode
}

func (n *Node) podDir(uid string) string { return filepath.Join(n.cfg.Dir, "pods", uid) }

func (n *Node) volumeDir(uid, name string) string {
	return filepath.Join(n.podDir(uid), "volumes", name)
}

// setupVolumes materializes the pod's volumes under its pod directory and
// returns when the earliest projected token should be refreshed (zero if none).
func (n *Node) setupVolumes(ctx context.Context, pod *corev1.Pod) (time.Time, error) {
	var refresh time.Time
	for _, v := range pod.Spec.Volumes {
		at, err := n.setupVolume(ctx, pod, v)
		if err != nil {
			return time.Time{}, &mountError{volume: v.Name, err: err}
		}
		if !at.IsZero() && (refresh.IsZero() || at.Before(refresh)) {
			refresh = at
		}
	}
	return refresh, nil
}

func (n *Node) setupVolume(ctx context.Context, pod *corev1.Pod, v corev1.Volume) (time.Time, error) {
	dir := n.volumeDir(string(pod.UID), v.Name)
	switch {
	case v.EmptyDir != nil:
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return time.Time{}, err
		}
		return time.Time{}, os.Chmod(dir, 0o777)
	case v.HostPath != nil:
		return time.Time{}, setupHostPath(v.HostPath)
	case v.Secret != nil:
		files, err := n.secretFiles(ctx, pod.Namespace, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, mode(v.Secret.DefaultMode))
		if err != nil {
			return time.Time{}, err
		}
		return time.Time{}, writeVolume(dir, files)
	case v.ConfigMap != nil:
		files, err := n.configMapFiles(ctx, pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, mode(v.ConfigMap.DefaultMode))
		if err != nil {
			return time.Time{}, err
		}
		return time.Time{}, writeVolume(dir, files)
	case v.DownwardAPI != nil:
		files, err := downwardFiles(pod, v.DownwardAPI.Items, mode(v.DownwardAPI.DefaultMode))
		if err != nil {
			return time.Time{}, err
		}
		return time.Time{}, writeVolume(dir, files)
	case v.Projected != nil:
		files, refresh, err := n.projectedFiles(ctx, pod, v.Projected)
		if err != nil {
			return time.Time{}, err
		}
		return refresh, writeVolume(dir, files)
	}
	return time.Time{}, fmt.Errorf("volume type not supported by the kubebox node")
}

func mode(m *int32) os.FileMode {
	if m == nil {
		return 0o644
	}
	return os.FileMode(*m) & os.ModePerm
}

func itemMode(m *int32, def os.FileMode) os.FileMode {
	if m == nil {
		return def
	}
	return os.FileMode(*m) & os.ModePerm
}

func setupHostPath(hp *corev1.HostPathVolumeSource) error {
	t := ptr.Deref(hp.Type, corev1.HostPathUnset)
	switch t {
	case corev1.HostPathDirectoryOrCreate:
		return os.MkdirAll(hp.Path, 0o755)
	case corev1.HostPathFileOrCreate:
		if err := os.MkdirAll(filepath.Dir(hp.Path), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(hp.Path, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			return err
		}
		return f.Close()
	case corev1.HostPathDirectory, corev1.HostPathFile:
		fi, err := os.Stat(hp.Path)
		if err != nil {
			return fmt.Errorf("hostPath type check failed: %s does not exist", hp.Path)
		}
		if fi.IsDir() != (t == corev1.HostPathDirectory) {
			return fmt.Errorf("hostPath type check failed: %s is not a %s", hp.Path, strings.ToLower(string(t)))
		}
	}
	return nil
}

// configMap reads a ConfigMap from the informer cache, falling back to the
// API for one created a moment ago.
func (n *Node) configMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	if cm, err := n.configMaps.ConfigMaps(ns).Get(name); err == nil {
		return cm, nil
	}
	return n.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
}

func (n *Node) secret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	if s, err := n.secrets.Secrets(ns).Get(name); err == nil {
		return s, nil
	}
	return n.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
}

func keyFiles(data map[string][]byte, items []corev1.KeyToPath, def os.FileMode, kind, name string, optional bool) (map[string]volumeFile, error) {
	files := map[string]volumeFile{}
	if len(items) == 0 {
		for k, v := range data {
			files[k] = volumeFile{data: v, mode: def}
		}
		return files, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("configuration error: key %q not found in %s %q", it.Key, kind, name)
		}
		files[it.Path] = volumeFile{data: v, mode: itemMode(it.Mode, def)}
	}
	return files, nil
}

func (n *Node) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional *bool, def os.FileMode) (map[string]volumeFile, error) {
	s, err := n.secret(ctx, ns, name)
	if apierrors.IsNotFound(err) && ptrTrue(optional) {
		return map[string]volumeFile{}, nil
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("secret %q not found", name)
		}
		return nil, err
	}
	return keyFiles(s.Data, items, def, "Secret", name, ptrTrue(optional))
}

func (n *Node) configMapFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional *bool, def os.FileMode) (map[string]volumeFile, error) {
	cm, err := n.configMap(ctx, ns, name)
	if apierrors.IsNotFound(err) && name == rootCAConfigMap && n.cfg.CACert != nil {
		// The root-CA publisher has not reached this namespace yet; the
		// node knows the same CA.
		cm = &corev1.ConfigMap{Data: map[string]string{"ca.crt": string(n.cfg.CACert)}}
		err = nil
	}
	if apierrors.IsNotFound(err) && ptrTrue(optional) {
		return map[string]volumeFile{}, nil
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("configmap %q not found", name)
		}
		return nil, err
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return keyFiles(data, items, def, "ConfigMap", name, ptrTrue(optional))
}

func downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, def os.FileMode) (map[string]volumeFile, error) {
	files := map[string]volumeFile{}
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = podFieldValue(pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			var c *corev1.Container
			for i := range pod.Spec.Containers {
				if pod.Spec.Containers[i].Name == it.ResourceFieldRef.ContainerName {
					c = &pod.Spec.Containers[i]
				}
			}
			v, err = resourceFieldValue(c, nil, it.ResourceFieldRef)
		}
		if err != nil {
			return nil, err
		}
		files[it.Path] = volumeFile{data: []byte(v), mode: itemMode(it.Mode, def)}
	}
	return files, nil
}

func (n *Node) projectedFiles(ctx context.Context, pod *corev1.Pod, p *corev1.ProjectedVolumeSource) (map[string]volumeFile, time.Time, error) {
	def := mode(p.DefaultMode)
	files := map[string]volumeFile{}
	var refresh time.Time
	add := func(more map[string]volumeFile) {
		for k, v := range more {
			files[k] = v
		}
	}
	for _, src := range p.Sources {
		switch {
		case src.ServiceAccountToken != nil:
			tok, at, err := n.serviceAccountToken(ctx, pod, src.ServiceAccountToken)
			if err != nil {
				return nil, time.Time{}, err
			}
			files[src.ServiceAccountToken.Path] = volumeFile{data: []byte(tok), mode: def}
			if refresh.IsZero() || at.Before(refresh) {
				refresh = at
			}
		case src.ConfigMap != nil:
			more, err := n.configMapFiles(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, def)
			if err != nil {
				return nil, time.Time{}, err
			}
			add(more)
		case src.Secret != nil:
			more, err := n.secretFiles(ctx, pod.Namespace, src.Secret.Name, src.Secret.Items, src.Secret.Optional, def)
			if err != nil {
				return nil, time.Time{}, err
			}
			add(more)
		case src.DownwardAPI != nil:
			more, err := downwardFiles(pod, src.DownwardAPI.Items, def)
			if err != nil {
				return nil, time.Time{}, err
			}
			add(more)
		}
	}
	return files, refresh, nil
}

// serviceAccountToken requests a token bound to the pod and returns it with
// the time it should be refreshed (at 80% of its life, as the kubelet does).
func (n *Node) serviceAccountToken(ctx context.Context, pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) (string, time.Time, error) {
	sa := cmpOr(pod.Spec.ServiceAccountName, "default")
	req := &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To(ptr.Deref(p.ExpirationSeconds, 3600)),
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
			},
		},
	}
	if p.Audience != "" {
		req.Spec.Audiences = []string{p.Audience}
	}
	tr, err := n.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("failed to fetch token: %w", err)
	}
	issued := time.Now()
	life := tr.Status.ExpirationTimestamp.Sub(issued)
	return tr.Status.Token, issued.Add(life * 8 / 10), nil
}

// writeVolume writes files into dir, each atomically, so a container that
// has the directory mounted sees either the old or the new content.
func writeVolume(dir string, files map[string]volumeFile) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for rel, f := range files {
		clean := filepath.Clean("/" + rel)[1:]
		if clean == "" || strings.HasPrefix(rel, "/") || strings.Contains(rel, "..") {
			return fmt.Errorf("invalid path %q", rel)
		}
		p := filepath.Join(dir, clean)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-")
		if err != nil {
			return err
		}
		_, werr := tmp.Write(f.data)
		cerr := tmp.Close()
		if err := cmpErr(werr, cerr, os.Chmod(tmp.Name(), f.mode)); err != nil {
			os.Remove(tmp.Name())
			return err
		}
		if err := os.Rename(tmp.Name(), p); err != nil {
			os.Remove(tmp.Name())
			return err
		}
	}
	return nil
}

func cmpErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// containerMounts lists the bind mounts of a container's volumeMounts.
func (n *Node) containerMounts(pod *corev1.Pod, c *corev1.Container) ([]nsinit.Mount, error) {
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	var mounts []nsinit.Mount
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok {
			return nil, &configError{fmt.Sprintf("cannot find volume %q to mount into container %q", vm.Name, c.Name)}
		}
		src := n.volumeDir(string(pod.UID), v.Name)
		readOnly := vm.ReadOnly
		switch {
		case v.HostPath != nil:
			src = v.HostPath.Path
		case v.Secret != nil, v.ConfigMap != nil, v.Projected != nil, v.DownwardAPI != nil:
			readOnly = true
		}
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			sub := vm.SubPath
			if sub == "" {
				sub = vm.SubPathExpr
			}
			if strings.Contains(sub, "..") || strings.HasPrefix(sub, "/") {
				return nil, &configError{fmt.Sprintf("invalid subPath %q", sub)}
			}
			src = filepath.Join(src, sub)
			if _, err := os.Stat(src); os.IsNotExist(err) {
				if err := os.MkdirAll(src, 0o755); err != nil {
					return nil, err
				}
			}
		}
		target := vm.MountPath
		if !filepath.IsAbs(target) {
			target = "/" + target
		}
		mounts = append(mounts, nsinit.Mount{Source: src, Target: filepath.Clean(target), ReadOnly: readOnly})
	}
	return mounts, nil
}
