"""``%ciro infer``'s INPUT: a variable, an existing file (read by its suffix) or any Python expression evaluated in
the notebook's namespace; and the ``%%ciro infer`` cell body (JSON, a Python expression or plain text).

Mistakes raise IPython's ``UsageError`` naming the input and what went wrong.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
from IPython.core.error import UsageError

__all__ = ["cell_input", "line_input", "python_words"]

FILE_SUFFIXES = (".npy", ".npz", ".json", ".csv", ".txt")


def line_input(source: str, ns: dict[str, Any]) -> Any:
    """INPUT as written after MODEL: a variable, an existing file, or any Python expression, evaluated in ``ns``."""
    if source.isidentifier() and source in ns:
        return ns[source]
    path = _existing_file(source)
    if path is not None:
        return _read_file(path)
    if source.isidentifier():
        raise UsageError(f"No variable {source!r} in the notebook. Define it first, or give a file path or a "
                         "Python expression.")
    try:
        return eval(source, ns)  # the user's own expression, in the user's own kernel
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
    if source.lower().endswith(FILE_SUFFIXES):
        raise UsageError(f"No file {source!r}, and as a Python expression it fails ({why}). Check the path.")
    raise UsageError(f"%ciro infer cannot evaluate the input {source!r}: {why}. INPUT is a Python expression in "
                     "the notebook's namespace (x, X[:3], np.ones((1, 4), np.float32), \"some text\") or an "
                     "existing file.")


def cell_input(body: str, ns: dict[str, Any]) -> Any:
    """The ``%%ciro infer`` cell body: JSON, else a Python expression, else plain text (for text models)."""
    text = body.strip()
    if not text:
        raise UsageError("%%ciro infer: the cell body is empty; put the input there.")
    try:
        return _jsonish(json.loads(text))
    except ValueError:
        pass
    try:
        return eval(text, ns)  # the user's own cell
    except Exception:
        return text  # plain text: for models with a text pre-processor


def python_words(text: str) -> list[str]:
    """Split at whitespace outside brackets and string quotes, keeping every character: ``np.ones((1, 4), dt)``
    and ``"two words"`` stay one word each."""
    words: list[str] = []
    word: list[str] = []
    depth, quote, escaped = 0, "", False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch.isspace() and depth == 0:
            if word:
                words.append("".join(word))
                word = []
            continue
        word.append(ch)
    if word:
        words.append("".join(word))
    return words


def _existing_file(source: str) -> Path | None:
    """The file INPUT names, if it names one that exists (as written, or unquoted as a shell would)."""
    candidates = [source]
    try:
        unquoted = shlex.split(source)
    except ValueError:
        unquoted = []
    if len(unquoted) == 1 and unquoted[0] != source:
        candidates.append(unquoted[0])
    for candidate in candidates:
        try:
            path = Path(candidate).expanduser()
            if path.is_file():
                return path
        except (OSError, RuntimeError, ValueError):
            continue
    return None


def _jsonish(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: np.asarray(v) for k, v in value.items()}
    return value


def _read_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path)
        if suffix == ".npz":
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        if suffix == ".json":
            return _jsonish(json.loads(path.read_text()))
        if suffix == ".csv":
            import pandas as pd

            return pd.read_csv(path)
        if suffix == ".txt":
            return path.read_text()
    except (OSError, ValueError) as exc:
        raise UsageError(f"Cannot read {path}: {exc}.") from None
    raise UsageError(f"Cannot read {path.name}: use .npy, .npz, .json, .csv or .txt.")
