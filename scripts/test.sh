#!/usr/bin/env bash
# Set up .venv (and, as root, Debian's chromium for the browser test), then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing Debian's chromium for the LLaMA Board browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "[test] chromium could not be installed: the browser test will be skipped"
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
