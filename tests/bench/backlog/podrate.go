package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kilnbuild/kiln/schema"
)

// runnerStub answers the runner protocol as a dispatcher would for a build
// whose prompt is "succeed", storing nothing: the baseline's pods run the
// same runner binary, making the same requests, without Kiln behind them.
func runnerStub() (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc(schema.RunnerAPIPrefix, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			id := strings.TrimPrefix(r.URL.Path, schema.RunnerAPIPrefix)
			_ = json.NewEncoder(w).Encode(schema.RunnerTask{BuildID: id, Spec: schema.BuildSpec{Prompt: "succeed"},
				Status: schema.StatusRunning})
			return
		}
		_, _ = w.Write([]byte("{}"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// podRate runs n plain pods of image to completion, conc at a time: each is
// created (unscheduled, so kube-scheduler binds it), watched until it
// Succeeded, then deleted outside the timing, as BenchmarkPodStartup in
// tests/kubebox does with its pods. It returns pods completed per second.
// A pod that fails ends the measurement: a rate of the ones that worked would flatter.
func podRate(ctx context.Context, client kubernetes.Interface, ns, image, stubURL string, n, conc int) (float64, error) {
	pods := client.CoreV1().Pods(ns)
	w, err := pods.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("watching pods: %w", err)
	}
	defer w.Stop()
	var mu sync.Mutex
	done := map[string]chan corev1.PodPhase{}
	go func() {
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			if ph := pod.Status.Phase; ph == corev1.PodSucceeded || ph == corev1.PodFailed {
				mu.Lock()
				if ch, ok := done[pod.Name]; ok {
					ch <- ph
					delete(done, pod.Name)
				}
				mu.Unlock()
			}
		}
	}()

	var next atomic.Int64
	var deletes, workers sync.WaitGroup
	errs := make(chan error, conc)
	start := time.Now()
	for range conc {
		workers.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				name := fmt.Sprintf("plain-%05d", i)
				ch := make(chan corev1.PodPhase, 1)
				mu.Lock()
				done[name] = ch
				mu.Unlock()
				if _, err := pods.Create(ctx, plainPod(name, image, stubURL), metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("creating pod %s: %w", name, err)
					return
				}
				select {
				case ph := <-ch:
					if ph != corev1.PodSucceeded {
						errs <- fmt.Errorf("pod %s ended %s", name, ph)
						return
					}
				case <-time.After(2 * time.Minute):
					errs <- fmt.Errorf("pod %s did not finish in 2m", name)
					return
				}
				deletes.Go(func() {
					_ = pods.Delete(context.WithoutCancel(ctx), name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
				})
			}
		})
	}
	workers.Wait()
	elapsed := time.Since(start)
	deletes.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}

// plainPod runs the runner once against the stub, as a build Job's pod would
// run it against the dispatcher.
func plainPod(name, image, stubURL string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			Containers: []corev1.Container{{Name: "runner", Image: image, Env: []corev1.EnvVar{
				{Name: "KILN_DISPATCHER_URL", Value: stubURL},
				{Name: "KILN_BUILD_ID", Value: name},
				{Name: "KILN_RUNNER_TOKEN", Value: "stub"},
			}}},
		},
	}
}
