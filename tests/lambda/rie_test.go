package lambda

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/kilnbuild/kiln/tests/childproc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/schema/migrate"
)

// RIEVersion is the emulator installed when aws-lambda-rie is not on PATH.
const RIEVersion = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@v0.0.0-20261030222936-bef5c4ba774d"

func dbURL() string {
	if u := os.Getenv("KILN_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable"
}

func gobuild(t *testing.T, out, pkg string, env ...string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), env...)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build %s: %s", pkg, b)
}

// rie finds aws-lambda-rie, or installs it into a temporary GOBIN (~7 s).
func rie(t *testing.T, dir string) string {
	t.Helper()
	if p, err := exec.LookPath("aws-lambda-rie"); err == nil {
		return p
	}
	gobin := filepath.Join(dir, "gobin")
	cmd := exec.Command("go", "install", RIEVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=-mod=mod")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "installing aws-lambda-rie: %s", b)
	return filepath.Join(gobin, "aws-lambda-rie")
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// newSchema makes a migrated schema, dropped at cleanup.
func newSchema(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	name := "lambda_" + hex.EncodeToString(b)
	admin, err := pgxpool.New(ctx, dbURL())
	require.NoError(t, err)
	defer admin.Close()
	_, err = admin.Exec(ctx, "CREATE SCHEMA "+name)
	require.NoError(t, err, "is PostgreSQL running? make postgres")
	t.Cleanup(func() {
		if c, err := pgxpool.New(context.Background(), dbURL()); err == nil {
			_, _ = c.Exec(context.Background(), "DROP SCHEMA "+name+" CASCADE")
			c.Close()
		}
	})
	cfg, err := pgxpool.ParseConfig(dbURL())
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["search_path"] = name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = migrate.Up(ctx, pool, migrate.Options{Schema: name})
	require.NoError(t, err)
	return pool, name
}

// response is what a Function URL or HTTP API v2 invocation returns.
type response struct {
	StatusCode      int               `json:"statusCode"`
	Headers         map[string]string `json:"headers"`
	Body            string            `json:"body"`
	IsBase64Encoded bool              `json:"isBase64Encoded"`
}

func TestBuildThroughRIE(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the Lambda binary under the emulator")
	}
	dir := t.TempDir()
	bootstrap := filepath.Join(dir, "bootstrap")
	gobuild(t, bootstrap, "../../dispatcher/lambda", "GOOS=linux", "CGO_ENABLED=0")
	gobuild(t, filepath.Join(dir, "dispatcher"), "../../dispatcher")
	emulator := rie(t, dir)
	pool, sch := newSchema(t)
	dbEnv := []string{"KILN_DATABASE_URL=" + dbURL(), "KILN_DB_SCHEMA=" + sch}

	// An admin token, made by the dispatcher's own command.
	tok := exec.Command(filepath.Join(dir, "dispatcher"), "token", "create", "--name", "lambda-e2e", "--admin")
	tok.Env = append(os.Environ(), dbEnv...)
	out, err := tok.Output()
	require.NoError(t, err)
	admin := strings.TrimSpace(string(out))

	addr := freePort(t)
	var logs bytes.Buffer
	cmd := exec.Command(emulator, "--runtime-interface-emulator-address", addr, "--runtime-api-address", freePort(t), bootstrap)
	cmd.Env = append(os.Environ(), append(dbEnv, "KILN_LOG_LEVEL=info", "AWS_LAMBDA_FUNCTION_TIMEOUT=30")...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, childproc.Start(cmd))
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the emulator and the bootstrap it started
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("emulator and bootstrap output:\n%s", logs.String())
		}
	})
	url := "http://" + addr + "/2015-03-31/functions/function/invocations"
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "emulator listening")

	invoke := func(event map[string]any) (response, time.Duration) {
		t.Helper()
		b, err := json.Marshal(event)
		require.NoError(t, err)
		start := time.Now()
		resp, err := http.Post(url, "application/json", bytes.NewReader(b))
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		took := time.Since(start)
		require.Equal(t, http.StatusOK, resp.StatusCode, "invocation: %s", body)
		var r response
		require.NoError(t, json.Unmarshal(body, &r), "invocation result: %s", body)
		return r, took
	}
	headers := func(token string) map[string]string {
		return map[string]string{"authorization": "Bearer " + token, "content-type": "application/json", "host": "kiln.example.com"}
	}
	functionURL := func(method, path string, body any) map[string]any {
		b, _ := json.Marshal(body)
		return map[string]any{"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
			"headers": headers(admin), "body": string(b), "isBase64Encoded": false,
			"requestContext": map[string]any{"accountId": "anonymous", "requestId": "fu-" + path, "apiId": "abc",
				"domainName": "abc.lambda-url.eu-west-1.on.aws", "domainPrefix": "abc",
				"http": map[string]any{"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "198.51.100.1", "userAgent": "test"}}}
	}

	// Function URL: create a project (cold start: the first invocation starts the bootstrap).
	r, cold := invoke(functionURL("POST", "/projects", map[string]any{"name": "lambda-proj"}))
	require.Equal(t, http.StatusCreated, r.StatusCode, "%s", r.Body)
	var p schema.Project
	require.NoError(t, json.Unmarshal([]byte(r.Body), &p))

	// Function URL: submit a build.
	r, warmFU := invoke(functionURL("POST", "/projects/"+p.ID+"/builds", map[string]any{"prompt": "via function url"}))
	require.Equal(t, http.StatusAccepted, r.StatusCode, "%s", r.Body)
	var a1 schema.BuildAccepted
	require.NoError(t, json.Unmarshal([]byte(r.Body), &a1))
	assert.NotEmpty(t, r.Headers["Location"])

	// HTTP API v2 on a named stage, base64 body, through the older alias route.
	body, _ := json.Marshal(map[string]any{"prompt": "via http api"})
	r, warmAPI := invoke(map[string]any{"version": "2.0", "routeKey": "POST /project/{name}/build",
		"rawPath": "/v1/project/lambda-proj/build", "rawQueryString": "", "cookies": []string{"session=x"},
		"headers": headers(admin), "body": encode(body), "isBase64Encoded": true,
		"requestContext": map[string]any{"accountId": "123456789012", "apiId": "api1", "stage": "v1", "requestId": "gw-1",
			"domainName": "api1.execute-api.eu-west-1.amazonaws.com", "domainPrefix": "api1", "routeKey": "POST /project/{name}/build",
			"http": map[string]any{"method": "POST", "path": "/v1/project/lambda-proj/build", "protocol": "HTTP/1.1", "sourceIp": "198.51.100.2", "userAgent": "test"}},
		"pathParameters": map[string]string{"name": "lambda-proj"}})
	require.Equal(t, http.StatusAccepted, r.StatusCode, "%s", r.Body)
	var a2 schema.BuildAccepted
	require.NoError(t, json.Unmarshal([]byte(r.Body), &a2))
	assert.Equal(t, "gw-1", r.Headers["X-Request-Id"], "the API Gateway request id is the request id")

	// No token: 401 through the emulator too.
	ev := functionURL("GET", "/builds/"+a1.TaskID, nil)
	ev["headers"] = map[string]string{}
	r, _ = invoke(ev)
	assert.Equal(t, http.StatusUnauthorized, r.StatusCode)

	// Both builds are durable: audit row and River job, not worked (insert-only).
	ctx := context.Background()
	for _, id := range []string{a1.TaskID, a2.TaskID} {
		var status string
		require.NoError(t, pool.QueryRow(ctx, "SELECT status FROM builds WHERE id = $1", id).Scan(&status))
		assert.Equal(t, "pending", status)
		var jobs int
		require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE kind = 'kiln_dispatch' AND args->>'build_id' = $1 AND state = 'available'", id).Scan(&jobs))
		assert.Equal(t, 1, jobs, "River job of %s", id)
	}
	t.Logf("RIE round trips: cold start (first invocation) %s, warm Function URL %s, warm HTTP API %s", cold, warmFU, warmAPI)
	fmt.Fprintf(os.Stderr, "lambda: cold %s warm %s/%s\n", cold.Round(time.Millisecond), warmFU.Round(time.Millisecond), warmAPI.Round(time.Millisecond))
}
