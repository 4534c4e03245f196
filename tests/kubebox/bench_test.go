package kubebox_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
)

// BenchmarkPodStartup measures pods started per second: each iteration
// creates a batch of pods (unscheduled, so kube-scheduler binds them) and
// waits until every one is Running on the node, then deletes them untimed.
// The baseline, measured in the same run, is how fast the apiserver accepted
// the creates; "started/created" is the ratio of the two rates (1 would mean
// scheduling and starting cost nothing beyond the API writes).
//
//	go test -run '^$' -bench PodStartup -benchtime 3x
func BenchmarkPodStartup(b *testing.B) {
	const batch, creators = 50, 8
	ctx := b.Context()
	client := shared.Client()
	ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kubebox-bench-"},
	}, metav1.CreateOptions{})
	require.NoError(b, err)
	b.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	pods := client.CoreV1().Pods(ns.Name)
	var started, created time.Duration

	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		w, err := pods.Watch(ctx, metav1.ListOptions{})
		require.NoError(b, err)
		b.StartTimer()
		t0 := time.Now()

		var next atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, creators)
		for range creators {
			wg.Go(func() {
				for j := next.Add(1); j <= batch; j = next.Add(1) {
					_, err := pods.Create(ctx, benchPod(fmt.Sprintf("p%d-%d", i, j)), metav1.CreateOptions{})
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		createdDone := make(chan time.Duration, 1)
		go func() { wg.Wait(); createdDone <- time.Since(t0) }()
		running := map[string]bool{}
		timeout := time.After(2 * time.Minute)
		for len(running) < batch {
			select {
			case ev, ok := <-w.ResultChan():
				require.True(b, ok, "watch closed")
				if pod, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted &&
					pod.Status.Phase == corev1.PodRunning {
					running[pod.Name] = true
				}
			case err := <-errs:
				b.Fatal(err)
			case <-timeout:
				b.Fatalf("only %d of %d pods Running after 2m", len(running), batch)
			}
		}
		started += time.Since(t0)
		created += <-createdDone
		b.StopTimer()
		w.Stop()

		require.NoError(b, pods.DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)},
			metav1.ListOptions{}))
		require.NoError(b, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true,
			func(ctx context.Context) (bool, error) {
				l, err := pods.List(ctx, metav1.ListOptions{})
				return err == nil && len(l.Items) == 0, nil
			}))
		b.StartTimer()
	}
	startRate := float64(batch*b.N) / started.Seconds()
	createRate := float64(batch*b.N) / created.Seconds()
	b.ReportMetric(startRate, "pods/s")
	b.ReportMetric(createRate, "created-pods/s")
	b.ReportMetric(startRate/createRate, "started/created")
}

func benchPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			Containers:                    []corev1.Container{{Name: "main", Image: "sleep", Args: []string{"3600"}}},
		},
	}
}
