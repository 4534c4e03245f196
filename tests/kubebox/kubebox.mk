# kubebox: a real Kubernetes control plane with a process-backed node.
# Included by the root Makefile (`-include tests/kubebox/kubebox.mk`); all
# paths are relative to the repository root.

KUBEBOX_VERSION := v1.37.2
KUBEBOX_BIN := $(CURDIR)/.kubebox/bin/$(KUBEBOX_VERSION)
KUBEBOX_RUN := $(CURDIR)/.kubebox/run
# Images of the background cluster: NAME=PATH runs host program PATH for
# containers of image NAME. Add yours: make kubebox-up KUBEBOX_IMAGES+="claude=$(CURDIR)/bin/claude"
KUBEBOX_IMAGES ?= sh=/bin/sh bash=/bin/bash
# Other flags for `kubebox up` (e.g. --node-name N).
KUBEBOX_UP_FLAGS ?=
KUBEBOX_GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)

.PHONY: kubebox-build kubebox-up kubebox-down test-kubebox bench-kubebox

kubebox-build: ## Build etcd, kube-apiserver, controller-manager, scheduler (cached) and the kubebox CLI
	@GO=$(KUBEBOX_GO) tests/kubebox/build.sh $(KUBEBOX_BIN)

kubebox-up: kubebox-build ## Start a kubebox cluster in the background (.kubebox/run); prints the KUBECONFIG export
	@mkdir -p $(KUBEBOX_RUN); \
	if [ -f $(KUBEBOX_RUN)/ready ] && kill -0 $$(cat $(KUBEBOX_RUN)/pid 2>/dev/null) 2>/dev/null; then \
		echo "kubebox: already running (pid $$(cat $(KUBEBOX_RUN)/pid))"; \
	else \
		nohup $(KUBEBOX_BIN)/kubebox up --dir $(KUBEBOX_RUN) $(addprefix --image ,$(KUBEBOX_IMAGES)) $(KUBEBOX_UP_FLAGS) \
			>$(KUBEBOX_RUN)/kubebox.log 2>&1 </dev/null & pid=$$!; \
		i=0; until [ -f $(KUBEBOX_RUN)/ready ]; do \
			if ! kill -0 $$pid 2>/dev/null || [ $$i -ge 1200 ]; then \
				echo "kubebox: failed to start; see $(KUBEBOX_RUN)/kubebox.log and $(KUBEBOX_RUN)/logs/" >&2; \
				tail -n 20 $(KUBEBOX_RUN)/kubebox.log >&2; kill $$pid 2>/dev/null; exit 1; \
			fi; \
			i=$$((i+1)); sleep 0.1; \
		done; \
	fi; \
	ln -sfn run/kubeconfig $(CURDIR)/.kubebox/kubeconfig; \
	echo "export KUBECONFIG=$(KUBEBOX_RUN)/kubeconfig"

kubebox-down: ## Stop the cluster started by kubebox-up
	@if [ -x $(KUBEBOX_BIN)/kubebox ]; then $(KUBEBOX_BIN)/kubebox down --dir $(KUBEBOX_RUN); fi; \
	rm -f $(CURDIR)/.kubebox/kubeconfig

test-kubebox: kubebox-build ## Run kubebox's own tests (control plane and node)
	cd tests/kubebox && KUBEBOX_BIN_DIR=$(KUBEBOX_BIN) $(KUBEBOX_GO) test -race -count=1 ./...

bench-kubebox: kubebox-build ## Pods started per second on kubebox, against the apiserver's create rate
	cd tests/kubebox && KUBEBOX_BIN_DIR=$(KUBEBOX_BIN) $(KUBEBOX_GO) test -run '^$$' -bench PodStartup -benchtime 5x .
