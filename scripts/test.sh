#!/usr/bin/env bash
# Sets up if needed, then runs the whole test suite. Tests that compare against nnU-Net's reference
# outputs read ../shared; without it they skip (with a note), except under CI where it is required.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
export LIBTORCH_USE_PYTORCH=1
export PATH="$PWD/.venv/bin:$PATH"
cargo test --release --locked --workspace
