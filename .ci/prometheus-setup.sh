#!/usr/bin/env bash
# Install Debian's prometheus (the server binary the metrics test starts on its own port, and
# promtool, which tests/deploy/test_alerts.py runs on the alert rules) when either is missing. The package's service is not used: the test runs its own prometheus process with a
# temporary config and data directory. Idempotent; exits non-zero only if the install fails.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  command -v promtool >/dev/null || { echo "prometheus-setup: the package has no promtool" >&2; exit 1; }
echo "prometheus-setup: $(prometheus --version 2>&1 | head -n1)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "prometheus-setup: not root, cannot apt-get install prometheus" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package may start its own service where an init system runs; the test does not need it.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
command -v promtool >/dev/null || { echo "prometheus-setup: the package has no promtool" >&2; exit 1; }
echo "prometheus-setup: $(prometheus --version 2>&1 | head -n1)"
