#!/usr/bin/env bash
# Run the plugin's seam tests against LLaMA-Factory's main branch: the snapshot in ../shared/vendor (main's src/ at
# ff6d4d12e, 0.9.6.dev0) unpacked under build/ and put first on PYTHONPATH, with the same .venv. Covers the hook and
# key splitting, the refused routes, the stock-unchanged SFT check, a GRPO e2e, a synthesis e2e and LLaMA Board.
# Extra arguments go to pytest. The same tests run on the installed 0.9.5 in `bash scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

TARBALL=../shared/vendor/llamafactory-main-ff6d4d1.tar.gz
SRC=build/LLaMA-Factory-ff6d4d1/src  # the tarball's top folder
if [ ! -f "$TARBALL" ]; then
  echo "[test_main] skipped: $TARBALL (LLaMA-Factory main's snapshot) is absent"
  exit 0
fi

bash scripts/setup.sh
if [ ! -f "$SRC/llamafactory/__init__.py" ]; then
  mkdir -p build
  tar -xzf "$TARBALL" -C build
fi

export PYTHONPATH="$PWD/$SRC${PYTHONPATH:+:$PYTHONPATH}"
.venv/bin/python -c "
import llamafactory
from llamafactory.extras.env import VERSION
assert llamafactory.__file__.startswith('$PWD/$SRC'), llamafactory.__file__
print(f'[test_main] LLaMA-Factory {VERSION} from {llamafactory.__file__}')
"
start=$(date +%s)
.venv/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_hook.py tests/test_webui.py tests/test_host_main.py \
  "tests/test_grpo_e2e.py::test_lora_grpo_trains_on_the_labels_saves_and_resumes" \
  "tests/test_synth_e2e.py::test_synthesized_dataset_is_registered_and_loads_in_sft" \
  "$@"
echo "[test_main] passed against LLaMA-Factory main in $(( $(date +%s) - start )) s"
