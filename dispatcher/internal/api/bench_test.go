package api_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/schema"
)

// BenchmarkSubmit profiles the intake path in-process (make bench-intake
// measures it end to end against a baseline).
func BenchmarkSubmit(b *testing.B) {
	db := pgtest.New(b)
	a, err := app.New(app.Options{Pool: pgtest.Pool(b, db.Schema, 40), Schema: db.Schema, AuthCacheTTL: time.Minute,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = a.Stop(context.Background()) })
	p, err := a.Intake.CreateProject(context.Background(), &auth.Principal{Admin: true}, schema.ProjectInput{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := auth.Issue(context.Background(), db.Pool, "bench", false, []string{p.ID})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"prompt":"Update the landing page heading to say {{name}}.","variables":{"name":"Acme"},"auto_commit":true,"auto_push":true,"callback_url":"https://bots.example/cb"}`)
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", "/projects/"+p.ID+"/builds", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tok)
			w := &discardWriter{h: http.Header{}}
			a.Handler.ServeHTTP(w, req)
			if w.code != http.StatusAccepted {
				b.Fatalf("status %d", w.code)
			}
		}
	})
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(c int)           { d.code = c }
