#!/usr/bin/env bash
# The CUDA checks of our own sampler and trainer, on a machine with a CUDA GPU (CI has none, so they run here, by
# hand): tests/cuda (each path on the GPU, and the GPU agreeing with the CPU), the trainer's and the sampler's own
# tests with the GPU visible (training rounds then run on it), and both benchmarks on the GPU, side by side with
# their peers (transformers' generate and generate_batch; TRL's DPOTrainer, where trl is installed).
#   bash scripts/cuda_check.sh            MODEL=path (a SmolLM2-135M checkpoint; default the bootstrapped one),
#                                         PYTHON=path (default .venv-gpu's python where there is one, else .venv's)
# Each step has a time limit; its log goes to $LOGS (default var/cuda-check). Exits non-zero when a step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
# a GPU worker's own environment (docs/deployment.md: requirements-gpu.txt, plus the test tools), else the CPU one
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv-gpu/bin/python ]; then PYTHON=.venv-gpu/bin/python; else PYTHON=.venv/bin/python; fi
fi
MODEL="${MODEL:-var/models/smollm2-135m-instruct}"
LOGS="${LOGS:-var/cuda-check}"
mkdir -p "$LOGS"
export DJANGO_SETTINGS_MODULE=prefloop.settings PYTHONUNBUFFERED=1
if ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "cuda_check: no CUDA GPU here (torch.cuda.is_available() is False)" >&2
    exit 2
fi
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '|', torch.cuda.get_device_name(0))"
status=0
step() {
    local name="$1" limit="$2"
    shift 2
    echo "=== $name (limit ${limit} s)"
    timeout "$limit" "$@" 2>&1 | tee "$LOGS/$name.log" | grep -v -E "Loading weights|Writing model shards"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc"
    [ "$rc" -eq 0 ] || status=1
}
step cuda-tests "${CUDA_TESTS_LIMIT:-150}" "$PYTHON" -m pytest -q -p no:cacheprovider tests/cuda
step training-tests-on-cuda "${TRAINING_TESTS_LIMIT:-600}" "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/training tests/test_numerics.py -m "not real_model and not browser and not gpu"
step bench-sampler "${BENCH_SAMPLER_LIMIT:-300}" "$PYTHON" bench/generation.py --model "$MODEL" --device cuda \
    --prompts 32 --samples 2 --batch-size 64 --max-new-tokens 64 --repeats 2
# TRL's DPOTrainer is the peer of the DPO benchmark; trl is in requirements.txt, not requirements-gpu.txt, so a GPU
# worker's environment may lack it (docs/deployment.md lists it with the test tools). Without it only our own
# trainer's command line runs, and the output says so.
dpo_order=trl,cli
if ! "$PYTHON" -c "import trl" 2>/dev/null; then
    echo "cuda_check: trl is not installed in $PYTHON's environment: bench-dpo runs without TRL's DPOTrainer" \
        "(--order cli); pip install trl==$(sed -n 's/^trl==//p' requirements.txt) to compare with it"
    dpo_order=cli
fi
step bench-dpo "${BENCH_DPO_LIMIT:-300}" "$PYTHON" bench/dpo_throughput.py --model "$MODEL" --pairs 64 --repeats 2 \
    --order "$dpo_order"
exit $status
