#!/usr/bin/env bash
# The GPU check (bench/gpu.py): the study's CNNs and transfer model on the GPU, with whichever
# Keras backend is installed (KERAS_BACKEND picks one). PYTHON: the interpreter to use.
#   bash bench/gpu.sh [--epochs 20] [--image-size 160] [--data DIR]
set -euo pipefail
cd "$(dirname "$0")"
exec "${PYTHON:-python3}" gpu.py "$@"
