#!/usr/bin/env bash
# Create .venv and install ramp-edge with everything the tests and benchmarks use.
# One line per step, with the time it took.
# - torch is pinned to the CPU build (an unpinned torch pulls a multi-GB CUDA build);
# - llama-cpp-python 0.3.36 is compiled from source, portably: GGML_NATIVE=OFF, the CPU's own
#   ISA extensions switched on one by one, AMX always off (a native build segfaults on the first
#   decode on AMX Xeons). agents/llama_build.py chooses the flags; the wheel is cached under
#   $RAMP_EDGE_CACHE/wheels/<flag-set key>/, so a wheel is only reused on a CPU with the same
#   flags. The build also installs llama.cpp's tools (llama-quantize, llama-imatrix, ...)
#   into the venv's site-packages/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${RAMP_EDGE_EXTRAS:-dev,fleet,rl,plot,torch,ray}  # ray: ~20 s to install (tests/test_distributed.py)
LLAMA_VERSION=0.3.36
CACHE=${RAMP_EDGE_CACHE:-$HOME/.cache/ramp-edge}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export PIP_DISABLE_PIP_VERSION_CHECK=1

step() {  # step "what" command...
  local what=$1 start=$SECONDS
  shift
  "$@"
  echo "setup: $what ($((SECONDS - start)) s)" >&2
}

if [ ! -x .venv/bin/python ]; then
  step "created .venv" "$PYTHON" -m venv .venv
fi
step "pip upgraded" .venv/bin/python -m pip install -q --upgrade pip
if [[ ",$EXTRAS," == *",torch,"* ]]; then
  step "torch ${RAMP_EDGE_TORCH:-2.13.0} (CPU build)" \
    .venv/bin/python -m pip install -q "torch==${RAMP_EDGE_TORCH:-2.13.0}"
fi

KEY=$("$PYTHON" agents/llama_build.py --key)
WHEELS="$CACHE/wheels/llama-cpp-python-$LLAMA_VERSION-$KEY"
if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  FLAGS=$("$PYTHON" agents/llama_build.py)
  echo "setup: compiling llama-cpp-python $LLAMA_VERSION (~5-13 min on 2 cores) with: $FLAGS" >&2
  mkdir -p "$WHEELS.partial"
  build_wheel() {
    CMAKE_ARGS="$FLAGS -DLLAMA_BUILD_TOOLS=ON -DLLAMA_TOOLS_INSTALL=ON -DLLAVA_BUILD=OFF \
-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
      .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir -w "$WHEELS.partial" \
      "llama-cpp-python==$LLAMA_VERSION"
  }
  step "llama-cpp-python wheel built ($KEY)" build_wheel
  rm -rf "$WHEELS" && mv "$WHEELS.partial" "$WHEELS"
else
  echo "setup: llama-cpp-python wheel cached for this CPU ($KEY)" >&2
fi
step "llama-cpp-python installed" \
  .venv/bin/python -m pip install -q --no-deps --force-reinstall "$WHEELS"/llama_cpp_python-*.whl
step "ramp-edge[$EXTRAS] installed" .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
step "smollm2-135m fetched" .venv/bin/ramp-edge models fetch smollm2-135m >/dev/null
touch .venv/.ramp-edge-installed
