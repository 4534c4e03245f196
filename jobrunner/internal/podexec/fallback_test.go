package podexec

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	oldhttpstream "k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"
)

// An apiserver that refuses the WebSocket upgrade makes Exec fall back to
// SPDY; the predicate that notices must be k8s.io/streaming's.
func TestFallsBackToSPDY(t *testing.T) {
	t.Parallel()
	var (
		mu       sync.Mutex
		upgrades []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upgrades = append(upgrades, r.Method+" "+strings.ToLower(r.Header.Get("Upgrade")))
		mu.Unlock()
		http.Error(w, "upgrade refused", http.StatusBadRequest)
	}))
	defer srv.Close()
	cfg := &rest.Config{Host: srv.URL}
	client, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	e := New(client, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	_, err = e.Exec(context.Background(), Container{Namespace: "ns", Pod: "p", Container: "c"}, Request{Argv: []string{"true"}})
	require.Error(t, err)
	require.EqualValues(t, 1, e.Fallbacks())
	require.Equal(t, []string{"GET websocket", "POST spdy/3.1"}, upgrades)

	// The old predicate in apimachinery does not recognise the error client-go returns.
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", srv.URL+"/api/v1/namespaces/ns/pods/p/exec?command=true")
	require.NoError(t, err)
	wsErr := ws.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdout: io.Discard})
	require.True(t, httpstream.IsUpgradeFailure(wsErr), "%v", wsErr)
	require.False(t, oldhttpstream.IsUpgradeFailure(wsErr), "%v", wsErr)
}
