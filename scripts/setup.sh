#!/usr/bin/env bash
# Create .venv and install ramp-edge with everything the tests and benchmarks use.
# - torch is pinned to the CPU build (an unpinned torch pulls a multi-GB CUDA build);
# - llama-cpp-python 0.3.36 is compiled from source by pip the first time (~13 min on 2 cores),
#   then pip's wheel cache makes re-installs take seconds. The wheel is built with
#   -march=native: never copy it to another CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${RAMP_EDGE_EXTRAS:-dev,fleet,rl,plot,torch}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q --upgrade pip
if [[ ",$EXTRAS," == *",torch,"* ]]; then
  .venv/bin/python -m pip install -q "torch==${RAMP_EDGE_TORCH:-2.13.0}"
fi
echo "installing ramp-edge[$EXTRAS] (first run compiles llama-cpp-python: ~13 min on 2 cores)" >&2
.venv/bin/python -m pip install -q -e ".[$EXTRAS]"
.venv/bin/ramp-edge models fetch smollm2-135m >/dev/null
touch .venv/.ramp-edge-installed
