#!/usr/bin/env bash
# Installs what the end-to-end tier needs to run a real VS Code offline (see
# docs: code-server embeds the VS Code workbench; Debian chromium + playwright-core drive it).
# Idempotent: returns in well under a second when everything is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$ROOT/.e2e-cache"
CS_VERSION=4.100.3
CS_BIN="$CACHE/code-server/node_modules/.bin/code-server"

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v rg >/dev/null 2>&1 || need_apt+=(ripgrep)
dpkg -s libkrb5-dev >/dev/null 2>&1 || need_apt+=(libkrb5-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "e2e setup: apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ -x "$CS_BIN" ] && grep -q "\"version\": \"$CS_VERSION\"" "$CACHE/code-server/node_modules/code-server/package.json" 2>/dev/null; then
  echo "e2e setup: code-server $CS_VERSION already in $CACHE"
  exit 0
fi

mkdir -p "$CACHE/code-server" "$CACHE/tmp"
# @vscode/ripgrep downloads rg from GitHub unless its cache already holds the asset: seed
# the cache with Debian's rg so the install works offline.
export TMPDIR="$CACHE/tmp"
RG_CACHE="$TMPDIR/vscode-ripgrep-cache-1.15.11"
mkdir -p "$RG_CACHE"
for asset in ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz ripgrep-v13.0.0-4-x86_64-unknown-linux-musl.tar.gz; do
  if [ ! -f "$RG_CACHE/$asset" ]; then
    stage="$(mktemp -d)"; cp "$(command -v rg)" "$stage/rg"
    tar -czf "$RG_CACHE/$asset" -C "$stage" rg; rm -rf "$stage"
  fi
done

cd "$CACHE/code-server"
[ -f package.json ] || echo '{ "name": "loftq-e2e-code-server", "private": true }' > package.json
echo "e2e setup: installing code-server@$CS_VERSION into $CACHE (a few minutes)"
npm_config_yes=true npm install --no-audit --no-fund --unsafe-perm --foreground-scripts "code-server@$CS_VERSION"
test -x "$CS_BIN"
echo "e2e setup: done"
