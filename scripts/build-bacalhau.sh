#!/usr/bin/env bash
# Builds the pinned Bacalhau CLI/node binary (tools/bacalhau/go.mod) into a cache dir
# and prints its path on the last line of stdout. Skips the build when the binary for
# the pinned version is already there.
#
#   scripts/build-bacalhau.sh            # -> $HOME/.cache/sd-wasm/bacalhau/bin/bacalhau
#   BACALHAU_BIN=/x/bacalhau scripts/build-bacalhau.sh
#   BACALHAU_REBUILD=1 scripts/build-bacalhau.sh   # force a rebuild
#
# Go: /usr/local/go/bin/go (or `go` on PATH). GOMODCACHE/GOCACHE default to
# $HOME/.cache/sd-wasm/go/{mod,build} so developers and CI on one machine share them.
# A cold build takes several minutes on 2 cores; it runs under `nice`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/tools/bacalhau"
CACHE="${SD_WASM_CACHE:-$HOME/.cache/sd-wasm}"

export PATH="/usr/local/go/bin:$PATH"
export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE/go/build}"
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

command -v go >/dev/null || { echo "build-bacalhau: go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }

# The version pinned in tools/bacalhau/go.mod.
VERSION="$(awk '$1 == "github.com/bacalhau-project/bacalhau" { print $2; exit }' "$TOOLS/go.mod")"
[ -n "$VERSION" ] || { echo "build-bacalhau: no bacalhau version in $TOOLS/go.mod" >&2; exit 1; }

BIN="${BACALHAU_BIN:-$CACHE/bacalhau/bin/bacalhau}"
STAMP="$BIN.version"
# The stamp records the pinned version and the go.sum hash, so a changed pin rebuilds.
WANT="$VERSION $(sha256sum "$TOOLS/go.sum" | cut -c1-16) $(go env GOVERSION)"

if [ -z "${BACALHAU_REBUILD:-}" ] && [ -x "$BIN" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "build-bacalhau: $VERSION already built ($(cat "$STAMP"))" >&2
  echo "$BIN"
  exit 0
fi

mkdir -p "$(dirname "$BIN")"
echo "build-bacalhau: building bacalhau $VERSION with $(go env GOVERSION) -> $BIN" >&2
start=$(date +%s)
(
  cd "$TOOLS"
  # Same flags as bacalhau's Makefile (`make build-bacalhau`): version stamped via ldflags.
  nice -n 10 go build -trimpath \
    -ldflags "-s -w -X github.com/bacalhau-project/bacalhau/pkg/version.GITVERSION=$VERSION" \
    -o "$BIN.tmp" github.com/bacalhau-project/bacalhau
)
mv -f "$BIN.tmp" "$BIN"
echo "$WANT" > "$STAMP"
end=$(date +%s)
echo "build-bacalhau: built in $((end - start)) s" >&2
# `version` would initialise a repo in ~/.bacalhau: give it a throwaway one.
tmp="$(mktemp -d)"
BACALHAU_DIR="$tmp" "$BIN" version --client --output json >&2 || true
echo >&2
rm -rf "$tmp"
echo "$BIN"
