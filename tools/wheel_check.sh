#!/usr/bin/env bash
# Build the wheel, install it into a clean venv (no checkout on the path) and use it:
# `spikeir --version`, then denoise an image with the bundled model. Run by `make wheel-check`.
set -euo pipefail
PY=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$root/.venv/bin/python" -m pip wheel -q --no-deps -w "$tmp/dist" "$root"
wheel=$(ls "$tmp"/dist/spikeir-*.whl)
"$PY" -m venv "$tmp/venv"
# torch first, pinned: a bare "torch" requirement would pull a multi-GB CUDA build here
"$tmp/venv/bin/python" -m pip install -q torch==2.13.0
"$tmp/venv/bin/python" -m pip install -q "$wheel"
cd "$tmp"  # away from the checkout: the installed package must stand on its own
"$tmp/venv/bin/spikeir" --version
"$tmp/venv/bin/python" - <<'PY'
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
Image.fromarray((rng.random((48, 64)) * 255).astype(np.uint8)).save("in.png")
PY
"$tmp/venv/bin/spikeir" denoise in.png -o out --model spiden-s25
test -s out/in.png
"$tmp/venv/bin/python" -c "import spikeir, pathlib; assert 'site-packages' in spikeir.__file__, spikeir.__file__"
echo "wheel check passed: $(basename "$wheel")"
