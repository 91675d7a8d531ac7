#!/usr/bin/env bash
# Make a local Python 3.11 base image without a registry: debootstrap Debian bookworm from the
# mirror this machine's apt sources name, then `docker import` it.
#
#   deploy/images/base.sh [TAG]        (default TAG: bookstream/base:py3.11; `make image-base`)
#
# The image holds Debian's python3.11 (3.11.x, the same minor version as python:3.11-slim) and
# nothing from PyPI; pass it to the Dockerfiles as --build-arg BASE_IMAGE=TAG (build.sh does when
# BASE_IMAGE is set). It is rebuilt only when missing, or when FORCE=1.
set -euo pipefail

TAG=${1:-${BASE_TAG:-bookstream/base:py3.11}}
SUITE=${SUITE:-bookworm}

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG exists (FORCE=1 rebuilds)"
  exit 0
fi

# The Debian mirror from apt's sources: deb822 .sources files first, then one-line sources.list.
mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    # First URIs: line of a stanza whose Suites include the suite itself (not -security).
    uri=$(awk -v suite="$SUITE" '
      /^[[:space:]]*$/ { if (u != "" && s) { print u; exit } u=""; s=0; next }
      /^URIs:/ { u=$2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) s=1 }
      END { if (u != "" && s) print u }' "$f" | head -n1)
    if [ -n "$uri" ]; then echo "$uri"; return; fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    uri=$(awk -v suite="$SUITE" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) { if ($(i+1) == suite) { print $i; exit } } }' "$f")
    if [ -n "$uri" ]; then echo "$uri"; return; fi
  done
  echo "http://deb.debian.org/debian"
}

MIRROR=${MIRROR:-$(mirror)}
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap (.ci/docker-setup.sh does)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "debootstrap needs root" >&2; exit 1; }

ROOT=$(mktemp -d /tmp/bookstream-rootfs.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
echo "debootstrap $SUITE from $MIRROR into $ROOT"
# minbase + python3 (Debian's python3.11 with the full stdlib incl. venv) + CA certificates.
debootstrap --variant=minbase --include=python3,ca-certificates "$SUITE" "$ROOT" "$MIRROR" \
  >"$ROOT.log" 2>&1 || { tail -n 30 "$ROOT.log" >&2; rm -f "$ROOT.log"; exit 1; }
rm -f "$ROOT.log"

# Trim what a runtime image never needs.
rm -rf "$ROOT"/var/cache/apt/* "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* \
  "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/var/log/* "$ROOT"/tmp/*
find "$ROOT"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
# python3 -> python, as in the python:3.11 images.
ln -sf python3 "$ROOT/usr/bin/python"

tar --numeric-owner -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap $SUITE minbase + python3 from $MIRROR" \
  - "$TAG"
docker run --rm "$TAG" python3 -c 'import sys, venv, ssl; assert sys.version_info[:2] == (3, 11), sys.version; print("base image", sys.version.split()[0])'
