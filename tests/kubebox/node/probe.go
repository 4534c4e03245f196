package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kilnbuild/kiln/tests/kubebox/node/internal/nsinit"
)

type probeKind string

const (
	startupProbe   probeKind = "Startup"
	readinessProbe probeKind = "Readiness"
	livenessProbe  probeKind = "Liveness"
)

// ready is what the container's status reports as ready. Called with the
// pod worker's mutex held.
func (c *container) ready() bool {
	return c.started() && (c.spec.ReadinessProbe == nil || c.probeReady)
}

// started is the container status' started: running and past any startup
// probe. Called with the pod worker's mutex held.
func (c *container) started() bool {
	return c.running != nil && c.postStarted && (c.spec.StartupProbe == nil || c.startupOK)
}

// startProbes runs the container's probes while proc lives, as the
// kubelet's prober does. Called with w.mu held.
func (w *podWorker) startProbes(c *container, proc *nsinit.Process, done <-chan struct{}) {
	c.probeReady, c.startupOK = false, false
	for kind, p := range map[probeKind]*corev1.Probe{
		startupProbe: c.spec.StartupProbe, readinessProbe: c.spec.ReadinessProbe, livenessProbe: c.spec.LivenessProbe,
	} {
		if p != nil {
			go w.probeLoop(kind, p, c, proc, done)
		}
	}
}

func (w *podWorker) probeLoop(kind probeKind, p *corev1.Probe, c *container, proc *nsinit.Process, done <-chan struct{}) {
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	successThreshold, failureThreshold := max(p.SuccessThreshold, 1), max(p.FailureThreshold, 1)
	select {
	case <-done:
		return
	case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
	}
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	var successes, failures int32
	for {
		w.mu.Lock()
		current := c.proc == proc
		waitForStartup := kind != startupProbe && c.spec.StartupProbe != nil && !c.startupOK
		pod := w.pod
		w.mu.Unlock()
		if !current {
			return
		}
		if !waitForStartup {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			err := w.probe(ctx, c, p)
			cancel()
			if err == nil {
				successes, failures = successes+1, 0
			} else {
				successes, failures = 0, failures+1
				w.event(pod, c, corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %v", kind, err)
			}
			w.mu.Lock()
			if c.proc != proc {
				w.mu.Unlock()
				return
			}
			changed := false
			switch kind {
			case readinessProbe:
				if err == nil && successes >= successThreshold && !c.probeReady {
					c.probeReady, changed = true, true
				} else if err != nil && failures >= failureThreshold && c.probeReady {
					c.probeReady, changed = false, true
				}
			case startupProbe:
				if err == nil && successes >= successThreshold {
					c.startupOK = true
					w.mu.Unlock()
					w.signal()
					return
				}
			}
			kill := kind != readinessProbe && err != nil && failures >= failureThreshold
			if kill {
				w.event(pod, c, corev1.EventTypeNormal, eventKilling, "Container %s failed %s probe, will be restarted", c.spec.Name, kind)
				signalContainer(c, syscall.SIGTERM)
			}
			w.mu.Unlock()
			if changed {
				w.signal()
			}
			if kill {
				w.killAfter(c, proc, done, probeGrace(pod, p))
				return
			}
		}
		select {
		case <-done:
			return
		case <-ticker.C:
		}
	}
}

func probeGrace(pod *corev1.Pod, p *corev1.Probe) time.Duration {
	if p.TerminationGracePeriodSeconds != nil {
		return time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
	}
	return gracePeriod(pod)
}

// killAfter SIGKILLs the container's process if it outlives grace.
func (w *podWorker) killAfter(c *container, proc *nsinit.Process, done <-chan struct{}, grace time.Duration) {
	select {
	case <-done:
	case <-time.After(grace):
		w.mu.Lock()
		if c.proc == proc {
			signalContainer(c, syscall.SIGKILL)
		}
		w.mu.Unlock()
	}
}

// postStart runs the container's postStart hook; if it fails, the
// container is killed, as the kubelet does.
func (w *podWorker) postStart(c *container, proc *nsinit.Process, done <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := w.runHook(ctx, c, c.spec.Lifecycle.PostStart)
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.proc != proc {
		return
	}
	if err != nil {
		w.event(w.pod, c, corev1.EventTypeWarning, "FailedPostStartHook", "PostStartHook failed: %v", err)
		signalContainer(c, syscall.SIGKILL)
		return
	}
	c.postStarted = true
	w.startProbes(c, proc, done)
	w.signal()
}

// runHook runs a lifecycle handler against the container.
func (w *podWorker) runHook(ctx context.Context, c *container, h *corev1.LifecycleHandler) error {
	switch {
	case h.Sleep != nil:
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
			return nil
		}
	case h.Exec != nil, h.HTTPGet != nil, h.TCPSocket != nil:
		return w.probe(ctx, c, &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: h.Exec, HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket}})
	}
	return nil
}

// probe runs one check; nil means success.
func (w *podWorker) probe(ctx context.Context, c *container, p *corev1.Probe) error {
	switch {
	case p.Exec != nil:
		var out bytes.Buffer
		err := w.exec(ctx, c, p.Exec.Command, nil, nopCloser{&out}, nopCloser{&out}, false, nil)
		if err != nil {
			return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out.Bytes()))
		}
		return nil
	case p.HTTPGet != nil:
		g := p.HTTPGet
		port, err := probePort(c, g.Port)
		if err != nil {
			return err
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		u := url.URL{Scheme: scheme, Host: net.JoinHostPort(cmpOr(g.Host, podIP), strconv.Itoa(port)), Path: g.Path}
		if u.Path == "" {
			u.Path = "/"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "kube-probe/1.37")
		for _, h := range g.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		client := &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // as the kubelet's prober
			DisableKeepAlives: true,
		}}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil, p.GRPC != nil:
		// gRPC health checks are approximated by a TCP connect.
		var port int
		var err error
		if p.TCPSocket != nil {
			port, err = probePort(c, p.TCPSocket.Port)
		} else {
			port = int(p.GRPC.Port)
		}
		if err != nil {
			return err
		}
		host := podIP
		if p.TCPSocket != nil && p.TCPSocket.Host != "" {
			host = p.TCPSocket.Host
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	}
	return nil
}

func probePort(c *container, port intstr.IntOrString) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range c.spec.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("port %q not found in container %s", port.StrVal, c.spec.Name)
}

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }
