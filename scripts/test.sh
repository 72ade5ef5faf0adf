#!/usr/bin/env bash
# Sets up if needed, checks formatting and lints, then runs the whole test suite. Tests that compare
# against nnU-Net's reference outputs read ../shared; without it they skip (with a note), except under
# CI where it is required.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Formatting first: it needs no build and fails in a second.
cargo fmt --all --check
scripts/setup.sh
export LIBTORCH_USE_PYTORCH=1
export PATH="$PWD/.venv/bin:$PATH"
# Lints in the release profile, so that build scripts (torch-sys compiles C++) and proc macros are
# shared with the release build setup.sh just made rather than built a second time.
SECONDS=0
cargo clippy --release --locked --workspace --all-targets --quiet -- -D warnings
echo "test.sh: clippy took ${SECONDS} s" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --locked --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over all test binaries (cargo prints one result line per binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
