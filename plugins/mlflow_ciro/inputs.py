"""What ``predict`` accepts and returns: inputs checked against the MLflow signature and shaped for the ONNX
model; one result row per input row, with the job id and its evidence alongside the prediction, as columns (what
``mlflow.deployments.PredictionsResponse`` holds and the CLI writes as JSON)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature

from ciro import InputError, JobResult

__all__ = ["Layout", "as_columns", "evidence", "feeds", "rows_of"]

_NUMPY = {"double": "float64", "float": "float32", "integer": "int32", "long": "int64", "boolean": "bool"}


@dataclass(frozen=True)
class Layout:
    """How a deployed model's inputs are laid out, kept in the deployment's metadata."""

    #: The ONNX model's inputs: name, dtype, shape (None for a free dimension), in order.
    onnx_inputs: list[dict[str, Any]]
    #: The MLflow signature (``ModelSignature.to_dict()``), or None.
    signature: dict[str, Any] | None = None
    #: ONNX input names in the order of the signature's tensors (tensor signatures only).
    tensor_inputs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"onnx_inputs": self.onnx_inputs, "signature": self.signature, "tensor_inputs": self.tensor_inputs}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Layout:
        return cls(list(d["onnx_inputs"]), d.get("signature"), list(d.get("tensor_inputs") or []))


def _signature(layout: Layout) -> ModelSignature | None:
    return ModelSignature.from_dict(layout.signature) if layout.signature else None


def feeds(data: Any, layout: Layout) -> dict[str, np.ndarray]:
    """Named arrays for the ONNX model, one row per input row. Accepts a DataFrame (what the CLI reads from
    ``--input-path``), a dict, a numpy array or a list; raises ``InputError`` naming what does not fit."""
    sig = _signature(layout)
    if sig is not None and not sig.inputs.is_tensor_spec():
        return _from_columns(data, sig, layout)
    specs = layout.onnx_inputs
    names = layout.tensor_inputs or [s["name"] for s in specs]
    if isinstance(data, Mapping) and len(names) > 1:
        missing = [n for n in _tensor_names(sig, names) if n not in data]
        if missing:
            raise InputError(f"Input is missing tensor(s) {missing}; the model takes {_tensor_names(sig, names)}.")
        arrays = [data[n] for n in _tensor_names(sig, names)]
    elif len(names) > 1:
        raise InputError(f"The model takes {len(names)} tensors {_tensor_names(sig, names)}: pass a dict by name.")
    else:
        value = next(iter(data.values())) if isinstance(data, Mapping) and len(data) == 1 else data
        arrays = [value.to_numpy() if isinstance(value, pd.DataFrame | pd.Series) else value]
    by_name = {s["name"]: s for s in specs}
    return {n: _tensor(a, by_name[n], label) for n, a, label in zip(names, arrays, _tensor_names(sig, names),
                                                                     strict=True)}


def _tensor_names(sig: ModelSignature | None, names: list[str]) -> list[str]:
    if sig is not None and sig.inputs.has_input_names():
        return list(sig.inputs.input_names())
    return names


def _tensor(value: Any, spec: Mapping[str, Any], label: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=spec["dtype"])
    except (TypeError, ValueError) as exc:
        raise InputError(f"Input {label!r} cannot be read as {spec['dtype']} ({exc}). Send numbers.") from exc
    shape = [d if isinstance(d, int) and d >= 0 else None for d in spec["shape"]]  # None: a free dimension
    if arr.ndim == len(shape) - 1:  # one example without its batch dimension
        arr = arr[None, ...]
    fixed_ok = arr.ndim == len(shape) and all(d is None or d == n for d, n in zip(shape, arr.shape, strict=True))
    if not fixed_ok:
        want = "(" + ", ".join("-1" if d is None else str(d) for d in shape) + ")"
        raise InputError(f"Input {label!r} has shape {tuple(arr.shape)}; the model expects {want} (-1: any). "
                         "Reshape it.")
    return arr


def _from_columns(data: Any, sig: ModelSignature, layout: Layout) -> dict[str, np.ndarray]:
    cols = list(sig.inputs.input_names())
    types = [_NUMPY.get(str(getattr(c.type, "name", c.type)).lower(), "float64") for c in sig.inputs.inputs]
    if isinstance(data, Mapping):
        values = list(data.values())
        data = pd.DataFrame(dict(data)) if values and np.ndim(values[0]) >= 1 else pd.DataFrame([dict(data)])
    elif isinstance(data, Sequence) and not isinstance(data, str) and data and isinstance(data[0], Mapping):
        data = pd.DataFrame(list(data))
    if isinstance(data, pd.DataFrame) and not isinstance(data.columns, pd.RangeIndex):
        missing = [c for c in cols if c not in data.columns]
        if missing:
            raise InputError(f"Input is missing column(s) {missing}. The model's signature expects columns {cols}.")
        table = data[cols]
    else:  # positional: an array, a list of rows, or a DataFrame without column names
        arr = np.asarray(data.to_numpy() if isinstance(data, pd.DataFrame) else data, dtype=object)
        if arr.ndim == 1 and arr.size == len(cols):
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != len(cols):
            raise InputError(f"Input has shape {arr.shape}; the model expects rows of {len(cols)} values (columns "
                             f"{cols}). Send a DataFrame with those columns, or rows of that many values.")
        table = pd.DataFrame(arr, columns=cols)
    for c, t in zip(cols, types, strict=True):
        try:
            table[c].to_numpy(dtype=t)
        except (TypeError, ValueError) as exc:
            raise InputError(f"Column {c!r} must hold {t} values ({exc}). Fix that column.") from exc
    spec = layout.onnx_inputs[0]
    if len(layout.onnx_inputs) == 1:  # a converted scikit-learn model: one [N, n_columns] tensor
        return {spec["name"]: _tensor(table.to_numpy(dtype=spec["dtype"]), spec, "columns")}
    by_name = {s["name"]: s for s in layout.onnx_inputs}
    missing = [s for s in by_name if s not in cols]
    if missing:
        raise InputError(f"The ONNX model's inputs {missing} are not columns of its signature {cols}.")
    return {n: _tensor(table[n].to_numpy(dtype=s["dtype"]).reshape(-1, 1), s, n) for n, s in by_name.items()}


def rows_of(results: list[JobResult], *, primary: str, gateway_url: str) -> list[dict[str, Any]]:
    """One row per input row: ``predictions`` (the output that equals the original model's prediction), the
    other outputs by name, and the evidence of the job that computed it: id, level, worker, output commitment,
    receipt signer, proof hash, settlement and its transaction, and where the full evidence is
    (``GET /v1/jobs/ID/result``; verify it with ``ciro verify``). A job of several rows repeats its evidence."""
    rows = []
    for r in results:
        out = {name: np.asarray(v) for name, v in (r.outputs or {}).items()}
        ev = evidence(r, gateway_url)
        n = len(out[primary]) if primary in out and out[primary].ndim else 1
        for i in range(n):
            row: dict[str, Any] = {"predictions": _cell(out[primary], i)} if primary in out else {}
            row.update({name: _cell(v, i) for name, v in out.items() if name != primary})
            rows.append({**row, **ev})
    return rows


def as_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows as JSON-ready columns, ``predictions`` first (present even for no rows): ``pandas.DataFrame(columns)``
    is the table again."""
    names = ["predictions", *dict.fromkeys(k for row in rows for k in row if k != "predictions")]
    return {name: [row.get(name) for row in rows] for name in names}


def evidence(r: JobResult, gateway_url: str) -> dict[str, Any]:
    """The evidence columns of a job's rows: id, level, worker, output commitment, receipt signer, proof hash,
    settlement and its transaction, and the URL of the full result (receipt, votes or proof)."""
    return {"job_id": r.job_id, "verification": r.verification.value, "worker": r.worker,
            "output_commitment": r.output_commitment, "receipt_signer": r.receipt.worker_key if r.receipt else None,
            "proof_hash": r.proof_hash, "settlement": r.settlement, "settlement_tx": r.settlement_tx,
            "evidence": f"{gateway_url.rstrip('/')}/v1/jobs/{r.job_id}/result"}


def _cell(value: np.ndarray, i: int) -> Any:
    """Row ``i`` of an output: a scalar when it holds one value, else a (nested) list."""
    arr = value[i] if value.ndim else value
    return arr.item() if np.size(arr) == 1 else np.asarray(arr).tolist()
