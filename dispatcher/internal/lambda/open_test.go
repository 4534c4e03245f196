package lambda

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/config"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/schema"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A build submitted through the Lambda handler runs the real router on an
// insert-only app: 202, with its audit row and River job written together.
func TestOpenSubmitsBuild(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	env := map[string]string{"KILN_DATABASE_URL": db.URL, "KILN_DB_SCHEMA": db.Schema, "KILN_WORKERS": "10"}
	cfg, _, err := config.Parse("lambda", nil, func(k string) string { return env[k] })
	require.NoError(t, err)
	ctx := context.Background()
	h, a, err := Open(ctx, cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = a.Stop(sctx)
		a.Pool.Close()
	})
	admin, err := auth.Issue(ctx, db.Pool, "ops", true, nil)
	require.NoError(t, err)

	var headers map[string]string
	callWith := func(method, path, token string, body any, extra map[string]string) (int, []byte) {
		b, _ := json.Marshal(body)
		hdr := map[string]string{"authorization": "Bearer " + token, "content-type": "application/json"}
		for k, v := range extra {
			hdr[k] = v
		}
		resp, err := h.FunctionURL(ctx, events.LambdaFunctionURLRequest{Version: "2.0", RawPath: path, Body: string(b),
			Headers: hdr,
			RequestContext: events.LambdaFunctionURLRequestContext{DomainName: "x.lambda-url.eu-west-1.on.aws",
				HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{Method: method}}})
		require.NoError(t, err)
		headers = resp.Headers
		return resp.StatusCode, []byte(resp.Body)
	}
	call := func(method, path, token string, body any) (int, []byte) {
		return callWith(method, path, token, body, nil)
	}
	code, body := call("GET", "/readyz", "", nil)
	assert.Equal(t, http.StatusOK, code, "ready: %s", body)
	code, body = call("POST", "/projects", "", map[string]any{"name": "lam"})
	assert.Equal(t, http.StatusUnauthorized, code, "%s", body)
	assert.Empty(t, headers["Connection"], "no connection to close behind a Lambda")
	code, body = call("POST", "/projects", admin, map[string]any{"name": "lam"})
	require.Equal(t, http.StatusCreated, code, "%s", body)
	var p schema.Project
	require.NoError(t, json.Unmarshal(body, &p))
	code, body = call("POST", "/projects/"+p.ID+"/builds", admin, map[string]any{"prompt": "hello from lambda"})
	require.Equal(t, http.StatusAccepted, code, "%s", body)
	var acc schema.BuildAccepted
	require.NoError(t, json.Unmarshal(body, &acc))

	// Headers arrive as the event carries them, unchecked by net/http: the
	// edge refuses a control character in the key itself.
	code, body = callWith("POST", "/projects/"+p.ID+"/builds", admin, map[string]any{"prompt": "x"},
		map[string]string{"idempotency-key": "k\x00"})
	assert.Equal(t, http.StatusBadRequest, code, "%s", body)
	assert.Contains(t, string(body), "Idempotency-Key: must not contain control characters")
	assert.Equal(t, "application/problem+json", headers["Content-Type"])

	var status string
	require.NoError(t, db.Pool.QueryRow(ctx, "SELECT status FROM builds WHERE id = $1", acc.TaskID).Scan(&status))
	assert.Equal(t, "pending", status)
	var jobs int
	require.NoError(t, db.Pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE kind = 'kiln_dispatch' AND args->>'build_id' = $1 AND state = 'available'",
		acc.TaskID).Scan(&jobs))
	assert.Equal(t, 1, jobs, "one River job, not worked here (insert-only)")
}
