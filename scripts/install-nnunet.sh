#!/usr/bin/env bash
# Installs nnU-Net v2.8.1 (the reference implementation) into a scratch venv for the benchmarks,
# reusing .venv's torch instead of downloading it again. Usage: scripts/install-nnunet.sh [VENV]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=${1:-.bench-venv}
[[ -x $venv/bin/nnUNetv2_preprocess ]] && exit 0
scripts/setup.sh
python3 -m venv "$venv"
torch_site=$(.venv/bin/python3 -c 'import site; print(site.getsitepackages()[0])')
echo "$torch_site" > "$("$venv/bin/python3" -c 'import site; print(site.getsitepackages()[0])')/nn-tools-torch.pth"
"$venv/bin/pip" install --quiet --disable-pip-version-check nnunetv2==2.8.1
