#!/bin/sh
# The compose stack's one-shot `build` service: trains the artifacts into the shared volume
# unless a complete version is already there, so that a second `docker compose up` starts in
# seconds instead of retraining for ten minutes. To publish a new version on purpose (the
# replicas hot-reload it):
#   docker compose run --rm build genrec build --artifacts /var/lib/genrec/artifacts
set -eu
dir="${GENREC_ARTIFACTS_DIR:-/var/lib/genrec/artifacts}"
dataset="${GENREC_DATASET:-ml-100k}"
if python - "$dir" <<'EOF'
import sys
from pathlib import Path

from models.artifacts.manifest import artifacts_complete

sys.exit(0 if artifacts_complete(Path(sys.argv[1])) else 1)
EOF
then
  echo "complete artifacts in $dir: nothing to build"
  exit 0
fi
# --no-evaluate: the replicas wait for this service to finish, and serving needs no offline
# metrics; `docker compose run --rm build genrec eval --artifacts /var/lib/genrec/artifacts`
# adds them later.
exec genrec build --dataset "$dataset" --artifacts "$dir" --no-evaluate "$@"
