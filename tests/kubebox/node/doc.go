// Package node is kubebox's process kubelet: it registers a Node with a real
// control plane, runs the containers of the pods bound to it as local
// processes, reports their status as a kubelet would, and serves the kubelet
// API that the apiserver proxies pods/exec, pods/log and pods/portforward to.
//
// What a pod gets:
//
//   - Images are not pulled: Config.Images maps an image to a host
//     executable, the image's entrypoint. command replaces it (resolved on
//     the host), args are appended, $(VAR) references are expanded. An
//     unmapped image ends in ErrImagePull / ImagePullBackOff.
//   - Each container is a process in its own mount and UTS namespace
//     (internal/nsinit): volumes (emptyDir, hostPath, secret, configMap,
//     downwardAPI, projected with a pod-bound service-account token) are
//     bind-mounted at their mount paths, so rest.InClusterConfig works
//     unchanged; the termination message file, /etc/hosts and /etc/hostname
//     are per container or pod; a working directory missing on the host is
//     the container's own empty directory. Mount points missing on the host
//     are created there, empty.
//   - env, envFrom and the downward API; KUBERNETES_SERVICE_HOST/PORT point
//     at the real apiserver. Every pod has IP 127.0.0.1 and shares the
//     node's network.
//   - Init containers (and restartable sidecars), restart policies with the
//     kubelet's back-off, startup/readiness/liveness probes, postStart and
//     preStop hooks, activeDeadlineSeconds, graceful deletion (SIGTERM to
//     the process group, the grace period, SIGKILL) and then deletion of
//     the pod object.
//   - Memory and CPU limits in cgroup v1 memory and cpu cgroups per
//     container, nested in the node's own; a kill by the OOM killer is
//     reported as OOMKilled. CPU requests (shares) are not applied.
//   - Real exit codes, reasons, times and termination messages in the
//     status, written with strategic-merge patches; kubelet events.
//   - Logs kept as CRI runtimes keep them (timestamped records), so
//     kubectl logs has -f, --tail, --previous, --timestamps, --since and
//     --limit-bytes; exec (with or without a terminal), attach (with the
//     container's stdin when spec.stdin is set) and port-forward.
//
// What it is not: an isolation boundary. Containers run as the node's user
// (securityContext is ignored), see the host's filesystem apart from their
// mounts, its processes and its network. Persistent volumes and
// a terminal for the container itself (spec.tty) are not supported.
package node
