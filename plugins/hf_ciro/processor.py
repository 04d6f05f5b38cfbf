"""Raw text or images -> the exported graph's inputs, and its outputs -> what transformers' pipelines return.

An :class:`HFProcessor` reads a bundle folder written from :class:`hf_ciro.export.Exported` (``processor.json``, the
model's config.json and its tokenizer or image-processor files). Text runs through the core's text pipeline
(:class:`ciro.textmodels.TextPipeline`: the fast Rust tokenizer in the bundle's tokenizer.json, milliseconds to load,
no transformers import), which gives the tokens transformers' own tokenizer gives. Scores are computed as
transformers' pipelines compute them (:class:`ciro.textmodels.Scoring`: softmax, or sigmoid for multi-label and
single-logit models), so a deployed model answers what ``pipeline(task, model=...)`` answers on the same input.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ciro import InputError, InvalidModelError
from ciro.textmodels import Scoring, TextPipeline, read_spec, scores

__all__ = ["TEXT_TASKS", "HFProcessor"]

TEXT_TASKS = ("text-classification", "feature-extraction", "token-classification")
_IMAGE_INPUT = ("a PIL.Image, a path to an image file, the image file's bytes, a numpy HxWxC uint8 array, or a list "
                "of those")
_TEXT_INPUT = "a string or a list of strings"


class HFProcessor:
    """Pre- and post-processing for one exported model, loaded from its bundle folder."""

    def __init__(self, bundle_dir: Path) -> None:
        self.bundle_dir = Path(bundle_dir)
        spec = read_spec(self.bundle_dir, "hf", redo="Pass the folder written from hf_ciro's export "
                         "(Exported.write_bundle), or export the model again with hf_ciro.export.export.")
        self.spec: dict[str, Any] = spec
        self.task: str = str(spec.get("task"))
        self.inputs: list[str] = list(spec.get("inputs", []))
        self.scoring = Scoring.from_spec(spec)
        self.labels: dict[str, str] = dict(self.scoring.labels)
        self._text: TextPipeline | None = None
        self._image_processor: Any = None
        self.max_length = int(spec.get("max_length", 128))
        if self.task not in (*TEXT_TASKS, "image-classification"):
            raise InvalidModelError(f"{self.bundle_dir / 'processor.json'} names task {self.task!r}, which this "
                                    "version of hf_ciro does not process. Export the model again with this version.")
        if self.task in TEXT_TASKS:
            self._text = TextPipeline(self.bundle_dir, spec, max_length=self.max_length)
            return
        try:
            from transformers import AutoImageProcessor

            self._image_processor = AutoImageProcessor.from_pretrained(str(self.bundle_dir))
        except Exception as exc:
            first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            raise InvalidModelError(f"Cannot load the {self.task} processor from {self.bundle_dir}: {first}. The "
                                    "bundle is incomplete; export the model again and write its whole bundle.") from exc

    # --- inputs -----------------------------------------------------------------------------------------------------

    def preprocess(self, raw: Any) -> dict[str, np.ndarray]:
        """Tokenize text (padded to the longest, truncated to max_length) or resize and normalise images."""
        if self._text is not None:
            return self._text.tensors(self._texts(raw))
        images = [self._image(item) for item in self._items(raw, _IMAGE_INPUT)]
        pixels = self._image_processor(images, return_tensors="np")["pixel_values"]
        return {"pixel_values": np.asarray(pixels, dtype=np.float32)}

    def _texts(self, raw: Any) -> list[str]:
        texts = self._items(raw, _TEXT_INPUT)
        for text in texts:
            if not isinstance(text, str):
                raise InputError(f"The {self.task} model takes {_TEXT_INPUT}; got an item of type "
                                 f"{type(text).__name__}. Send text.")
        return texts

    def _items(self, raw: Any, takes: str) -> list[Any]:
        items = list(raw) if isinstance(raw, list | tuple) else [raw]
        if not items:
            raise InputError(f"Got an empty list; the {self.task} model takes {takes}. Send at least one input.")
        if self._text is not None and not isinstance(raw, str | list | tuple):
            raise InputError(f"The {self.task} model takes {takes}; got {type(raw).__name__}. Send text.")
        return items

    def _image(self, item: Any) -> Any:
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            if isinstance(item, Image.Image):
                image = item
            elif isinstance(item, str | os.PathLike):
                if not Path(item).is_file():
                    raise InputError(f"No image file at {str(item)!r}. The image-classification model takes "
                                     f"{_IMAGE_INPUT}.")
                image = Image.open(item)
            elif isinstance(item, bytes | bytearray | memoryview):
                image = Image.open(io.BytesIO(bytes(item)))
            elif isinstance(item, np.ndarray):
                image = Image.fromarray(_hwc_uint8(item))
            else:
                raise InputError(f"The image-classification model takes {_IMAGE_INPUT}; got "
                                 f"{type(item).__name__}.")
            # As transformers' load_image: honour the EXIF orientation, then RGB.
            return ImageOps.exif_transpose(image).convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"Cannot decode the image: {exc}. Send a PNG, JPEG or another format Pillow reads.") \
                from exc

    # --- outputs ----------------------------------------------------------------------------------------------------

    def postprocess(self, outputs: dict[str, np.ndarray], raw: Any) -> Any:
        """One result per input: a list when ``raw`` was a list (or tuple), else the single result."""
        batch = isinstance(raw, list | tuple)
        n = len(raw) if batch else 1
        name = "embeddings" if self.task == "feature-extraction" else "logits"
        if name not in outputs:
            raise InvalidModelError(f"The model's outputs {sorted(outputs)} lack {name!r}, which {self.task} reads. "
                                    "Export the model again with hf_ciro.export.export.")
        values = np.asarray(outputs[name])
        if values.shape[0] != n:
            raise InputError(f"The outputs hold {values.shape[0]} rows for {n} inputs. Pass postprocess the same raw "
                             "input that preprocess was given.")
        if self.task == "feature-extraction":
            results: list[Any] = [[float(x) for x in row] for row in values.astype(np.float32)]
        elif self.task == "token-classification":
            results = self._entities(values, self._texts(raw))
        else:
            ranked = [self.scoring.ranked(row) for row in values]
            top_k = self.spec.get("image", {}).get("top_k") if self.task == "image-classification" else None
            results = [r[:top_k] for r in ranked] if top_k else ranked
        return results if batch else results[0]

    def _entities(self, logits: np.ndarray, texts: list[str]) -> list[list[dict[str, Any]]]:
        """Per-token entities as transformers' token-classification pipeline with aggregation_strategy="none"."""
        if self._text is None:
            raise InvalidModelError(f"The {self.task} bundle has no tokenizer. Export the model again.")
        tokenizer = self._text.tokenizer
        # Tokenize exactly as preprocess did, now reading the offsets and special-token mask the graph never sees.
        encodings = tokenizer.encode(texts)
        ignore = set(self.spec.get("ignore_labels", ["O"]))
        results = []
        for row, (text, enc) in enumerate(zip(texts, encodings, strict=True)):
            entities = []
            index = -1  # position in the unpadded sequence, as the pipeline (which never pads) counts it
            for pos, token_id in enumerate(enc.ids):
                if not enc.attention_mask[pos]:
                    continue
                index += 1
                if enc.special_tokens_mask[pos]:
                    continue
                token_scores = scores(logits[row, pos], "softmax")
                best = int(np.argmax(token_scores))
                label = self.scoring.label(best)
                if label in ignore:
                    continue
                word = tokenizer.id_to_token(token_id)
                start, end = (int(enc.offsets[pos][0]), int(enc.offsets[pos][1]))
                if token_id == tokenizer.unk_id:
                    word = text[start:end]  # the pipeline shows the original text for unknown tokens
                entities.append({"entity": label, "score": float(token_scores[best]), "index": index, "word": word,
                                 "start": start, "end": end})
            results.append(entities)
        return results



def _hwc_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4))):
        raise InputError(f"An image array must be uint8 with shape HxW or HxWxC (C = 1, 3 or 4); got {array.dtype} "
                         f"{array.shape}. Convert it (e.g. np.asarray(image, dtype=np.uint8)).")
    return array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array
