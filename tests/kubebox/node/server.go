package node

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

const (
	execIdleTimeout = 4 * time.Hour
	followPoll      = 100 * time.Millisecond
)

// handler is the kubelet API the apiserver proxies pods/exec, pods/attach,
// pods/log and pods/portforward to.
func (n *Node) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", n.serveExec)
	mux.HandleFunc("/exec/{ns}/{pod}/{uid}/{container}", n.serveExec)
	mux.HandleFunc("/attach/{ns}/{pod}/{container}", n.serveAttach)
	mux.HandleFunc("/attach/{ns}/{pod}/{uid}/{container}", n.serveAttach)
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", n.serveLogs)
	mux.HandleFunc("/portForward/{ns}/{pod}", n.servePortForward)
	mux.HandleFunc("/portForward/{ns}/{pod}/{uid}", n.servePortForward)
	return mux
}

type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func writeError(w http.ResponseWriter, err error) {
	var he *httpError
	if errors.As(err, &he) {
		http.Error(w, he.msg, he.code)
		return
	}
	http.Error(w, err.Error(), http.StatusInternalServerError)
}

// lookup finds a container of a pod bound to this node.
func (n *Node) lookup(ns, name, ctr, uid string) (*podWorker, *container, error) {
	pod, err := n.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) || (err == nil && uid != "" && string(pod.UID) != uid) {
		return nil, nil, &httpError{http.StatusNotFound, fmt.Sprintf("pod %s/%s not found", ns, name)}
	}
	if err != nil {
		return nil, nil, err
	}
	w := n.worker(pod.UID)
	if w == nil {
		return nil, nil, &httpError{http.StatusNotFound, fmt.Sprintf("pod %s/%s is not running on this node", ns, name)}
	}
	c := w.container(ctr)
	if c == nil {
		return nil, nil, &httpError{http.StatusBadRequest, fmt.Sprintf("container %s is not valid for pod %s", ctr, name)}
	}
	return w, c, nil
}
