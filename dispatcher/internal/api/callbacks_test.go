package api_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
)

// GET /builds/{id} lists the build's callback attempts, as the spec says.
func TestGetBuildShowsCallbackAttempts(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	r := e.submit(p.ID, e.admin, map[string]any{"prompt": "p", "callback_url": "https://bots.example/cb"})
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	var acc schema.BuildAccepted
	r.decode(t, &acc)

	r = e.do("GET", "/builds/"+acc.TaskID, e.admin, nil)
	require.Equal(t, 200, r.Status)
	assert.NotContains(t, string(r.Body), `"callbacks"`, "no attempts yet")

	did := uuid.NewString()
	_, err := e.db.Pool.Exec(context.Background(), `INSERT INTO callback_attempts
		(delivery_id, build_id, attempt, status_code, outcome, error, duration_ms) VALUES
		($1, $2, 1, 503, 'retry', 'HTTP 503 Service Unavailable', 12),
		($1, $2, 2, 0, 'retry', 'network error: connection refused', 3),
		($1, $2, 3, 200, 'delivered', '', 9)`, did, acc.TaskID)
	require.NoError(t, err)

	r = e.do("GET", "/builds/"+acc.TaskID, e.admin, nil) // checked against schema/openapi.yaml
	require.Equal(t, 200, r.Status)
	var b schema.Build
	r.decode(t, &b)
	require.Len(t, b.Callbacks, 3)
	assert.Equal(t, did, b.Callbacks[2].DeliveryID)
	assert.Equal(t, 3, b.Callbacks[2].Attempt)
	assert.Equal(t, "delivered", b.Callbacks[2].Outcome)
	assert.Equal(t, 503, b.Callbacks[0].StatusCode)
	assert.Zero(t, b.Callbacks[1].StatusCode)
}
