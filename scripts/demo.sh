#!/usr/bin/env bash
# Set up .venv, then run every Facial-R1 stage on the embedded demo data with a tiny offline model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/llamafactory-fea demo "$@"
