"""A content-addressed store of validated ONNX models under ``$CIRO_HOME/models``.

Layout: ``models/<sha256>/model.onnx`` and ``models/<sha256>/meta.json``. A model is written to a
temporary folder and renamed into place only after every check passed, so a failed add leaves
nothing behind, and a half-written folder is never visible under its hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import InvalidModelError, ModelNotFoundError, ModelTooLargeError
from .jobs import ModelInfo, TensorSpec
from .tensors import SUPPORTED_DTYPES, model_hash

__all__ = ["ModelStore", "read_model_file"]

_MIN_PREFIX = 6


class ModelStore:
    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cache: dict[str, ModelInfo] = {}

    # -- adding --------------------------------------------------------------------------
    def add_bytes(self, data: bytes, *, name: str | None = None) -> ModelInfo:
        """Validate and store a self-contained ONNX model given as bytes."""
        _check_size(len(data), self.max_bytes)
        proto = _parse(data)
        if _external_locations(proto):
            raise InvalidModelError(
                "The model references external data files, which an upload cannot carry. Deploy it from "
                "its folder (ciro deploy path/model.onnx) or save it self-contained: "
                "onnx.save(model, path, save_as_external_data=False)."
            )
        return self._store(data, proto, name or "model")

    def add_path(self, path: str | os.PathLike[str], *, name: str | None = None) -> ModelInfo:
        """Validate and store a model file; external data inside its folder is inlined."""
        data = read_model_file(path, max_bytes=self.max_bytes)
        return self.add_bytes(data, name=name or Path(path).stem)

    def _store(self, data: bytes, proto: Any, name: str) -> ModelInfo:
        digest = model_hash(data)
        existing = self._load_meta(digest)
        if existing is not None:
            self.set_name(name, digest)
            return dataclasses.replace(existing, name=name)
        info = _describe(digest, data, proto, name)
        tmp = self.root / ".tmp" / uuid.uuid4().hex
        tmp.mkdir(parents=True)
        try:
            (tmp / "model.onnx").write_bytes(data)
            (tmp / "meta.json").write_text(json.dumps(info.to_dict(), indent=1))
            with self._lock:
                final = self.root / digest
                if final.exists():  # a concurrent add of the same bytes won
                    return self.get(digest)
                os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._cache[digest] = info
        self.set_name(name, digest)
        return info

    def _names(self) -> dict[str, str]:
        try:
            names: dict[str, str] = json.loads((self.root / "names.json").read_text())
            return names
        except (OSError, ValueError):
            return {}

    def set_name(self, name: str, digest: str) -> None:
        """Point ``name`` at ``digest`` (the latest deploy under a name wins)."""
        self._rename(name, digest, lambda names: names.get(name) != digest)

    def unset_name(self, name: str, digest: str) -> None:
        """Forget ``name`` if it still points at ``digest`` (the model itself stays, by hash)."""
        self._rename(name, None, lambda names: names.get(name) == digest)

    def _rename(self, name: str, digest: str | None, when: Callable[[dict[str, str]], bool]) -> None:
        with self._lock:
            names = self._names()
            if not when(names):
                return
            if digest is None:
                del names[name]
            else:
                names[name] = digest
            tmp = self.root / f".names.{uuid.uuid4().hex}"
            tmp.write_text(json.dumps(names, indent=1))
            os.replace(tmp, self.root / "names.json")

    # -- reading -------------------------------------------------------------------------
    def _load_meta(self, digest: str) -> ModelInfo | None:
        if digest in self._cache:
            return self._cache[digest]
        meta = self.root / digest / "meta.json"
        if not meta.is_file():
            return None
        info = ModelInfo.from_dict(json.loads(meta.read_text()))
        self._cache[digest] = info
        return info

    def list(self) -> list[ModelInfo]:
        infos = []
        for d in self.root.iterdir():
            if d.is_dir() and len(d.name) == 64 and not d.name.startswith("."):
                info = self._load_meta(d.name)
                if info is not None:
                    infos.append(info)
        return sorted(infos, key=lambda i: i.created_at)

    def resolve(self, ref: str) -> ModelInfo:
        """A full hash, a unique hash prefix (>= 6 chars) or a model name (newest wins)."""
        h = ref.strip().lower().removeprefix("sha256:")
        is_hex = bool(h) and all(c in "0123456789abcdef" for c in h)
        info = self._load_meta(h) if is_hex and len(h) == 64 else None
        if info is not None:
            return info
        models = self.list()
        if is_hex and len(h) >= _MIN_PREFIX:
            hits = [m for m in models if m.hash.startswith(h)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise ModelNotFoundError(f"Model prefix {ref!r} is ambiguous. Give more characters of the hash.")
        named = self._names().get(ref)
        if named and (info := self._load_meta(named)) is not None:
            return info
        raise ModelNotFoundError(
            f"No model {ref!r} in the store. Deploy it first (ciro deploy MODEL.onnx) or list models "
            "with `ciro models`."
        )

    def get(self, digest: str) -> ModelInfo:
        return self.resolve(digest)

    def zk_dir(self, digest: str) -> Path:
        """Where the model's zero-knowledge set-up lives (settings, circuit, keys)."""
        return self.root / digest / "zk"

    def zk_status(self, digest: str) -> dict[str, Any] | None:
        meta = self.zk_dir(digest) / "setup.json"
        if not meta.is_file():
            return None
        status: dict[str, Any] = json.loads(meta.read_text())
        return {"status": "ready", **status}

    # -- processor bundles ------------------------------------------------------------------
    def set_processor(self, digest: str, data: bytes) -> dict[str, Any]:
        """Attach a pre/post-processing bundle (a zip holding ``processor.json`` with its ``kind``) to a model."""
        info = self.resolve(digest)
        summary = check_processor_zip(data)
        folder = self.root / info.hash
        tmp = folder / f".processor.{uuid.uuid4().hex}"
        tmp.write_bytes(data)
        os.replace(tmp, folder / "processor.zip")
        meta = folder / f".processor-meta.{uuid.uuid4().hex}"
        meta.write_text(json.dumps(summary))
        os.replace(meta, folder / "processor.json")
        return summary

    def processor_info(self, digest: str) -> dict[str, Any] | None:
        path = self.root / digest / "processor.json"
        if not path.is_file():
            return None
        summary: dict[str, Any] = json.loads(path.read_text())
        return summary

    def read_processor(self, digest: str) -> bytes:
        info = self.resolve(digest)
        path = self.root / info.hash / "processor.zip"
        if not path.is_file():
            raise ModelNotFoundError(f"Model {info.hash[:12]} has no processor bundle. Attach one "
                                     "(PUT /v1/models/REF/processor), or send tensors instead of raw input.")
        return path.read_bytes()

    def read_bytes(self, digest: str) -> bytes:
        info = self.resolve(digest)
        return (self.root / info.hash / "model.onnx").read_bytes()


MAX_PROCESSOR_FILES = 64


def check_processor_zip(data: bytes) -> dict[str, Any]:
    """The bundle's summary (kind, task, files, sha256); refuses a bundle that is not a safe, small zip with a
    ``processor.json`` naming its ``kind``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
            bad = [n for n in names if n.startswith("/") or ".." in Path(n).parts or "\\" in n]
            if bad or len(names) > MAX_PROCESSOR_FILES:
                raise InvalidModelError(f"A processor bundle holds at most {MAX_PROCESSOR_FILES} files with relative "
                                        f"paths; this one has {len(names)} (unsafe: {bad[:3]}). Rebuild it.")
            meta = json.loads(z.read("processor.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise InvalidModelError(f"Not a processor bundle ({exc}): send a zip holding processor.json with its "
                                "\"kind\" (e.g. the Hugging Face plugin's bundle).") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str):
        raise InvalidModelError('processor.json must be an object with a "kind" (the processor plugin to use).')
    return {"kind": meta["kind"], "task": meta.get("task"), "files": sorted(names),
            "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def read_model_file(path: str | os.PathLike[str], *, max_bytes: int) -> bytes:
    """The self-contained bytes of an ONNX file; external data must sit inside the model's folder."""
    path = Path(path)
    if not path.is_file():
        raise InvalidModelError(f"No model file at {path}. Give the path of an .onnx file.")
    _check_size(path.stat().st_size, max_bytes)
    data = path.read_bytes()
    proto = _parse(data)
    locations = _external_locations(proto)
    if not locations:
        return data
    folder = path.parent.resolve()
    total = 0
    for loc in locations:
        target = (folder / loc).resolve()
        if Path(loc).is_absolute() or not target.is_relative_to(folder):
            raise InvalidModelError(
                f"External data path {loc!r} leaves the model's folder {folder}. Keep external data "
                "files next to the model (relative paths without '..')."
            )
        if not target.is_file():
            raise InvalidModelError(f"External data file {loc!r} is missing from {folder}.")
        total += target.stat().st_size
    _check_size(len(data) + total, max_bytes)
    import onnx.external_data_helper as edh

    try:
        edh.load_external_data_for_model(proto, str(folder))
    except (OSError, ValueError) as exc:
        raise InvalidModelError(f"Cannot read the model's external data: {exc}.") from exc
    return bytes(proto.SerializeToString())


def _check_size(n: int, limit: int) -> None:
    if n > limit:
        raise ModelTooLargeError(
            f"The model is {n:,} bytes, over the limit of {limit:,}. Raise max_model_bytes "
            "(CIRO_MAX_MODEL_BYTES) on the gateway, or quantize/prune the model.",
            detail={"size": n, "limit": limit},
        )


def _parse(data: bytes) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    if not data:
        raise InvalidModelError("The model is empty. Give the bytes of an .onnx file.")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidModelError(
            "These bytes are not an ONNX model (protobuf parse failed). Export the model to ONNX "
            "(torch.onnx.export, skl2onnx, optimum) and deploy the .onnx file."
        ) from exc
    if not proto.graph.node and not proto.graph.output:
        raise InvalidModelError(
            "These bytes parse as an empty ONNX model (no graph). They are probably not an ONNX file."
        )
    return proto


def _external_locations(proto: Any) -> list[str]:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    locs = []
    for tensor in _get_all_tensors(proto):
        if uses_external_data(tensor):
            entry = {e.key: e.value for e in tensor.external_data}
            locs.append(entry.get("location", ""))
    return sorted(set(locs))


def _describe(digest: str, data: bytes, proto: Any, name: str) -> ModelInfo:
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "validation failed"
        raise InvalidModelError(
            f"The ONNX checker rejected the model: {first}. Re-export it with a supported opset "
            "and check it with onnx.checker.check_model."
        ) from exc
    try:  # the checker does not know whether our runtime can execute every op
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise InvalidModelError(
            f"onnxruntime cannot load the model: {str(exc).splitlines()[0][:300]}. Re-export it with "
            "operators and an opset that onnxruntime supports."
        ) from exc
    inputs = [_spec(a) for a in sess.get_inputs()]
    outputs = [_spec(a) for a in sess.get_outputs()]
    for spec in inputs + outputs:
        if spec.dtype not in SUPPORTED_DTYPES:
            raise InvalidModelError(
                f"Tensor {spec.name!r} has type {spec.dtype}, which Ciro does not carry "
                f"(supported: {', '.join(SUPPORTED_DTYPES)}). For scikit-learn classifiers convert with "
                "options={id(model): {'zipmap': False}}."
            )
    return ModelInfo(
        hash=digest, name=name, size=len(data),
        opset={(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import},
        inputs=inputs, outputs=outputs, created_at=time.time(),
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
    )


_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64", "tensor(bool)": "bool",
}


def _spec(arg: Any) -> TensorSpec:
    shape = [d if isinstance(d, int) else (d if isinstance(d, str) else None) for d in (arg.shape or [])]
    return TensorSpec(name=arg.name, dtype=_ORT_TYPES.get(arg.type, arg.type), shape=shape)
