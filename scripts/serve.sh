#!/usr/bin/env bash
# One command from a fresh checkout to a running service: set up, build the default
# artifacts from the bundled MovieLens-100K when missing, serve on http://127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/genrec serve --dataset "${GENREC_DATASET:-ml-100k}" \
  --host "${GENREC_HOST:-127.0.0.1}" --port "${GENREC_PORT:-8000}" "$@"
