#!/usr/bin/env bash
# Engine benchmark: deai vs llama.cpp (llama-cpp-python, CPU build from PyPI) on the same GGUF
# files, measured in the same run. Usage: bash scripts/bench-engine.sh [extra deai bench flags]
set -euo pipefail
cd "$(dirname "$0")/.."
export DEAI_HOME="${DEAI_HOME:-$PWD/.deai}"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  python3 -m venv .venv
  # Builds llama.cpp from source for this CPU (several minutes on 2 cores).
  .venv/bin/pip install --quiet "llama-cpp-python==0.3.36" numpy
fi
cargo build --release -p deai-cli
./target/release/deai bench engine --baseline-python .venv/bin/python "$@"
