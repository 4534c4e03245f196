# Kiln — build dispatcher for bot-driven development.
# `make help` lists the targets.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO ?= go
BENCH_E2E_N ?= 50
PG_URL ?= postgres://postgres@127.0.0.1:5432
export KILN_TEST_DATABASE_URL ?= $(PG_URL)/kiln_test?sslmode=disable

.DEFAULT_GOAL := help

include tests/kubebox/kubebox.mk

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

.PHONY: build
build: ## build bin/dispatcher and bin/jobrunner
	$(GO) build -o bin/dispatcher ./dispatcher
	@if [ -f jobrunner/main.go ]; then $(GO) build -o bin/jobrunner ./jobrunner; fi

.PHONY: postgres
postgres: ## make sure PostgreSQL runs on 127.0.0.1:5432 (installs/starts it) with databases kiln and kiln_test; installs redis-server for the add-on tests
	@bash tests/tools/ensure-postgres.sh kiln kiln_test
	@bash tests/tools/ensure-redis.sh

.PHONY: chromium
chromium: ## make sure Debian's chromium is installed (for the console's browser tests)
	@bash tests/tools/ensure-chromium.sh >/dev/null

.PHONY: claude-code
claude-code: ## install the pinned Claude Code CLI (tests/tools/claude-code.version) into .tools/ (reused when present)
	@bash tests/tools/install-claude-code.sh >/dev/null

.PHONY: record-fixtures
record-fixtures: claude-code ## record the pinned CLI's transcripts (against the stand-in Messages API) into jobrunner/internal/agent/testdata/claude-code
	$(GO) run ./tests/messagesapi/cmd/record

.PHONY: lint
lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^tests/kubebox/')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

.PHONY: test
test: postgres lint test-ops test-go test-kubebox ## run every test (what CI runs)

.PHONY: test-go
test-go: postgres chromium build kubebox-build claude-code ## the product's tests, with the race detector (end-to-end ones on kubebox)
	$(GO) test -race -count=1 -timeout 20m ./...

.PHONY: promtool
promtool: ## make sure promtool is installed (Debian's prometheus package)
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

.PHONY: test-ops
test-ops: postgres promtool ## alerting rules (promtool check/test), dashboard PromQL and metric names against a real /metrics
	$(GO) test -race -count=1 ./tests/ops/... ./dispatcher/internal/metrics/...

.PHONY: bench
bench: bench-intake bench-events bench-dispatch bench-backlog bench-scale bench-e2e bench-metrics bench-admission bench-abuse ## every benchmark; prints figures and ratios

.PHONY: bench-intake
bench-intake: postgres ## accepted builds/s at 1, 8, 32 clients vs a plain INSERT loop on the same database
	$(GO) run ./tests/bench/intake

.PHONY: bench-events
bench-events: postgres build ## events/s via the runner path vs plain INSERT; fan-out lag p50/p99 to 100 SSE watchers vs the NOTIFY round trip
	$(GO) run ./tests/bench/events

.PHONY: bench-dispatch
bench-dispatch: postgres build kubebox-build ## submit → Job created p50/p99 at 5 and 20 builds/s vs a plain client-go Job create, on kubebox
	$(GO) run ./tests/bench/dispatch

.PHONY: bench-backlog
bench-backlog: postgres build kubebox-build ## a backlog across 100 projects, one with a head start, under a max in flight, on kubebox: drain rate vs plain runner pods, FIFO, first-build waits vs an admission round, waits by project (BACKLOG_FLAGS='-builds 5000 -big 2000')
	$(GO) run ./tests/bench/backlog $(BACKLOG_FLAGS)

.PHONY: bench-scale
bench-scale: postgres build kubebox-build ## 100/300/1000 builds held running across 50 projects on kubebox: dispatcher RSS, CPU, informer objects, Postgres connections, apiserver requests per build by verb/resource, release write rates; slopes per 100 builds
	$(GO) run ./tests/bench/scale

.PHONY: bench-e2e
bench-e2e: postgres build kubebox-build claude-code ## submit → completed p50/p99 over 50 builds (BENCH_E2E_N) with the no-op agent and the real CLI on a one-edit script vs a plain Job of the same runner, phase by phase, on kubebox
	KILN_BENCH_E2E=1 KILN_BENCH_E2E_N=$(BENCH_E2E_N) $(GO) test -count=1 -timeout 40m -run '^TestBenchE2E$$' -v ./tests/e2e

.PHONY: bench-abuse
bench-abuse: postgres build ## normal client p50/p99 under slow bodies, held connections, 500 streams, a greedy token, 8 full lists vs idle; RSS, held connections
	$(GO) run ./tests/bench/abuse

.PHONY: bench-metrics
bench-metrics: postgres ## /metrics queue figures with 100k River jobs: refresh and cached scrape vs a plain count(*)
	$(GO) test -run '^$$' -bench QueueStats -benchtime 20x ./dispatcher/internal/metrics

.PHONY: bench-admission
bench-admission: postgres ## one admission round's query with 2,000 and 20,000 builds waiting over 100 projects (and 20,000 finished): its cost against the backlog's size
	$(GO) test -run '^$$' -bench NextAdmissions -benchtime 100x ./dispatcher/internal/store

.PHONY: dev-up
dev-up: postgres build kubebox-build claude-code ## start the local stack (Postgres, kubebox, add-on servers, git server, stand-in Messages API, dispatcher); writes .dev/env
	@bash tests/tools/dev-up.sh

.PHONY: dev-down
dev-down: ## stop exactly what make dev-up started (by the pids in .dev/pids)
	@bash tests/tools/dev-down.sh

.PHONY: demo
demo: postgres build kubebox-build claude-code ## run the whole flow on the local stack (dev-up unless up): a managed project with add-ons via the API, a build with curl
	@bash tests/tools/demo.sh

.PHONY: clean
clean: ## remove built binaries
	rm -rf bin
