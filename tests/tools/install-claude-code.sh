#!/usr/bin/env bash
# Installs the pinned Claude Code CLI (tests/tools/claude-code.version) from
# npm into .tools/claude-code/<version>/ (git-ignored) and prints the path of
# its native binary. Reuses an install whose --version matches. Installs npm
# with apt-get when it is absent. npm is only the installer: the CLI is a
# native binary and no Node process stays resident.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version="$(tr -d '[:space:]' < "$root/tests/tools/claude-code.version")"
dir="$root/.tools/claude-code/$version"
bin="$dir/node_modules/@anthropic-ai/claude-code/bin/claude.exe"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "^$version "; then
	echo "$bin"
	exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
	echo "claude-code: npm not found; installing it with apt-get" >&2
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >&2
fi
echo "claude-code: installing @anthropic-ai/claude-code@$version into $dir" >&2
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp"
# --prefix keeps it out of any global or parent node_modules.
npm install --prefix "$dir.tmp" --no-audit --no-fund --loglevel=error \
	"@anthropic-ai/claude-code@$version" >&2
tmpbin="$dir.tmp/node_modules/@anthropic-ai/claude-code/bin/claude.exe"
if ! [ -x "$tmpbin" ]; then
	echo "claude-code: the install did not produce $tmpbin" >&2
	exit 1
fi
got="$("$tmpbin" --version 2>&1 || true)"
case "$got" in
"$version "*) ;;
*) echo "claude-code: $tmpbin --version says '$got', want $version" >&2; exit 1 ;;
esac
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "$bin"
