"""One zk proof for many inferences: a circuit over B rows, proven once for up to B jobs of one model.

A model whose only symbolic dimension leads every input and output (:func:`batch_dim`) can be set up at a batch
size B (EZKL's ``variables`` fix that dimension at B; ``ciro.zk.zk_setup(batch=B)``), once per (model, B) and
cached beside the model's one-row set-up (:func:`batch_dir`). The jobs of a batch, one row each, are stacked in
queue order; the rows left over are filled with copies of the batch's last real row (:func:`stack_rows`: a real
input, so always inside the range the circuit was calibrated for, where zeros might not be). The proof's public
instance then holds every row's quantised inputs, then every row's outputs; each job's artifact carries the shared
proof and its own ``batch`` entry (size, row, real rows), and a verifier reads its job's inputs and outputs at that
row only (:func:`row_instance`). Inputs or outputs made public as a Poseidon hash are one hash per tensor, over all
rows, so such set-ups are not batched (their jobs are proven one at a time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["PADDING", "batch_dim", "batch_dir", "batch_problem", "calibration_data", "job_artifact", "prove_batch",
           "row_instance", "stack_rows"]

PADDING = "last real row repeated"


def _dim_names(proto: Any) -> list[tuple[str, int]]:
    """(name, position) of each symbolic dim of the graph's inputs and outputs, in order."""
    out = []
    for vi in list(proto.graph.input) + list(proto.graph.output):
        for pos, d in enumerate(vi.type.tensor_type.shape.dim):
            # a dim with neither a value nor a name is called "batch_size" by EZKL's ONNX loader
            name = d.dim_param or ("batch_size" if not d.HasField("dim_value") else "")
            if name:
                out.append((name, pos))
    return out


def batch_dim(model_bytes: bytes) -> str | None:
    """The model's batch dim when one circuit can prove several rows: its only symbolic dim, leading every input
    and output. None otherwise (such a model is proven one job at a time)."""
    import onnx

    proto = onnx.load_from_string(model_bytes)
    dims = _dim_names(proto)
    names = {n for n, _ in dims}
    if len(names) != 1 or len(dims) != len(proto.graph.input) + len(proto.graph.output):
        return None
    return names.pop() if all(pos == 0 for _, pos in dims) else None


def calibration_data(calibration: list[np.ndarray], batch: int = 1) -> list[np.ndarray]:
    """What a circuit over ``batch`` rows is calibrated on (flat, per input): the rows of ``ciro.zk.calibration_batch``
    around the one-row sample, grouped ``batch`` at a time (the last group filled with the sample's row). The same
    rows whatever the batch size, so the same value range and lookup tables: a larger B adds circuit rows only."""
    from .zk import calibration_batch

    flat = calibration_batch(calibration)
    if batch == 1:
        return flat
    out = []
    for a, f in zip(calibration, flat, strict=True):
        rows = np.asarray(f).reshape(-1, max(1, int(np.asarray(a).size)))
        fill = (-len(rows)) % batch
        out.append(np.concatenate([rows, np.repeat(rows[:1], fill, axis=0)]).reshape(-1))
    return out


def batch_dir(zk_dir: Path, batch: int) -> Path:
    """Where the (model, B) set-up lives: beside the model's one-row set-up ``zk_dir`` (which it is for B = 1)."""
    return zk_dir if batch == 1 else zk_dir.with_name(f"{zk_dir.name}-b{batch}")


def stack_rows(jobs: Sequence[Sequence[np.ndarray]], batch: int) -> list[np.ndarray]:
    """The circuit's inputs for ``jobs`` (each a list of tensors with one row), in order, padded to ``batch`` rows
    with copies of the last job's row."""
    if not 1 <= len(jobs) <= batch:
        raise InputError(f"{len(jobs)} jobs do not fit a batch of {batch}: choose a bucket that holds them.")
    out = []
    for t in range(len(jobs[0])):
        rows = [np.asarray(j[t]) for j in jobs]
        if any(r.ndim == 0 or r.shape[0] != 1 for r in rows):
            raise InputError("A batched zk job must hold exactly one row; submit larger inputs as separate jobs.")
        rows += [rows[-1]] * (batch - len(rows))
        out.append(np.concatenate(rows))
    return out


def job_artifact(shared: Mapping[str, Any], row: int, rows: int, *, input_commitment: str,
                 output_commitment: str) -> dict[str, Any]:
    """The artifact of the job at ``row`` of a batch proof: the shared proof, with this job's commitments and row."""
    size = int(shared["settings"]["model_instance_shapes"][0][0])
    return {**shared, "input_commitment": input_commitment, "output_commitment": output_commitment,
            "batch": {"size": size, "row": row, "rows": rows, "padding": PADDING}}


def _rows(settings: Mapping[str, Any]) -> int:
    shapes = settings.get("model_instance_shapes") or [[1]]
    return int(shapes[0][0]) if shapes[0] else 1


def batch_problem(artifact: Mapping[str, Any]) -> str | None:
    """Why the artifact's ``batch`` entry cannot be read against its settings, or None."""
    b = artifact.get("batch")
    if not isinstance(b, Mapping):
        return "its batch entry is not an object"
    size, row, rows = b.get("size"), b.get("row"), b.get("rows")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, row, rows)):
        return "its batch size, row and rows must be integers"
    assert isinstance(size, int) and isinstance(row, int) and isinstance(rows, int)
    circuit = _rows(artifact["settings"])
    shapes = artifact["settings"].get("model_instance_shapes") or []
    if any(not s or int(s[0]) != circuit for s in shapes):
        return "the proof's settings are not a circuit over rows (every tensor led by the batch dim)"
    if size != circuit:
        return f"it claims a batch of {size} rows, but the proof's circuit has {circuit}"
    if not 1 <= rows <= size:
        return f"it claims {rows} real rows in a batch of {size}"
    if not 0 <= row < rows:
        return f"it claims row {row}, outside the batch's real rows 0-{rows - 1}"
    return None


def row_instance(settings: Mapping[str, Any], flat: Sequence[str], row: int, n_inputs: int) -> tuple[list[str], int]:
    """The part of a batch proof's public instance ``flat`` that is ``row``'s (its inputs, then its outputs), and how
    many leading elements of that are inputs. ``n_inputs``: how many of the tensors are inputs."""
    shapes = settings.get("model_instance_shapes") or []
    size = _rows(settings)
    out: list[str] = []
    n_in, pos = 0, 0
    for i, shape in enumerate(shapes):
        per_row = math.prod(shape) // size
        out += flat[pos + row * per_row:pos + (row + 1) * per_row]
        pos += math.prod(shape)
        if i < n_inputs:
            n_in += per_row
    return out, n_in


def prove_batch(setup: Any, jobs: Sequence[Sequence[np.ndarray]], *, model_hash: str,
                commitments: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """One proof for ``jobs`` (one row each) with the (model, B) ``setup`` (a ``ciro.zk.ZkSetup``); each job's
    artifact, in order. ``commitments``: each job's (input, output) commitment."""
    from .zk import zk_prove

    if len(commitments) != len(jobs):
        raise InputError("Each job of a batch proof needs its input and output commitments.")
    shared = zk_prove(setup, stack_rows(jobs, setup.batch), model_hash=model_hash, input_commitment="",
                      output_commitment="")
    return [job_artifact(shared, i, len(jobs), input_commitment=ci, output_commitment=co)
            for i, (ci, co) in enumerate(commitments)]
