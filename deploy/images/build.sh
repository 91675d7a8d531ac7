#!/usr/bin/env bash
# Build the bookstream images from wheels prepared on this host (`make images`).
#
#   deploy/images/build.sh [lending shelving cli operator]     (default: all four)
#
# Env: TAG (default: the chart's appVersion, the tag the chart, the kustomize base, the CRD's
# defaults and the docs use) and REGISTRY (optional prefix) -> [$REGISTRY/]bookstream/<name>:$TAG;
# PUSH=1 pushes them after the build; BASE_IMAGE (passed as --build-arg when set,
# e.g. bookstream/base:py3.11 from `make image-base`; the Dockerfiles default to
# python:3.11-slim); PYTHON (the host Python 3.11 that builds the wheels; default .venv/bin/python
# or python3); CONTEXT (default .cache/images/context).
#
# Step 1 (`pip wheel`, on the host, which reaches the package index): every bookstream
# distribution and its dependencies become wheels in $CONTEXT/wheels, with pip's own wheel.
# Step 2 (`docker build`, offline): each Dockerfile installs its own distribution from those
# wheels with --no-index. The build context is only $CONTEXT (wheels/), never the source tree.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/helm/bookstream/Chart.yaml)
TAG=${TAG:-$APP_VERSION}
PREFIX=${REGISTRY:+${REGISTRY%/}/}bookstream
CONTEXT=${CONTEXT:-$ROOT/.cache/images/context}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "need Python 3.11 on the host to build cp311 wheels, got " + sys.version' 

declare -A DOCKERFILE=(
  [lending]=services/lending/Dockerfile
  [shelving]=services/shelving/Dockerfile
  [cli]=cli/Dockerfile
  [operator]=operator/Dockerfile
)
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(lending shelving cli operator)

DISTS=(./services/core ./services/lending ./services/shelving ./cli)
[ -f operator/pyproject.toml ] && DISTS+=(./operator)

WHEELS=$CONTEXT/wheels
STAMPS=$CONTEXT/stamps
mkdir -p "$WHEELS" "$STAMPS"
# A distribution's wheel is rebuilt only when its source files changed (content hash), so an
# unchanged tree gives byte-identical wheels and docker's layer cache makes the builds instant.
tree_hash() {
  "$PYTHON" - "$1" <<'PY'
import hashlib, pathlib, sys
root = pathlib.Path(sys.argv[1])
skip = {"build", "dist", "__pycache__", ".pytest_cache", ".mypy_cache"}
h = hashlib.sha256()
for p in sorted(root.rglob("*")):
    rel = p.relative_to(root)
    if p.is_dir() or any(part in skip or part.endswith(".egg-info") for part in rel.parts):
        continue
    if p.name == "Dockerfile" or p.suffix in {".pyc", ".md"}:
        continue
    h.update(str(rel).encode() + b"\0" + p.read_bytes() + b"\0")
print(h.hexdigest())
PY
}
stale=()
for dist in "${DISTS[@]}"; do
  key=$(basename "$dist")
  hash=$(tree_hash "$dist")
  if [ "$(cat "$STAMPS/$key" 2>/dev/null)" != "$hash" ]; then
    stale+=("$dist")
    echo "$hash" >"$STAMPS/$key.new"
  fi
done
echo "== wheels -> $WHEELS (${#stale[@]} of ${#DISTS[@]} distributions changed)"
if [ ${#stale[@]} -gt 0 ]; then
  # Our distributions, built from the tree.
  "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$WHEELS" "${stale[@]}"
  # Their dependencies, as binary wheels for the images' interpreter: CPython 3.11 on glibc
  # x86-64. Naming our wheels by path pins them to the ones just built. pip evaluates environment
  # markers with the host's full Python version, so dependencies only older 3.11.x releases need
  # are named here: redis needs async-timeout below 3.11.3, and Debian bookworm's python3 is
  # 3.11.2 (the Dockerfiles' `pip install --no-index` fails loudly if anything is still missing).
  MARKER_DEPS=(async-timeout)
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$WHEELS" --find-links "$WHEELS" \
    --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform linux_x86_64 --platform any \
    pip "${MARKER_DEPS[@]}" "$WHEELS"/bookstream*.whl
  for dist in "${stale[@]}"; do
    key=$(basename "$dist")
    mv "$STAMPS/$key.new" "$STAMPS/$key"
  done
fi

BUILD_ARGS=()
[ -n "${BASE_IMAGE:-}" ] && BUILD_ARGS+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
LOG=$CONTEXT/build.log
STEPS=$CONTEXT/build-steps.txt  # every step image of this run (tests check none is left dangling)
: >"$STEPS"
for name in "${NAMES[@]}"; do
  df=${DOCKERFILE[$name]:-}
  [ -n "$df" ] || { echo "unknown image $name (lending shelving cli operator)" >&2; exit 2; }
  [ -f "$df" ] || { echo "$df is missing" >&2; exit 1; }
  ref=$PREFIX/$name:$TAG
  echo "== $ref <- $df ${BASE_IMAGE:+(BASE_IMAGE=$BASE_IMAGE)}"
  # The legacy builder: the Dockerfiles use nothing BuildKit-only, and Debian's docker.io has
  # no buildx plugin. Its log names the image of every step, the build stage's included.
  DOCKER_BUILDKIT=0 docker build "${BUILD_ARGS[@]}" -f "$df" -t "$ref" "$CONTEXT" >"$LOG" 2>&1 \
    || { tail -n 30 "$LOG" >&2; exit 1; }
  docker image inspect --format "   {{.Id}} {{.Size}} bytes user={{.Config.User}}" "$ref"
  # The legacy builder keeps the build stage's result as an untagged (dangling) image: remove
  # those of this build, and only those (other dangling images are not ours to delete).
  steps=$(sed -n 's/^ ---> \([0-9a-f]\{12\}\)$/\1/p' "$LOG" | sort -u)
  echo "$steps" >>"$STEPS"
  dangling=$(docker image ls --quiet --no-trunc --filter dangling=true | sed 's/^sha256://' | cut -c1-12 | sort -u)
  stale_stage=$(comm -12 <(echo "$steps") <(echo "$dangling"))
  # (A concurrent build may be using one as its cache: then it stays, with a warning.)
  [ -z "$stale_stage" ] || docker image rm $stale_stage >/dev/null \
    || echo "warning: could not remove build-stage images $stale_stage" >&2
done
# Earlier builds of these images, now untagged: remove them (only ours, by their label).
for name in "${NAMES[@]}"; do
  docker image prune --force --filter "label=org.opencontainers.image.title=bookstream-$name" >/dev/null
done
if [ "${PUSH:-0}" = 1 ]; then
  for name in "${NAMES[@]}"; do
    echo "== push $PREFIX/$name:$TAG"
    docker push --quiet "$PREFIX/$name:$TAG"
  done
fi
