package kubebox

// TEMPORARY ADAPTER: tests/kubebox/node (K2) has not landed yet. This stub
// registers a Ready Node and keeps it Ready, so the control plane can be
// started and tested; it runs no pods. Replace with the real node.New/Run
// as soon as the package compiles.

import (
	"context"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func runNode(ctx context.Context, cfg nodeConfig, log *slog.Logger, onExit func(error)) error {
	go func() { onExit(runStubNode(ctx, cfg, log)) }()
	return nil
}

func runStubNode(ctx context.Context, cfg nodeConfig, log *slog.Logger) error {
	nodes := cfg.Client.CoreV1().Nodes()
	status := func() corev1.NodeStatus {
		now := metav1.Now()
		return corev1.NodeStatus{
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("8"),
				corev1.ResourceMemory: resource.MustParse("16Gi"),
				corev1.ResourcePods:   resource.MustParse("110"),
			},
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("8"),
				corev1.ResourceMemory: resource.MustParse("16Gi"),
				corev1.ResourcePods:   resource.MustParse("110"),
			},
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				LastHeartbeatTime: now, LastTransitionTime: now,
			}},
			Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(cfg.KubeletPort)}},
		}
	}
	var node *corev1.Node
	for node == nil {
		n, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: cfg.Name}}, metav1.CreateOptions{})
		if err != nil {
			log.Warn("registering node", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		node = n
	}
	for {
		node.Status = status()
		n, err := nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
		if err != nil {
			log.Warn("updating node status", "err", err)
			if n, err = nodes.Get(ctx, cfg.Name, metav1.GetOptions{}); err == nil {
				node = n
			}
		} else {
			node = n
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
		if cur, err := nodes.Get(ctx, cfg.Name, metav1.GetOptions{}); err == nil {
			node = cur
		}
	}
}
