#!/usr/bin/env bash
# CLI quickstart: start the embedded default, deploy a model, run a job from a .npy file.
set -euo pipefail
work=$(mktemp -d)
ciro up
python - "$work" <<'PY'
import sys
from pathlib import Path
import numpy as np
from ciro.demo import build_digits_model, digits_inputs
work = Path(sys.argv[1])
build_digits_model(work / "digits.onnx")
np.save(work / "x.npy", digits_inputs()[:2])
PY
ciro deploy "$work/digits.onnx" --name digits
ciro infer digits --input "$work/x.npy" --out "$work/result.json"
ciro jobs --limit 3
python -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['status'], r['outputs']['label']['data'])" "$work/result.json"
