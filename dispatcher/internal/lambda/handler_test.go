package lambda

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// echo answers with what it saw, and a few response features to map back.
type seen struct {
	Method, Path, RawPath, Query, Host, Remote, Cookie, RequestID, Accept, Proto string
	Body                                                                         []byte
	Length                                                                       int64
}

func echo() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s := seen{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), Query: r.URL.RawQuery, Host: r.Host,
			Remote: r.RemoteAddr, Cookie: r.Header.Get("Cookie"), RequestID: r.Header.Get("X-Request-Id"),
			Accept: r.Header.Get("Accept"), Proto: r.Proto, Body: b, Length: r.ContentLength}
		switch r.URL.Path {
		case "/binary":
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write([]byte{0xff, 0x00, 0xfe})
			return
		case "/panic":
			panic("boom")
		}
		http.SetCookie(w, &http.Cookie{Name: "a", Value: "1"})
		http.SetCookie(w, &http.Cookie{Name: "b", Value: "2"})
		w.Header().Add("Vary", "Accept")
		w.Header().Add("Vary", "Authorization")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(s)
	})
}

func TestFunctionURL(t *testing.T) {
	t.Parallel()
	h := &Handler{HTTP: echo()}
	body := []byte("{\"prompt\":\"hé\"}\x00")
	resp, err := h.FunctionURL(context.Background(), events.LambdaFunctionURLRequest{
		Version: "2.0", RawPath: "/projects/a%2Fb/builds", RawQueryString: "status=pending&limit=2",
		Cookies: []string{"c1=x", "c2=y"},
		Headers: map[string]string{"accept": "application/json,text/plain", "x-forwarded-for": "198.51.100.7"},
		Body:    base64.StdEncoding.EncodeToString(body), IsBase64Encoded: true,
		RequestContext: events.LambdaFunctionURLRequestContext{RequestID: "req-1", DomainName: "abc.lambda-url.eu-west-1.on.aws",
			HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{Method: "POST", SourceIP: "198.51.100.7", Protocol: "HTTP/1.1"}},
	})
	require.NoError(t, err)
	assert.Equal(t, http.StatusCreated, resp.StatusCode)
	assert.False(t, resp.IsBase64Encoded)
	assert.ElementsMatch(t, []string{"a=1", "b=2"}, resp.Cookies, "Set-Cookie headers become cookies")
	assert.NotContains(t, resp.Headers, "Set-Cookie")
	assert.Equal(t, "Accept,Authorization", resp.Headers["Vary"], "repeated headers are joined")
	var s seen
	require.NoError(t, json.Unmarshal([]byte(resp.Body), &s))
	assert.Equal(t, seen{Method: "POST", Path: "/projects/a/b/builds", RawPath: "/projects/a%2Fb/builds",
		Query: "status=pending&limit=2", Host: "abc.lambda-url.eu-west-1.on.aws", Remote: "198.51.100.7",
		Cookie: "c1=x; c2=y", RequestID: "req-1", Accept: "application/json,text/plain", Proto: "HTTP/1.1",
		Body: body, Length: int64(len(body))}, s)
}

func TestHTTPAPIStageAndBinary(t *testing.T) {
	t.Parallel()
	h := &Handler{HTTP: echo()}
	resp, err := h.HTTPAPI(context.Background(), events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: "ANY /{proxy+}", RawPath: "/prod/builds/1", Body: "plain",
		Headers: map[string]string{"Host": "api.example.com", "X-Request-Id": "mine"},
		RequestContext: events.APIGatewayV2HTTPRequestContext{Stage: "prod", RequestID: "gw-1", DomainName: "api.example.com",
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: "GET"}},
	})
	require.NoError(t, err)
	var s seen
	require.NoError(t, json.Unmarshal([]byte(resp.Body), &s))
	assert.Equal(t, "/builds/1", s.Path, "the stage prefix is taken off")
	assert.Equal(t, "mine", s.RequestID, "a caller's request id wins")
	assert.Equal(t, "api.example.com", s.Host)
	assert.Equal(t, []byte("plain"), s.Body)

	resp, err = h.HTTPAPI(context.Background(), events.APIGatewayV2HTTPRequest{Version: "2.0", RawPath: "/binary",
		RequestContext: events.APIGatewayV2HTTPRequestContext{Stage: "$default", HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: "GET"}}})
	require.NoError(t, err)
	assert.True(t, resp.IsBase64Encoded)
	b, err := base64.StdEncoding.DecodeString(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, []byte{0xff, 0x00, 0xfe}, b)
}

func TestInvoke(t *testing.T) {
	t.Parallel()
	h := &Handler{HTTP: echo()}
	for name, tc := range map[string]struct {
		event string
		code  int
	}{
		"function url": {`{"version":"2.0","rawPath":"/x","headers":{},"requestContext":{"domainName":"u.lambda-url.us-east-1.on.aws","http":{"method":"PUT"}}}`, 201},
		"http api":     {`{"version":"2.0","routeKey":"$default","rawPath":"/x","requestContext":{"stage":"$default","http":{"method":"PUT"}}}`, 201},
		"sse":          {`{"version":"2.0","rawPath":"/builds/1/events","headers":{"accept":"text/event-stream"},"requestContext":{"http":{"method":"GET"}}}`, 501},
		"websocket":    {`{"version":"2.0","rawPath":"/builds/1/events/ws","headers":{"upgrade":"websocket"},"requestContext":{"http":{"method":"GET"}}}`, 501},
		"panic":        {`{"version":"2.0","rawPath":"/panic","requestContext":{"http":{"method":"GET"}}}`, 500},
	} {
		out, err := h.Invoke(context.Background(), []byte(tc.event))
		require.NoError(t, err, name)
		var resp struct {
			StatusCode int               `json:"statusCode"`
			Headers    map[string]string `json:"headers"`
		}
		require.NoError(t, json.Unmarshal(out, &resp), name)
		assert.Equal(t, tc.code, resp.StatusCode, name)
		if tc.code >= 500 {
			assert.Equal(t, "application/problem+json", resp.Headers["Content-Type"], name)
		}
	}
	for _, bad := range []string{`{}`, `[1]`, `{"version":"1.0","httpMethod":"GET","path":"/"}`, `{"version":"2.0","rawPath":"/"}`, `not json`,
		`{"version":"2.0","rawPath":"/","isBase64Encoded":true,"body":"!!","requestContext":{"http":{"method":"POST"}}}`} {
		_, err := h.Invoke(context.Background(), []byte(bad))
		assert.Error(t, err, bad)
	}
}

func FuzzInvoke(f *testing.F) {
	f.Add(`{"version":"2.0","rawPath":"/x","rawQueryString":"a=b","cookies":["a=b"],"headers":{"h":"v"},"body":"aGk=","isBase64Encoded":true,"requestContext":{"http":{"method":"POST"}}}`)
	f.Add(`{"version":"2.0","rawPath":"/p/x","requestContext":{"stage":"p","domainName":"x.lambda-url.y","http":{"method":"GET"}}}`)
	f.Add(`{"version":"2.0","rawPath":"%zz","requestContext":{"http":{"method":"G ET"}}}`)
	h := &Handler{HTTP: echo()}
	f.Fuzz(func(t *testing.T, event string) {
		out, err := h.Invoke(context.Background(), []byte(event))
		if err != nil {
			return
		}
		var resp map[string]any
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatalf("response is not JSON: %v", err)
		}
	})
}
