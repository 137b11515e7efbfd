#!/usr/bin/env bash
# Checks that the GPU worker's install (requirements-gpu.txt: the shared pins, CUDA torch and vLLM) resolves, without
# installing or downloading the CUDA wheels: pip resolves from the packages' metadata only (--dry-run). Exits non-zero
# with pip's explanation when it does not resolve, and when vLLM is missing from the resolved set.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-.venv/bin/pip}"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
if ! "$PIP" install --dry-run --ignore-installed --quiet --disable-pip-version-check \
        -r requirements-gpu.txt --report "$report" 2> >(grep -v "^WARNING: Location" >&2); then
    echo "check_gpu_install: requirements-gpu.txt does not resolve (see pip's message above)" >&2
    exit 1
fi
"${PYTHON:-.venv/bin/python}" - "$report" <<'PY'
import json
import sys

installed = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
missing = [name for name in ("vllm", "torch", "transformers") if name not in installed]
if missing:
    sys.exit(f"check_gpu_install: the GPU set resolved without {', '.join(missing)}")
print("check_gpu_install: requirements-gpu.txt resolves:",
      ", ".join(f"{name} {installed[name]}" for name in ("vllm", "torch", "transformers", "numpy")))
PY
