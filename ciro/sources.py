"""From what a user names to a deployed model: a model ref (hash, prefix, name), an ONNX file, or whatever an
installed plugin resolves (the ``ciro.model_sources`` entry point group, e.g. a Hugging Face repo id).

A model source is a callable ``source(client, spec) -> ModelInfo | None``: None when ``spec`` is not its kind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelNotFoundError
from .jobs import ModelInfo
from .plugins import load_entry_points

if TYPE_CHECKING:
    from .client import CiroClient

__all__ = ["MODEL_SOURCES", "resolve_model"]

MODEL_SOURCES = "ciro.model_sources"


def _plugins() -> list[Any]:
    return [source for _, source in load_entry_points(MODEL_SOURCES)]


def resolve_model(client: CiroClient, spec: str | os.PathLike[str], *, zk: bool = False) -> ModelInfo:
    """The model ``spec`` names, deployed if it is a file (or a plugin's kind, e.g. a Hugging Face repo id)."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return client.deploy(path, zk=zk)
    if text.endswith(".onnx"):
        raise ModelNotFoundError(f"No ONNX file at {path}. Check the path.")
    if "/" not in text:  # a repo id has a slash; a model ref never does
        try:
            return client.model(text)
        except ModelNotFoundError:
            pass
    sources = _plugins()
    for source in sources:
        info = source(client, text)
        if isinstance(info, ModelInfo):
            return info
    hint = ("a deployed model's name or hash, or the path of an ONNX file"
            + ("" if sources else "; Hugging Face repo ids need the hf extra (pip install 'ciro-network[hf]')"))
    raise ModelNotFoundError(f"No model {text!r}: give {hint}. List deployed models with `ciro models`.")

