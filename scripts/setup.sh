#!/usr/bin/env bash
# Make (or reuse) the virtual environment .venv at the repository root, with this package installed editable.
# The torch trio is pinned here, not in pyproject.toml, so a GPU user's own torch build is not overridden:
# set TORCH_SPEC to your own (e.g. TORCH_SPEC="torch==2.8.0 torchvision torchaudio" for vLLM's), or to "" to keep it.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_SPEC=${TORCH_SPEC-"torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0"}
PYTHON=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.llamafactory-fea-setup
wanted=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)-$(echo "$TORCH_SPEC" | sha256sum | cut -c1-8)
if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  echo "[setup] .venv is up to date"
  exit 0
fi

echo "[setup] installing into .venv (first time: a few minutes, about 7 GB)"
start=$(date +%s)
# shellcheck disable=SC2086
.venv/bin/python -m pip install --disable-pip-version-check -q $TORCH_SPEC -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import llamafactory, trl, torchvision, torchaudio, llamafactory_fea" # fails loudly if the install did
echo "$wanted" > "$stamp"
echo "[setup] done in $(( $(date +%s) - start )) s, .venv is $(du -sh .venv | cut -f1)"
