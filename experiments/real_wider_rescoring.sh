#!/usr/bin/env bash
# Baseline (RetinaFace scores) vs tiny-face GAN re-scoring on real WIDER FACE val images.
# Needs ../shared/data (or GAN_DETECT_DATA). Writes runs/real_wider_rescoring/eval/metrics.json.
set -euo pipefail
cd "$(dirname "$0")/.."
files="smoke experiments/real_wider_rescoring.yaml"   # the smoke preset, then this file
gan-detect fit $files "$@"
gan-detect evaluate $files ckpt=runs/real_wider_rescoring/checkpoints/last.ckpt "$@"
