#!/usr/bin/env bash
# One command to set up and run the whole test suite (lint included). Installs redis-server
# when it is missing; the tests start their own on a free port (or use GENREC_TEST_REDIS_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${GENREC_TEST_REDIS_URL:-}" ] && ! command -v redis-server >/dev/null; then
  echo "installing redis-server"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi
scripts/setup.sh test
. .venv/bin/activate
ruff check .
exec python -m pytest "$@"
