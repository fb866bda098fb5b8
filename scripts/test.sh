#!/usr/bin/env bash
# One command to set up and run the whole test suite (lint included). Installs redis-server
# when it is missing; the tests start their own on a free port (or use GENREC_TEST_REDIS_URL).
# Also nginx and prometheus, for the native stack that tests/test_dashboard.py starts.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
if [ -z "${GENREC_TEST_REDIS_URL:-}" ] && ! command -v redis-server >/dev/null; then
  missing="redis-server"
fi
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
command -v prometheus >/dev/null || missing="$missing prometheus"
if [ -n "$missing" ]; then
  echo "installing $missing"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  # RUNLEVEL=1: where there is no systemd, the packages' own services are not started (the
  # tests run their own on free ports).
  # shellcheck disable=SC2086
  $SUDO apt-get update -qq && $SUDO env RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
scripts/setup.sh test
. .venv/bin/activate
ruff check .
exec python -m pytest "$@"
