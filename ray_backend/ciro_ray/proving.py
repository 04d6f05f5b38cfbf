"""Proving as a Ray task, apart from the inference actors (a proof takes seconds; inference, milliseconds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ciro.zk import ZkSetup, find_srs, zk_prove

__all__ = ["prove_job"]


def prove_job(zk_dir: str, srs_dir: str | None, home: str, inputs: list[np.ndarray], model_hash: str,
              input_commitment: str, output_commitment: str) -> dict[str, Any]:
    """Runs on the node holding the model store (the gateway pins it there): keys are read from disk."""
    meta = json.loads((Path(zk_dir) / "setup.json").read_text())
    srs = find_srs(int(meta["srs"]["logrows"]), srs_dir=Path(srs_dir) if srs_dir else None, home=Path(home),
                   create=False)
    setup = ZkSetup.load(Path(zk_dir), srs.path)
    return zk_prove(setup, inputs, model_hash=model_hash, input_commitment=input_commitment,
                    output_commitment=output_commitment)
