#!/usr/bin/env bash
# A second virtual environment for vLLM rollouts (grpo `use_vllm: true`, synthesis `synth_backend: vllm`).
# TRL 0.24 (LLaMA-Factory 0.9.5's ceiling) accepts only vLLM 0.10.2, which pins torch 2.8.0, torchvision 0.23.0 and
# torchaudio 2.8.0; .venv (scripts/setup.sh) has torch 2.14.1, so vLLM gets an environment of its own. See docs/vllm.md.
#
#   bash scripts/setup_vllm.sh                # CUDA machine: torch 2.8 + the [vllm,dev] extras, checks, the CPU tests
#   bash scripts/setup_vllm.sh --cpu          # CPU machine: torch 2.8 + [dev] (vLLM 0.10.2 wheels are CUDA-only),
#                                             # the plugin's import check and the CPU tests under torch 2.8
#   bash scripts/setup_vllm.sh --dry-run      # only pip's resolution of the CUDA install (works on any machine)
#
# Environment: VLLM_VENV (default .venv-vllm at the repository root), PYTHON (default python3), VLLM_TORCH_SPEC (the
# torch trio vLLM 0.10.2 pins), VLLM_TESTS (the pytest arguments of the test run; "" skips it).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
case "${1:-}" in
  --cpu) MODE=cpu ;;
  --dry-run) MODE=dry-run ;;
  "") ;;
  *) echo "usage: bash scripts/setup_vllm.sh [--cpu | --dry-run]" >&2; exit 2 ;;
esac

VENV=${VLLM_VENV:-.venv-vllm}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${VLLM_TORCH_SPEC:-"torch==2.8.0 torchvision==0.23.0 torchaudio==2.8.0"}
# the plugin's hook, GRPO, reward and synthesis tests on CPU, plus a LoRA GRPO run through llamafactory-cli
DEFAULT_TESTS="tests/test_hook.py tests/test_grpo_args.py tests/test_grpo_data.py tests/test_grpo_trainer.py \
tests/test_rewards.py tests/test_synth.py tests/test_tiny_model.py tests/test_bench.py tests/test_doctests.py \
tests/test_grpo_e2e.py::test_lora_grpo_trains_on_the_labels_saves_and_resumes"
TESTS=${VLLM_TESTS-$DEFAULT_TESTS}
EXTRAS=$([ "$MODE" = cpu ] && echo "dev" || echo "vllm,dev")

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
start=$(date +%s)
if [ "$MODE" = dry-run ]; then
  # shellcheck disable=SC2086
  "${PIP[@]}" --dry-run --ignore-installed --quiet --report - $TORCH_SPEC -e ".[vllm,dev]" | "$VENV/bin/python" -c "
import json, sys
wanted = ('torch', 'torchvision', 'torchaudio', 'vllm', 'xformers', 'trl', 'transformers', 'llamafactory', 'peft')
found = {item['metadata']['name'].lower(): item['metadata']['version'] for item in json.load(sys.stdin)['install']}
print('[setup_vllm] pip resolves:', ', '.join(f'{name} {found[name]}' for name in wanted if name in found))
assert found.get('vllm') == '0.10.2' and found.get('torch') == '2.8.0', found
"
  echo "[setup_vllm] dry run done in $(( $(date +%s) - start )) s (nothing installed)"
  exit 0
fi

echo "[setup_vllm] installing $TORCH_SPEC and .[$EXTRAS] into $VENV (first time: several minutes, about 8 GB)"
# shellcheck disable=SC2086
"${PIP[@]}" --quiet $TORCH_SPEC -e ".[$EXTRAS]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" - "$MODE" <<'EOF'
import sys

import llamafactory
import torch
import trl
from llamafactory.extras.env import VERSION
from trl.import_utils import is_vllm_available

import llamafactory_fea
from llamafactory_fea.train.grpo.rollout import VLLM_VERSION

assert torch.__version__.startswith("2.8."), f"torch {torch.__version__}: expected 2.8 (VLLM_TORCH_SPEC)"
assert "llamafactory_fea._bootstrap" in sys.modules, "llamafactory_fea.pth did not run: the plugin is not installed"
line = f"torch {torch.__version__}, trl {trl.__version__}, llamafactory {VERSION}, llamafactory-fea {llamafactory_fea.__version__}"
if sys.argv[1] == "gpu":
    import vllm

    assert vllm.__version__ == VLLM_VERSION and is_vllm_available(), f"vLLM {vllm.__version__} is not the one TRL takes"
    line += f", vllm {vllm.__version__} (TRL accepts it), CUDA {torch.cuda.is_available()}"

print(f"[setup_vllm] imports: {line}")
EOF
echo "[setup_vllm] installed in $(( $(date +%s) - start )) s, $VENV is $(du -sh "$VENV" | cut -f1)"
if [ -n "$TESTS" ]; then
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider $TESTS
  echo "[setup_vllm] tests under torch 2.8 done in $(( $(date +%s) - start )) s"
fi
