"""Processor bundles: a model's pre/post-processing (tokenizer, image processor, label names, pooling), attached to
the model on the gateway, so clients send raw input (text, images) and get predictions (labels and scores,
entities, embeddings) rather than tensors.

The core knows only the contract; plugins implement it through the ``ciro.processors`` entry point group (name =
the bundle's ``kind``, value = a class taking the bundle's folder). Processing runs on the client: the job's input
commitment and its receipt or proof cover the tensors the processor produced, not the raw text or image.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import ConfigError, InputError, InvalidModelError
from .plugins import load_entry_point

__all__ = ["PROCESSORS", "Processor", "extract_bundle", "is_raw", "load_processor", "make_bundle"]

PROCESSORS = "ciro.processors"
_HINT = {"hf": "pip install 'ciro-network[hf]'"}


class Processor(Protocol):
    def preprocess(self, raw: Any) -> dict[str, np.ndarray]: ...

    def postprocess(self, outputs: dict[str, np.ndarray], raw: Any) -> Any: ...


def is_raw(inputs: Any) -> bool:
    """Raw input for a processor: text, bytes, a path, an image, a uint8 image array, or a list of those. Tensors
    for a model with a processor go by name, as a dict."""
    if isinstance(inputs, Mapping):
        return False
    if isinstance(inputs, list | tuple):
        return bool(inputs) and is_raw(inputs[0])
    if isinstance(inputs, np.ndarray):
        return inputs.dtype == np.uint8
    return isinstance(inputs, str | bytes | os.PathLike) or hasattr(inputs, "getpixel")  # PIL images


def make_bundle(files: Mapping[str, bytes]) -> bytes:
    """A zip of the bundle's files (``processor.json`` among them), deterministic: same files, same bytes."""
    if "processor.json" not in files:
        raise InputError('A processor bundle needs a processor.json naming its "kind".')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, files[name])
    return buf.getvalue()


def extract_bundle(data: bytes, folder: Path, sha256: str | None = None) -> Path:
    """Unpack a bundle into ``folder`` (atomically; reused when already there) after checking its hash."""
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise InvalidModelError("The processor bundle does not match the hash the gateway listed. Retry; if it "
                                "persists, attach the bundle to the model again.")
    if (folder / "processor.json").is_file():
        return folder
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    tmp.mkdir(parents=True)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for name in z.namelist():
                target = (tmp / name).resolve()
                if not str(target).startswith(str(tmp.resolve()) + os.sep):
                    raise InvalidModelError(f"Unsafe path {name!r} in a processor bundle.")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(name))
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_processor(kind: str, folder: Path) -> Processor:
    """The processor plugin for ``kind``, loaded on the bundle in ``folder``."""
    cls = load_entry_point(PROCESSORS, kind)
    if cls is not None:
        processor: Processor = cls(folder)
        return processor
    hint = _HINT.get(kind, f"a plugin registering the '{kind}' processor (entry point group {PROCESSORS})")
    raise ConfigError(f"This model's inputs are prepared by a '{kind}' processor, which is not installed here. "
                      f"Install {hint}, or send the model's tensors by name (a dict).")
