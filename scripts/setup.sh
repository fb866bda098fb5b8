#!/usr/bin/env bash
# Creates .venv with the CPU build of torch and the project installed (editable).
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }

PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "genrec needs Python >= 3.11 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    # Debian ships venv separately.
    rm -rf .venv
    as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv >/dev/null
    "$PY" -m venv .venv
  fi
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c 'import torch' 2>/dev/null; then
  echo "installing torch (CPU build)"
  # The CPU index keeps pip from pulling the multi-GB CUDA build; where that index is not
  # reachable, pip falls back to the configured indexes / local wheels.
  pip install -q --retries 1 --timeout 15 "torch==2.13.0" \
    --index-url "${GENREC_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
fi
echo "installing genrec${extras:+[$extras]}"
pip install -q -e ".${extras:+[$extras]}"
