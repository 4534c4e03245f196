package callback_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/callback"
	"github.com/kilnbuild/kiln/schema"
)

var (
	payloadOnce   sync.Once
	payloadSchema *openapi3.Schema
	payloadErr    error
)

// callbackPayloadSchema is openapi.yaml's CallbackPayload, the body of the
// buildFinished webhook.
func callbackPayloadSchema(t *testing.T) *openapi3.Schema {
	t.Helper()
	payloadOnce.Do(func() {
		doc, err := openapi3.NewLoader().LoadFromData(schema.OpenAPI)
		if err != nil {
			payloadErr = err
			return
		}
		if payloadErr = doc.Validate(context.Background()); payloadErr != nil {
			return
		}
		ref := doc.Components.Schemas["CallbackPayload"]
		if ref == nil || ref.Value == nil {
			payloadErr = errors.New("no components.schemas.CallbackPayload")
			return
		}
		op := doc.Webhooks["buildFinished"]
		if op == nil || op.Post == nil || op.Post.RequestBody.Value.Content.Get("application/json").Schema.Ref != "#/components/schemas/CallbackPayload" {
			payloadErr = errors.New("webhooks.buildFinished's body is not a CallbackPayload")
			return
		}
		payloadSchema = ref.Value
	})
	require.NoError(t, payloadErr, "schema/openapi.yaml: components.schemas.CallbackPayload, the body of webhooks.buildFinished")
	return payloadSchema
}

// checkPayload checks a delivered body against openapi.yaml.
func checkPayload(t *testing.T, body []byte) {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(body, &v))
	require.NoError(t, callbackPayloadSchema(t).VisitJSON(v), "callback body does not match openapi.yaml's CallbackPayload: %s", body)
}

// openapi.yaml's CallbackPayload declares Payload's fields, with the same
// required set (those without omitempty).
func TestPayloadMatchesOpenAPI(t *testing.T) {
	t.Parallel()
	s := callbackPayloadSchema(t)
	var fields, required []string
	typ := reflect.TypeOf(callback.Payload{})
	for i := range typ.NumField() {
		name, opts, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		fields = append(fields, name)
		if !strings.Contains(opts, "omitempty") {
			required = append(required, name)
		}
	}
	var props []string
	for p := range s.Properties {
		props = append(props, p)
	}
	slices.Sort(props)
	slices.Sort(fields)
	assert.Equal(t, fields, props, "CallbackPayload's properties")
	slices.Sort(required)
	want := slices.Clone(s.Required)
	slices.Sort(want)
	assert.Equal(t, required, want, "CallbackPayload's required properties")

	// The schema is strict: what checkPayload passes is the whole contract.
	for _, bad := range []string{
		`{"task_id":"0193f0b2-6c1e-7d1a-9c4e-2f1f3b7a9d10","project_id":"0193f0b2-6c1e-7d1a-9c4e-2f1f3b7a9d11","status":"completed","result":null,"error":"","finished_at":null,"extra":1}`,
		`{"task_id":"0193f0b2-6c1e-7d1a-9c4e-2f1f3b7a9d10","status":"completed","result":null,"error":"","finished_at":null}`,
	} {
		var v any
		require.NoError(t, json.Unmarshal([]byte(bad), &v))
		assert.Error(t, s.VisitJSON(v), bad)
	}
	var v any
	require.NoError(t, json.Unmarshal([]byte(`{"task_id":"0193f0b2-6c1e-7d1a-9c4e-2f1f3b7a9d10","project_id":"0193f0b2-6c1e-7d1a-9c4e-2f1f3b7a9d11",`+
		`"status":"cancelled","result":null,"error":"cancelled while pending","reason":"cancelled","finished_at":"2026-11-26T23:59:01.123456Z",`+
		`"console_url":"https://kiln.example.com/ui/builds/0193f0b2-6c1e-7d1a-9c4e-2f1f3b7a9d10"}`), &v))
	assert.NoError(t, s.VisitJSON(v), "a build cancelled while pending: no result")
}

// With a public URL configured, the payload links to the build's page in
// the web console; the body matches openapi.yaml.
func TestPayloadCarriesConsoleURL(t *testing.T) {
	e := setup(t, "127.0.0.1", func(o *app.Options) { o.PublicURL = "https://kiln.example.com" })
	srv, got := receiver(t, 200)
	id := e.finish(srv.URL + "/hook")
	as := e.attempts(id)
	require.Len(t, as, 1)
	require.Equal(t, "delivered", as[0].Outcome)
	reqs := got()
	require.Len(t, reqs, 1)
	checkPayload(t, reqs[0].body)
	var p callback.Payload
	require.NoError(t, json.Unmarshal(reqs[0].body, &p))
	assert.Equal(t, "https://kiln.example.com/ui/builds/"+id, p.ConsoleURL)
}

// Without one, the payload has no console_url at all.
func TestPayloadWithoutPublicURL(t *testing.T) {
	e := setup(t, "127.0.0.1")
	srv, got := receiver(t, 200)
	as := e.attempts(e.finish(srv.URL + "/hook"))
	require.Len(t, as, 1)
	reqs := got()
	require.Len(t, reqs, 1)
	checkPayload(t, reqs[0].body)
	var keys map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(reqs[0].body, &keys))
	assert.NotContains(t, keys, "console_url")
}
