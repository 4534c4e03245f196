#!/usr/bin/env bash
# build.sh builds the kubebox control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) and the kubebox CLI from Go modules
# into <repo>/.kubebox/bin/<version>/.
#
# The control-plane binaries are rebuilt only when they are missing or when
# the stamp file (versions + Go toolchain) differs; the CLI is always rebuilt
# (the Go build cache makes that fast).
#
# Usage: tests/kubebox/build.sh [BIN_DIR]
#   BIN_DIR defaults to <repo>/.kubebox/bin/v1.37.2
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

GO="${GO:-go}"
command -v "$GO" >/dev/null 2>&1 || GO=/usr/local/go/bin/go

K8S_VERSION=v1.37.2
bin="${1:-$repo/.kubebox/bin/$K8S_VERSION}"
mkdir -p "$bin"

etcd_version="$("$GO" list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
k8s_version="$("$GO" list -m -f '{{.Version}}' k8s.io/kubernetes)"
if [ "$k8s_version" != "$K8S_VERSION" ]; then
	echo "build.sh: go.mod has k8s.io/kubernetes $k8s_version, expected $K8S_VERSION" >&2
	exit 1
fi
stamp="kubernetes=$K8S_VERSION etcd=$etcd_version $("$GO" env GOVERSION) ldflags=2"

programs=(etcd kube-apiserver kube-controller-manager kube-scheduler)
fresh=1
for p in "${programs[@]}"; do [ -x "$bin/$p" ] || fresh=0; done
[ -f "$bin/.stamp" ] && [ "$(cat "$bin/.stamp")" = "$stamp" ] || fresh=0

if [ "$fresh" = 0 ]; then
	minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
	# buildDate is the release's module time, so rebuilds are reproducible.
	build_date="$("$GO" list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
	pkg=k8s.io/component-base/version
	ldflags="-s -w \
-X $pkg.gitVersion=$K8S_VERSION \
-X $pkg.gitMajor=1 \
-X $pkg.gitMinor=$minor \
-X $pkg.gitTreeState=clean \
-X $pkg.buildDate=$build_date \
-X go.etcd.io/etcd/api/v3/version.GitSHA=kubebox"
	echo "kubebox: building ${programs[*]} ($stamp) into $bin" >&2
	start=$(date +%s)
	rm -f "$bin/.stamp"
	tmp="$(mktemp -d "$bin/.build.XXXXXX")"
	"$GO" build -ldflags "$ldflags" -o "$tmp/" \
		go.etcd.io/etcd/server/v3 \
		k8s.io/kubernetes/cmd/kube-apiserver \
		k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler
	# `go build` names etcd's binary "server" (its module path without /v3).
	mv "$tmp/server" "$tmp/etcd"
	for p in "${programs[@]}"; do mv -f "$tmp/$p" "$bin/$p"; done
	rmdir "$tmp"
	echo "$stamp" > "$bin/.stamp"
	echo "kubebox: control plane built in $(( $(date +%s) - start ))s" >&2
fi

if [ -d "$here/cmd/kubebox" ]; then
	"$GO" build -o "$bin/kubebox" ./cmd/kubebox
fi
