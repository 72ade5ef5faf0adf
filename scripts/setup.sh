#!/usr/bin/env bash
# One-command set-up, safe to rerun: a Python venv (.venv) with PyPI's torch 2.11.0, whose libtorch
# the training and inference tools link through tch 0.24.0, then the release binaries in
# target/release/ (rpath to .venv's torch/lib, so they run with no environment variables set).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

torch_version=2.11.0
venv=.venv

if ! compgen -G "$venv/lib/python3*/site-packages/torch-$torch_version*.dist-info" > /dev/null; then
    echo "setup: installing torch==$torch_version into $venv (about 4.7 GB, once)" >&2
    python3 -m venv "$venv"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "torch==$torch_version" > "$venv/pip.log" 2>&1; then
        echo "setup: error: pip could not install torch==$torch_version; its last lines ($venv/pip.log):" >&2
        tail -n 5 "$venv/pip.log" >&2
        exit 1
    fi
fi

# tch's build script asks this python where libtorch lives.
export LIBTORCH_USE_PYTORCH=1
export PATH="$PWD/$venv/bin:$PATH"
cargo build --release --locked --workspace --quiet
