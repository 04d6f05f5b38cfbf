"""The ``transformers`` flavor (task text-classification): the model exported to ONNX, its tokenizer shipped as the
Ciro model's processor bundle (kind ``mlflow-text``, registered by this package), so predict sends text.

What a prediction is, as MLflow's transformers pyfunc gives it: the top label and its score (softmax over the
logits). Tokenization runs on the client; the job's commitments and receipt cover the token ids and the logits.

The processor loads the fast Rust tokenizer from the bundle's tokenizer.json (:class:`ciro.tokenizing.TextTokenizer`)
and imports neither transformers nor MLflow, so a client's first prediction does not wait seconds for imports.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ciro import CiroError
from ciro.tokenizing import TOKENIZER_FILE, TextTokenizer, bundle_tokenizer

if TYPE_CHECKING:
    from mlflow.exceptions import MlflowException

__all__ = ["KIND", "TextProcessor", "export_text_classifier", "texts"]

KIND = "mlflow-text"
TASKS = ("text-classification", "sentiment-analysis")


def _bad(message: str) -> MlflowException:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def texts(data: Any) -> list[str]:
    """The input texts: a string, a list of strings, a Series, or a DataFrame of one text column."""
    if isinstance(data, str):
        return [data]
    pd = sys.modules.get("pandas")  # a DataFrame or Series exists only if pandas was imported: no import here
    if pd is not None and isinstance(data, pd.DataFrame):
        if data.shape[1] != 1:
            raise _bad(f"A text model takes one column of text; this DataFrame has {data.shape[1]} "
                       f"({list(data.columns)}). Send one column.")
        data = data.iloc[:, 0]
    if pd is not None and isinstance(data, pd.Series):
        data = data.tolist()
    if isinstance(data, Mapping) and len(data) == 1:
        data = next(iter(data.values()))
    if isinstance(data, Sequence | np.ndarray) and all(isinstance(t, str) for t in data) and len(data) > 0:
        return [str(t) for t in data]
    raise _bad("A text model takes text: a string, a list of strings, or a DataFrame with one text column.")


def export_text_classifier(local: Path, flavor: dict[str, Any]) -> tuple[bytes, dict[str, bytes]]:
    """ONNX bytes (inputs ``input_ids``, ``attention_mask`` [and ``token_type_ids``], output ``logits``) and the
    processor bundle's files."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    task = flavor.get("task")
    if task not in TASKS:
        raise _bad(f"Ciro deploys transformers models of task text-classification; this one is {task!r}. Export it "
                   "to ONNX yourself and log it with mlflow.onnx, or use `ciro hf deploy` for other tasks.")
    model_dir = local / flavor.get("model_binary", "model")
    tok_dir = local / "components" / "tokenizer"
    if not tok_dir.is_dir():
        raise _bad("This transformers model was logged without its tokenizer; log the pipeline (with its tokenizer).")
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    sample = tokenizer(["a sample text", "another one, longer than the first"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).logits

    with tempfile.TemporaryDirectory(prefix="ciro-mlflow-text-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(Logits(), tuple(sample[n] for n in names), str(path), input_names=names,
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names},
                                            "logits": {0: "batch"}})
        except Exception as exc:  # the exporter raises many types
            raise _bad(f"torch.onnx.export cannot export this model: {str(exc).splitlines()[0][:300]}.") from exc
        onnx = path.read_bytes()
        tokenizer.save_pretrained(tmp + "/tok")
        bundle = {p.name: p.read_bytes() for p in Path(tmp, "tok").iterdir() if p.is_file()}
    try:
        # tokenizer.json as transformers runs it, and its call settings: what TextProcessor loads, fast.
        bundle[TOKENIZER_FILE], settings = bundle_tokenizer(tokenizer)
    except CiroError as exc:
        raise _bad(exc.message) from exc
    labels = {str(k): str(v) for k, v in (model.config.id2label or {}).items()}
    spec = {"kind": KIND, "task": "text-classification", "inputs": names, "labels": labels,
            "max_length": int(min(getattr(tokenizer, "model_max_length", 512) or 512,
                                  getattr(model.config, "max_position_embeddings", 512) or 512)),
            "multi_label": model.config.problem_type == "multi_label_classification", "tokenizer": settings}
    bundle["processor.json"] = json.dumps(spec).encode()
    return onnx, bundle


class TextProcessor:
    """``ciro.processors`` entry ``mlflow-text``: text -> token tensors; logits -> the top label and its score."""

    def __init__(self, bundle_dir: Path) -> None:
        self.spec = json.loads((Path(bundle_dir) / "processor.json").read_text())
        self.tokenizer = TextTokenizer.from_bundle(Path(bundle_dir), self.spec, int(self.spec["max_length"]))

    def preprocess(self, raw: Any) -> dict[str, np.ndarray]:
        return self.tokenizer.tensors(texts(raw), self.spec["inputs"])

    def postprocess(self, outputs: dict[str, np.ndarray], raw: Any) -> list[dict[str, Any]]:
        logits = np.asarray(outputs["logits"], dtype=np.float64)
        if self.spec.get("multi_label"):
            scores = 1 / (1 + np.exp(-logits))
        else:
            e = np.exp(logits - logits.max(axis=-1, keepdims=True))
            scores = e / e.sum(axis=-1, keepdims=True)
        best = scores.argmax(axis=-1)
        labels = self.spec.get("labels") or {}
        return [{"label": labels.get(str(int(i)), str(int(i))), "score": float(s[i])} for i, s in zip(best, scores,
                                                                                                     strict=True)]
