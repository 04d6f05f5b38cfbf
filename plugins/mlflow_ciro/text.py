"""The ``transformers`` flavor (task text-classification): the model exported to ONNX, its tokenizer shipped as the
Ciro model's processor bundle (kind ``mlflow-text``, registered by this package), so predict sends text.

What a prediction is, as MLflow's transformers pyfunc gives it: the top label and its score (softmax over the
logits; sigmoid for multi-label and single-logit models). Tokenization runs on the client; the job's commitments and
receipt cover the token ids and the logits.

Export, tokenization and scoring are the core's text pipeline (:mod:`ciro.textmodels`, shared with hf_ciro): the
graph is checked against the torch model and the bundle's fast tokenizer against transformers' one. The processor
loads the fast Rust tokenizer from the bundle's tokenizer.json and imports neither transformers nor MLflow, so a
client's first prediction does not wait seconds for imports.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ciro import InputError, InvalidModelError
from ciro.textmodels import (
    TextPipeline,
    export_text,
    label_names,
    load_tokenizer,
    logits_graph,
    read_spec,
    score_function,
    text_inputs,
)
from ciro.tokenizing import TOKENIZER_FILE

__all__ = ["KIND", "TextProcessor", "export_text_classifier", "texts"]

KIND = "mlflow-text"
TASKS = ("text-classification", "sentiment-analysis")
_REMEDY = "Export it to ONNX yourself and log it with mlflow.onnx."


def texts(data: Any) -> list[str]:
    """The input texts: a string, a list of strings, a Series, or a DataFrame of one text column."""
    if isinstance(data, str):
        return [data]
    pd = sys.modules.get("pandas")  # a DataFrame or Series exists only if pandas was imported: no import here
    if pd is not None and isinstance(data, pd.DataFrame):
        if data.shape[1] != 1:
            raise InputError(f"A text model takes one column of text; this DataFrame has {data.shape[1]} "
                             f"({list(data.columns)}). Send one column.")
        data = data.iloc[:, 0]
    if pd is not None and isinstance(data, pd.Series):
        data = data.tolist()
    if isinstance(data, Mapping) and len(data) == 1:
        data = next(iter(data.values()))
    if isinstance(data, Sequence | np.ndarray) and all(isinstance(t, str) for t in data) and len(data) > 0:
        return [str(t) for t in data]
    raise InputError("A text model takes text: a string, a list of strings, or a DataFrame with one text column.")


def export_text_classifier(local: Path, flavor: dict[str, Any]) -> tuple[bytes, dict[str, bytes]]:
    """ONNX bytes (inputs ``input_ids``, ``attention_mask`` [and ``token_type_ids``], output ``logits``) and the
    processor bundle's files."""
    from transformers import AutoModelForSequenceClassification

    task = flavor.get("task")
    if task not in TASKS:
        raise InputError(f"Ciro deploys transformers models of task text-classification; this one is {task!r}. "
                         "Export it to ONNX yourself and log it with mlflow.onnx, or use `ciro hf deploy` for other "
                         "tasks.")
    model_dir = local / flavor.get("model_binary", "model")
    tok_dir = local / "components" / "tokenizer"
    if not tok_dir.is_dir():
        raise InvalidModelError("This transformers model was logged without its tokenizer; log the pipeline (with its "
                                "tokenizer).")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for a folder it cannot load
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise InvalidModelError(f"Cannot load the text classifier logged in {model_dir}: {first}. Log the "
                                "pipeline again with mlflow.transformers.log_model.") from exc
    tokenizer = load_tokenizer(tok_dir, task="text-classification")
    max_length = int(min(getattr(tokenizer, "model_max_length", 512) or 512,
                         getattr(model.config, "max_position_embeddings", 512) or 512))
    done = export_text(logits_graph(model), tokenizer, text_inputs(model, tokenizer), max_length=max_length,
                       source=model_dir, task="text-classification", remedy=_REMEDY)
    with tempfile.TemporaryDirectory(prefix="ciro-mlflow-text-") as tmp:
        tokenizer.save_pretrained(tmp)
        bundle = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    # tokenizer.json as transformers runs it, and its call settings: what TextProcessor loads, fast.
    bundle[TOKENIZER_FILE] = done.tokenizer_json
    spec = {"kind": KIND, "task": "text-classification", "inputs": done.inputs, "labels": label_names(model.config),
            "max_length": max_length, "function": score_function(model.config),
            "tokenizer": done.tokenizer_settings}
    bundle["processor.json"] = json.dumps(spec).encode()
    return done.onnx, bundle


class TextProcessor:
    """``ciro.processors`` entry ``mlflow-text``: text -> token tensors; logits -> the top label and its score."""

    def __init__(self, bundle_dir: Path) -> None:
        self.spec = read_spec(Path(bundle_dir), KIND, redo="Deploy the MLflow model again to attach a new bundle.")
        self.pipeline = TextPipeline(Path(bundle_dir), self.spec)

    def preprocess(self, raw: Any) -> dict[str, np.ndarray]:
        return self.pipeline.tensors(texts(raw))

    def postprocess(self, outputs: dict[str, np.ndarray], raw: Any) -> list[dict[str, Any]]:
        return self.pipeline.scoring.top(outputs["logits"])
