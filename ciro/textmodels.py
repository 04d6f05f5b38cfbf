"""Text models, shared by the plugins that deploy them (``hf_ciro``, ``mlflow_ciro``).

Export side (torch and transformers are imported inside the functions, so importing this module stays cheap):
:func:`export_text` traces a graph over ``input_ids``, ``attention_mask`` [and ``token_type_ids``] (int64 [batch,
sequence], both axes dynamic) with torch's TorchScript exporter, checks that ONNX Runtime reproduces torch on a batch
of another size and length than the traced one, and that the bundle's fast tokenizer gives exactly the tensors
transformers gave. :func:`trace` and :func:`check_onnx` are its two halves, for graphs that take other inputs.

Processor side (neither torch nor transformers): :class:`TextPipeline` reads a bundle's processor.json and
tokenizer.json and turns texts into token tensors; :class:`Scoring` turns logits into scores as transformers'
classification pipelines do (softmax; sigmoid for multi-label and single-logit models; none for regression) and
names them.
"""

from __future__ import annotations

import functools
import json
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError, InvalidModelError
from .tokenizing import TextTokenizer, bundle_tokenizer

if TYPE_CHECKING:
    import torch

__all__ = [
    "ATOL",
    "FUNCTIONS",
    "OPSET",
    "Scoring",
    "TextExport",
    "TextPipeline",
    "check_onnx",
    "export_text",
    "label_names",
    "load_tokenizer",
    "logits_graph",
    "read_spec",
    "score_function",
    "scores",
    "text_inputs",
    "trace",
]

ATOL = 1e-4
OPSET = 17
FUNCTIONS = ("softmax", "sigmoid", "none")
# The TorchScript exporter keeps process-wide state (torch.onnx's GLOBALS) and warnings.catch_warnings is not
# thread-safe: two exports in one process (a gateway's page deploy and a webhook redeploy) must not overlap.
_EXPORT_LOCK = threading.Lock()
# Traced with the first batch, checked with the second: different batch sizes and sequence lengths.
_TRACE_TEXTS = ("Ciro exports this model.", "A second and longer sentence, so that the batch needs padding.")
_CHECK_TEXTS = ("Short one.", "The check batch differs from the traced one in size and length!", "Third text here.")
# Accents, case, CJK, emoji, runs of spaces and an empty text: where a tokenizer's normaliser shows.
_TRICKY_TEXTS = ("Crème BRÛLÉE, naïve café!", "東京 and  Zürich 🚀", "", "don't   stop-believing [MASK]")


# --- scoring --------------------------------------------------------------------------------------------------------


def score_function(config: Any) -> str:
    """Logits -> scores the way transformers' classification pipelines choose by default, from a model config."""
    if config.problem_type == "regression":
        return "none"
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    return "softmax"


def label_names(config: Any) -> dict[str, str]:
    """A model config's ``id2label`` as processor.json keeps it: ``{"0": "NEG", ...}`` in id order."""
    return {str(int(k)): str(v) for k, v in sorted((config.id2label or {}).items(), key=lambda kv: int(kv[0]))}


def scores(logits: Any, function: str) -> np.ndarray:
    """Scores (float64) from logits along the last axis: ``softmax``, ``sigmoid`` or ``none``."""
    x = np.asarray(logits, dtype=np.float64)
    if function == "sigmoid":
        return np.asarray(1.0 / (1.0 + np.exp(-x)))
    if function == "none":
        return x
    if function != "softmax":
        raise InvalidModelError(f"Unknown score function {function!r} (known: {', '.join(FUNCTIONS)}). Export the "
                                "model again with this version of Ciro.")
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class Scoring:
    """Label names and the score function of a classifier: logits -> ``{"label", "score"}`` predictions."""

    labels: Mapping[str, str] = field(default_factory=dict)
    function: str = "softmax"

    def __post_init__(self) -> None:
        if self.function not in FUNCTIONS:
            raise InvalidModelError(f"Unknown score function {self.function!r} (known: {', '.join(FUNCTIONS)}). "
                                    "Export the model again with this version of Ciro.")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Scoring:
        """From processor.json: ``labels`` and ``function`` (bundles that only say ``multi_label`` still read)."""
        labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
        function = spec.get("function") or ("sigmoid" if spec.get("multi_label") else "softmax")
        return cls(labels, str(function))

    def label(self, index: int) -> str:
        return self.labels.get(str(int(index)), f"LABEL_{int(index)}")

    def scores(self, logits: Any) -> np.ndarray:
        return scores(logits, self.function)

    def ranked(self, logits: Any) -> list[dict[str, Any]]:
        """Every label of one row of logits with its score, best first (ties keep label order)."""
        row = self.scores(logits)
        order = sorted(range(len(row)), key=lambda i: -row[i])
        return [{"label": self.label(i), "score": float(row[i])} for i in order]

    def top(self, logits: Any) -> list[dict[str, Any]]:
        """The best label and its score for each row of a [batch, labels] array."""
        table = self.scores(logits)
        best = table.argmax(axis=-1)
        return [{"label": self.label(int(i)), "score": float(row[i])} for i, row in zip(best, table, strict=True)]


# --- processor side -------------------------------------------------------------------------------------------------


def read_spec(folder: Path, kind: str, *, redo: str) -> dict[str, Any]:
    """A bundle's processor.json, which must be of ``kind``; ``redo`` is the sentence that says how to make one."""
    spec_file = Path(folder) / "processor.json"
    try:
        spec = json.loads(spec_file.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidModelError(f"Cannot read {spec_file}: {exc}. {redo}") from exc
    found = spec.get("kind") if isinstance(spec, dict) else type(spec).__name__
    if not isinstance(spec, dict) or found != kind:
        raise InvalidModelError(f"{spec_file} is not a {kind!r} processor bundle (it holds {found!r}). {redo}")
    return spec


class TextPipeline:
    """A text model's client side, loaded from its bundle: texts -> token tensors, logits -> labels and scores."""

    def __init__(self, folder: Path, spec: Mapping[str, Any], *, max_length: int = 128) -> None:
        self.folder = Path(folder)
        self.spec = dict(spec)
        self.inputs: list[str] = [str(name) for name in spec.get("inputs", [])]
        self.max_length = int(spec.get("max_length", max_length))
        self.tokenizer = TextTokenizer.from_bundle(self.folder, spec, self.max_length)
        self.scoring = Scoring.from_spec(spec)

    def tensors(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The model's inputs for these texts, padded to the longest and truncated at max_length."""
        return self.tokenizer.tensors(texts, self.inputs)


# --- export side ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextExport:
    onnx: bytes
    inputs: list[str]
    tokenizer_json: bytes  # the bundle's tokenizer.json
    tokenizer_settings: dict[str, Any]  # processor.json's "tokenizer"


def load_tokenizer(path: Path, *, task: str) -> Any:
    """A transformers tokenizer from a folder, one that can pad batches."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:
        raise InputError(f"Cannot load the {task} tokenizer in {path}: {_first_line(exc)}. Re-save it with "
                         "tokenizer.save_pretrained(folder) using transformers 4.57.") from exc
    if tokenizer.pad_token is None:
        raise InputError(f"The tokenizer in {path} has no padding token, so batches cannot be padded. Set one "
                         "(tokenizer.pad_token = ...) and save it again.")
    return tokenizer


def text_inputs(model: Any, tokenizer: Any) -> list[str]:
    """``input_ids``, ``attention_mask`` and, where both the model and its tokenizer use them, ``token_type_ids``."""
    import inspect

    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters and "token_type_ids" in (
        tokenizer.model_input_names or []
    ):
        names.append("token_type_ids")
    return names


def logits_graph(model: Any) -> torch.nn.Module:
    """``model`` wrapped to take (input_ids, attention_mask[, token_type_ids]) and return its logits."""
    module: torch.nn.Module = _logits_class()(model)
    return module


def export_text(graph: Any, tokenizer: Any, inputs: list[str], *, max_length: int, source: Path | str, task: str,
                remedy: str, output: str = "logits", per_token: bool = False) -> TextExport:
    """Trace ``graph`` (inputs -> ``output``, [batch] or with ``per_token`` [batch, sequence] first) to ONNX, check
    it against torch, and check the fast tokenizer the bundle will carry against ``tokenizer``. ``remedy`` ends the
    error messages: what the user can do instead (e.g. export the model to ONNX themselves)."""
    import torch

    # tokenizer.json as transformers runs it: what the processors load, without transformers.
    tokenizer_json, settings = bundle_tokenizer(tokenizer)

    def sample(texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {name: enc[name].to(torch.int64) for name in inputs}

    dynamic_out = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    onnx = trace(graph, sample(_TRACE_TEXTS), output, {n: {0: "batch", 1: "sequence"} for n in inputs}, dynamic_out,
                 source=source, task=task, remedy=remedy)
    check_onnx(onnx, graph, [sample(_TRACE_TEXTS), sample(_CHECK_TEXTS)], output, source=source, remedy=remedy)
    _check_tokenizer(TextTokenizer.from_transformers(tokenizer, max_length), inputs, sample, source, remedy)
    return TextExport(onnx=onnx, inputs=list(inputs), tokenizer_json=tokenizer_json, tokenizer_settings=settings)


def trace(graph: Any, sample: dict[str, Any], output: str, dynamic_in: dict[str, dict[int, str]],
          dynamic_out: dict[int, str], *, source: Path | str, task: str, remedy: str) -> bytes:
    """ONNX bytes (opset 17) of ``graph`` traced on ``sample`` (input name -> tensor, in the graph's order)."""
    import torch

    # The exporter restores the wrapper's training flag afterwards, recursively: a wrapper left in training mode
    # would switch the model's dropout on for the check that follows.
    graph.eval()
    try:
        with _EXPORT_LOCK, tempfile.TemporaryDirectory(prefix="ciro-export-") as tmp, torch.no_grad(), \
                warnings.catch_warnings():
            # The legacy exporter is deprecated and the tracer warns about Python-side shape checks; both are
            # expected here, and the ONNX Runtime check that follows is what proves the graph right.
            warnings.simplefilter("ignore")
            target = Path(tmp) / "model.onnx"
            torch.onnx.export(graph, tuple(sample.values()), target, input_names=list(sample), output_names=[output],
                              dynamic_axes={**dynamic_in, output: dynamic_out}, opset_version=OPSET, dynamo=False,
                              do_constant_folding=True)
            return target.read_bytes()
    except Exception as exc:  # the exporter raises many types
        raise InvalidModelError(f"torch.onnx.export failed on the {task} model in {source}: {_first_line(exc)}. "
                                f"This architecture may not export with the TorchScript exporter. {remedy}") from exc


def check_onnx(onnx_bytes: bytes, graph: Any, samples: list[dict[str, Any]], output: str, *, source: Path | str,
               remedy: str) -> None:
    """ONNX Runtime must reproduce torch on every sample, within ATOL (plus a 1e-4 relative slack for big values)."""
    import onnxruntime as ort
    import torch

    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InvalidModelError(f"ONNX Runtime cannot load the graph exported from {source}: {_first_line(exc)}. "
                                f"{remedy}") from exc
    for sample in samples:
        with torch.no_grad():
            want = graph(*sample.values()).numpy()
        got = session.run([output], {name: t.numpy() for name, t in sample.items()})[0]
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=ATOL):
            diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
            raise InvalidModelError(
                f"The ONNX export of {source} does not reproduce the torch model (shapes {got.shape} vs "
                f"{want.shape}, largest difference {diff:.3g} > {ATOL}). {remedy}",
                detail={"max_abs_diff": diff},
            )


def _check_tokenizer(fast: TextTokenizer, inputs: list[str], sample: Callable[[Sequence[str]], dict[str, Any]],
                     source: Path | str, remedy: str) -> None:
    """The bundle's fast tokenizer must give exactly the tensors transformers' tokenizer gave the traced graph."""
    for texts in (_TRACE_TEXTS, _CHECK_TEXTS, _TRICKY_TEXTS):
        want = {name: tensor.numpy() for name, tensor in sample(texts).items()}
        got = fast.tensors(texts, inputs)
        if any(not np.array_equal(got[name], want[name]) for name in inputs):
            raise InvalidModelError(f"The tokenizer of {source} does not give the same tokens from its tokenizer.json "
                                    f"as through transformers, so Ciro's processor cannot run it. {remedy} (sending "
                                    "token ids).")


@functools.cache
def _logits_class() -> Any:
    """The wrapper module, defined on first use so that importing this module does not import torch."""
    import torch

    class TextLogits(torch.nn.Module):
        """(input_ids, attention_mask[, token_type_ids]) -> logits."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits

    return TextLogits


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]
