#!/usr/bin/env bash
# GPU check for `tol train`: on one GPU, write synthetic shards in the build's format, train ViT-B/16 in bf16 for a
# few hundred steps, and print samples/s and model FLOP utilisation (MFU). Under 8 minutes with set-up on an
# H100/H200-class GPU. Run from the repository root with the venv active:
#
#     bash training/scripts/gpu_check.sh                      # ViT-B-16, 300 steps of 256, bf16, 8 workers
#     STEPS=100 BATCH=128 bash training/scripts/gpu_check.sh
#
# Overrides (environment): OUT, MODEL, STEPS, BATCH, WORKERS, PRECISION, DEVICE, PEAK_TFLOPS (the GPU's dense
# peak for PRECISION; 989 = H100/H200 SXM bf16). MODEL=local-dir:... DEVICE=cpu PRECISION=fp32 runs it anywhere.
set -euo pipefail

OUT=${OUT:-/tmp/treeoflife-gpu-check}
MODEL=${MODEL:-ViT-B-16}
STEPS=${STEPS:-300}
BATCH=${BATCH:-256}
WORKERS=${WORKERS:-8}
PRECISION=${PRECISION:-bf16}
DEVICE=${DEVICE:-cuda}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
SAMPLES=$((STEPS * BATCH))
SHARDS=$((WORKERS * 4))

python - <<PY
import torch
print("torch", torch.__version__, "| cuda", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
PY

if [ ! -f "$OUT/shards/train/sizes.json" ]; then
    # 8,192 distinct samples are enough: the loader cycles through them for as many steps as asked.
    python -m training.synthetic "$OUT/shards" --samples 8192 --species 144 --shards "$SHARDS"
fi
rm -rf "$OUT/runs/check"
python -m training.train --model "$MODEL" --preset bioclip-vit-b-16 \
    --train-data "$OUT/shards/train/shard-{000000..$(printf %06d $((SHARDS - 1)))}.tar" \
    --train-num-samples "$SAMPLES" --global-batch-size "$BATCH" --epochs 1 --warmup 50 \
    --precision "$PRECISION" --device "$DEVICE" --workers "$WORKERS" --sample-shuffle 2000 \
    --save-every "$STEPS" --log-every 10 --runs-dir "$OUT/runs" --name check

python - "$OUT/runs/check" "$MODEL" "$BATCH" "$PEAK_TFLOPS" "$DEVICE" <<'PY'
"""Throughput after warm-up from log.jsonl, and MFU from the model's measured FLOPs per training sample."""
import json, sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from training.model import create_model

run, model_name, batch, peak, device = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
steady = [line for line in lines if "loss" in line][len(lines) // 3:]  # skip the first third: start-up, compilation
rate = sum(line["samples_per_s"] for line in steady) / len(steady)
loaded = create_model(model_name, device=device)
size = loaded.config["preprocess_cfg"].get("size", 224)
size = size[0] if isinstance(size, (list, tuple)) else size
images = torch.randn(4, 3, size, size, device=device)
tokens = loaded.tokenizer(["a photo of Pica hudsonia."] * 4).to(device)
with FlopCounterMode(display=False) as counter:
    out = loaded.model(images, tokens)
    (out["image_features"].sum() + out["text_features"].sum()).backward()
flops_per_sample = counter.get_total_flops() / 4
achieved = rate * flops_per_sample / 1e12
print(f"loss {lines[0].get('loss', float('nan')):.3f} -> {steady[-1]['loss']:.3f} over {steady[-1]['step']} steps")
print(f"throughput: {rate:.1f} samples/s (batch {batch}); {flops_per_sample / 1e9:.1f} GFLOP per sample "
      f"(forward + backward)")
print(f"model FLOP utilisation: {achieved:.1f} TFLOP/s of {peak:.0f} peak = {100 * achieved / peak:.1f}% MFU")
PY
