"""A Hugging Face model folder -> an ONNX graph and the processor bundle that feeds it and reads its outputs.

The graph is traced with torch's TorchScript exporter (``dynamo=False``: it handles transformers' encoders without
the dynamic-shape hints the torch.export exporter needs) from a small wrapper module, so that its inputs and outputs
are exactly what :class:`hf_ciro.processor.HFProcessor` produces and reads:

- text tasks take ``input_ids``, ``attention_mask`` and, when the model uses them, ``token_type_ids`` (int64
  [batch, sequence]); the image task takes ``pixel_values`` (float32 [batch, 3, H, W]);
- classification tasks return ``logits``; feature-extraction returns ``embeddings`` [batch, hidden], pooled (and
  L2-normalised, where the sentence-transformers folder says so) inside the graph, so the verified computation is
  the whole embedding, not just the encoder.

Every export is checked: ONNX Runtime must reproduce the torch model on sample inputs of a different batch and
sequence length than the traced one (which also proves the dynamic axes work).
"""

from __future__ import annotations

import functools
import json
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ciro import InputError
from ciro.textmodels import (
    ATOL,
    check_onnx,
    export_text,
    label_names,
    load_tokenizer,
    logits_graph,
    score_function,
    text_inputs,
    trace,
)
from ciro.tokenizing import TOKENIZER_FILE

if TYPE_CHECKING:
    import torch

__all__ = ["ATOL", "SUPPORTED_TASKS", "Exported", "export", "infer_task"]

SUPPORTED_TASKS = ("text-classification", "feature-extraction", "token-classification", "image-classification")
# Every file a transformers tokenizer may load from; the bundle carries those the folder has, and always a
# tokenizer.json written from the loaded tokenizer (what the processors run, without transformers).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
IMAGE_FILES = ("preprocessor_config.json",)
_HEADS = {
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForImageClassification": "image-classification",
}
_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
# What the user can do when Ciro cannot export or check a model: the end of those error messages.
_REMEDY = "Export it to ONNX yourself (e.g. with optimum) and deploy the .onnx file."
_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}


@dataclass(frozen=True)
class Exported:
    onnx: bytes
    task: str
    bundle: dict[str, bytes]  # file name -> bytes; always includes "processor.json"

    def write_bundle(self, folder: Path) -> Path:
        """Write the bundle files into ``folder`` (created if needed), ready for ``HFProcessor(folder)``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.bundle.items():
            (folder / name).write_bytes(data)
        return folder


def infer_task(path: Path) -> str:
    """The task a model folder was trained for, from its config.json ``architectures`` (and modules.json)."""
    path = Path(path)
    config = _read_json(path / "config.json", what="the model's config.json")
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    for arch in architectures:
        for suffix, task in _HEADS.items():
            if arch.endswith(suffix):
                return task
    if (path / "modules.json").is_file():
        return "feature-extraction"
    bare = any(_is_bare_encoder(a) for a in architectures) and not config.get("is_encoder_decoder")
    if bare and _has_tokenizer(path):
        return "feature-extraction"
    raise InputError(
        f"Cannot tell which task the model in {path} does (architectures: {architectures or 'none'}). Ciro exports "
        f"these tasks: {', '.join(SUPPORTED_TASKS)}. If the model does one of them, pass it as task=...; otherwise "
        "this model is not supported.",
        detail={"architectures": architectures, "supported_tasks": list(SUPPORTED_TASKS)},
    )


def export(path: Path, task: str | None = None, *, max_length: int = 128) -> Exported:
    """Export the model in ``path`` to ONNX (opset 17) with its processor bundle, checked against torch."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError(f"{path} has no config.json. Pass the folder that holds a transformers model (what "
                         "save_pretrained wrote, or hf_ciro.resolve.resolve(...).path).")
    task = task or infer_task(path)
    if task not in SUPPORTED_TASKS:
        raise InputError(f"Unknown task {task!r}. Pass one of: {', '.join(SUPPORTED_TASKS)}.")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise InputError(f"max_length must be an integer of at least 2, got {max_length!r}.")
    if task == "image-classification":
        return _export_image(path)
    return _export_text(path, task, max_length)


# --- text -----------------------------------------------------------------------------------------------------------


def _export_text(path: Path, task: str, max_length: int) -> Exported:
    model_dir, pooling = _sentence_transformers_layout(path) if task == "feature-extraction" else (path, None)
    tokenizer = _load_tokenizer(model_dir, task)
    model = _load_model(model_dir, task)
    inputs = text_inputs(model, tokenizer)
    max_length = _cap_length(max_length, tokenizer, model.config, pooling)
    spec: dict[str, Any] = {"kind": "hf", "task": task, "inputs": inputs, "max_length": max_length}
    if task == "feature-extraction":
        pooling = pooling or {"mode": "mean", "normalize": False}
        graph = _graphs().Embedding(model, pooling["mode"], pooling["normalize"])
        output = "embeddings"
        spec["pooling"] = {"mode": pooling["mode"], "normalize": pooling["normalize"]}
    else:
        graph = logits_graph(model)
        output = "logits"
        spec["labels"] = label_names(model.config)
        if task == "text-classification":
            spec["function"] = score_function(model.config)
        else:
            spec["ignore_labels"] = ["O"]
    spec["outputs"] = [output]
    done = export_text(graph, tokenizer, inputs, max_length=max_length, source=path, task=task, remedy=_REMEDY,
                       output=output, per_token=task == "token-classification")
    # The bundle always carries tokenizer.json, as transformers runs it: the processors load it without transformers.
    spec["tokenizer"] = done.tokenizer_settings
    files = {**_copy_files(model_dir, TOKENIZER_FILES), TOKENIZER_FILE: done.tokenizer_json}
    return Exported(onnx=done.onnx, task=task, bundle=_bundle(spec, model_dir, files))


def _sentence_transformers_layout(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """Where a sentence-transformers folder keeps its transformer, and how it pools: (model folder, pooling)."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return path, None
    modules = _read_json(modules_file, what="modules.json")
    if not isinstance(modules, list):
        raise InputError(f"{modules_file} is not a list of modules. Re-save the model with sentence-transformers.")
    model_dir, mode, normalize = path, "mean", False
    for module in modules:
        kind, sub = str(module.get("type", "")), str(module.get("path", ""))
        if kind == _ST_TRANSFORMER:
            model_dir = path / sub if sub else path
        elif kind == _ST_POOLING:
            mode = _pooling_mode(path / sub / "config.json") if sub else "mean"
        elif kind == _ST_NORMALIZE:
            normalize = True
        else:
            # A Dense or other module would change the embedding; leaving it out would export a different model.
            raise InputError(f"{path} is a sentence-transformers model with a {kind!r} module, which Ciro cannot "
                             "export (supported: Transformer, Pooling, Normalize). Export it to ONNX yourself and "
                             "deploy the .onnx file.")
    layout: dict[str, Any] = {"mode": mode, "normalize": normalize}
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        # sentence-transformers truncates at its own max_seq_length; so must we, to give the same embeddings.
        layout["max_seq_length"] = _read_json(st_config, what="sentence_bert_config.json").get("max_seq_length")
    return model_dir, layout


def _pooling_mode(config_file: Path) -> str:
    if not config_file.is_file():
        return "mean"
    config = _read_json(config_file, what="the pooling config")
    modes = [mode for key, mode in _POOLING_KEYS.items() if config.get(key)]
    unsupported = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in _POOLING_KEYS]
    if len(modes) != 1 or unsupported:
        raise InputError(f"{config_file} asks for pooling {modes + unsupported}; Ciro pools with exactly one of "
                         "mean, cls or max. Export this model to ONNX yourself and deploy the .onnx file.")
    return modes[0]


def _cap_length(max_length: int, tokenizer: Any, config: Any, pooling: dict[str, Any] | None) -> int:
    """max_length, capped by sentence-transformers' max_seq_length, the tokenizer's limit and the position table."""
    caps = [max_length]
    st_max = (pooling or {}).get("max_seq_length")
    if isinstance(st_max, int) and st_max > 0:
        caps.append(st_max)
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:  # transformers' "no limit" is 1e30
        caps.append(model_max)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        caps.append(positions)
    return min(caps)


def _load_tokenizer(path: Path, task: str) -> Any:
    if not _has_tokenizer(path):
        raise InputError(f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES[:4])}), which {task} needs. "
                         "Save the tokenizer next to the model (tokenizer.save_pretrained(folder)).")
    return load_tokenizer(path, task=task)


# --- image ----------------------------------------------------------------------------------------------------------


def _export_image(path: Path) -> Exported:
    import torch
    from transformers import AutoImageProcessor

    model = _load_model(path, "image-classification")  # first: a text model fails here with the clearer message
    if not (path / "preprocessor_config.json").is_file():
        raise InputError(f"{path} has no preprocessor_config.json, which image-classification needs. Save the image "
                         "processor next to the model (image_processor.save_pretrained(folder)).")
    try:
        processor = AutoImageProcessor.from_pretrained(str(path))
    except Exception as exc:
        raise InputError(f"Cannot load the image processor in {path}: {_first_line(exc)}. Re-save it with "
                         "image_processor.save_pretrained(folder).") from exc

    def sample(sizes: tuple[tuple[int, int], ...]) -> dict[str, torch.Tensor]:
        images = [_random_image(w, h, seed) for seed, (w, h) in enumerate(sizes)]
        pixels = processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels.to(torch.float32)}

    traced = sample(((64, 48), (40, 72)))
    _, channels, height, width = traced["pixel_values"].shape
    graph = _graphs().ImageLogits(model)
    onnx_bytes = trace(graph, traced, "logits", {"pixel_values": {0: "batch"}}, {0: "batch"}, source=path,
                       task="image-classification", remedy=_REMEDY)
    check_onnx(onnx_bytes, graph, [traced, sample(((33, 33), (80, 20), (50, 50)))], "logits", source=path,
               remedy=_REMEDY)
    spec = {
        "kind": "hf",
        "task": "image-classification",
        "inputs": ["pixel_values"],
        "outputs": ["logits"],
        "labels": label_names(model.config),
        "function": score_function(model.config),
        "image": {"channels": int(channels), "height": int(height), "width": int(width), "top_k": 5},
    }
    return Exported(onnx=onnx_bytes, task="image-classification",
                    bundle=_bundle(spec, path, _copy_files(path, IMAGE_FILES)))


def _random_image(width: int, height: int, seed: int) -> Any:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# --- shared ---------------------------------------------------------------------------------------------------------


def _load_model(path: Path, task: str) -> Any:
    import torch
    import transformers

    auto = {
        "text-classification": transformers.AutoModelForSequenceClassification,
        "token-classification": transformers.AutoModelForTokenClassification,
        "image-classification": transformers.AutoModelForImageClassification,
        "feature-extraction": transformers.AutoModel,
    }[task]
    try:
        # Eager attention traces to plain MatMul/Softmax; the SDPA path emits ops the TorchScript exporter mangles.
        model, info = auto.from_pretrained(str(path), attn_implementation="eager", dtype=torch.float32,
                                           output_loading_info=True)
    except ValueError as exc:  # "Unrecognized configuration class ... for this kind of AutoModel"
        raise InputError(f"The model in {path} cannot do {task}: {_first_line(exc)}. Pass the task it was trained "
                         f"for (one of {', '.join(SUPPORTED_TASKS)}), or leave task= out to infer it.") from exc
    except Exception as exc:
        raise InputError(f"Cannot load the model in {path} for {task}: {_first_line(exc)}. Check that the folder "
                         "holds the model's weights (model.safetensors or pytorch_model.bin).") from exc
    # Weights the checkpoint lacks would be random: a classifier head on a bare encoder, say. The pooler is the
    # exception for feature-extraction, which never uses it.
    missing = [k for k in info.get("missing_keys", []) if not (task == "feature-extraction" and "pooler" in k)]
    mismatched = [str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys", [])]
    if missing or mismatched:
        raise InputError(f"The weights in {path} do not fit a {task} model (missing: {missing[:4]}, wrong shape: "
                         f"{mismatched[:4]}): the checkpoint was trained for another task. Leave task= out to infer "
                         "it, or pass the task the model was trained for.",
                         detail={"missing_keys": missing, "mismatched_keys": mismatched})
    model.eval()
    return model


def _bundle(spec: dict[str, Any], folder: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    # config.json rides along: AutoTokenizer/AutoImageProcessor read it to pick their class.
    bundle = {"config.json": (folder / "config.json").read_bytes(), **files}
    bundle["processor.json"] = json.dumps(spec, indent=2, sort_keys=True).encode()
    return bundle


def _copy_files(folder: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES if name != "tokenizer_config.json")


def _is_bare_encoder(arch: str) -> bool:
    """``BertModel``, ``RobertaModel``...: a headless model, whose hidden states feature-extraction pools."""
    return bool(re.fullmatch(r"[A-Z][A-Za-z0-9]*Model", arch)) and not arch.endswith(("LMHeadModel", "PreTrainedModel"))


def _read_json(path: Path, *, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{path} does not exist; {what} is needed. Pass a transformers model folder.") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read {what} at {path}: {exc}. Fix or re-save the file.") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@functools.cache
def _graphs() -> Any:
    """The wrapper modules, defined on first use so that importing this module does not import torch."""
    import torch

    class Embedding(torch.nn.Module):
        """(input_ids, attention_mask[, token_type_ids]) -> pooled, optionally L2-normalised, embeddings."""

        def __init__(self, model: torch.nn.Module, mode: str, normalize: bool) -> None:
            super().__init__()
            self.model, self.mode, self.normalize = model, mode, normalize

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            # The same arithmetic as sentence-transformers' Pooling, so embeddings match it.
            if self.mode == "cls":
                pooled = hidden[:, 0]
            elif self.mode == "max":
                pooled = torch.where(mask > 0, hidden, torch.full_like(hidden, -1e9)).max(dim=1).values
            else:
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled

    class ImageLogits(torch.nn.Module):
        """pixel_values -> logits."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=pixel_values).logits

    return types.SimpleNamespace(Embedding=Embedding, ImageLogits=ImageLogits)
