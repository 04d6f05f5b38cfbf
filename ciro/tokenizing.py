"""Text processors' tokenizer: the fast Rust tokenizer (``tokenizers``) loaded from a bundle's ``tokenizer.json``.

Loading it takes milliseconds, where importing transformers' AutoTokenizer takes ~17 s; the tokens are the same.
The exporting side, which has transformers loaded anyway, calls :func:`bundle_tokenizer`: it serialises the backend
tokenizer exactly as transformers runs it (with the added tokens and normaliser settings that tokenizer_config.json
contributed) and records the settings transformers applies on every call (padding token, id and side, truncation
side). :class:`TextTokenizer` replays them, so ``input_ids``, ``attention_mask`` and ``token_type_ids`` equal
``tokenizer(texts, padding=True, truncation=True, max_length=N)``.

A bundle without those settings (exported by an older version) is still read, through transformers, with a warning
that says how to make it fast; one whose tokenizer.json is missing is refused with what to do.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, InputError, InvalidModelError

__all__ = ["TOKENIZER_FILE", "TextTokenizer", "bundle_tokenizer"]

TOKENIZER_FILE = "tokenizer.json"
#: The encoding field each model input comes from.
_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def bundle_tokenizer(tokenizer: Any) -> tuple[bytes, dict[str, Any]]:
    """From a loaded transformers tokenizer: the bytes of the bundle's tokenizer.json and the settings to keep in
    processor.json under ``"tokenizer"``."""
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(f"The model's tokenizer ({type(tokenizer).__name__}) has no fast version, and Ciro's text "
                         "processors run the fast (Rust) tokenizer from tokenizer.json. Save a fast tokenizer with "
                         "the model (AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(folder); "
                         "SentencePiece models need the sentencepiece and protobuf packages to convert).")
    if tokenizer.pad_token is None or tokenizer.pad_token_id is None:
        raise InputError("The model's tokenizer has no padding token, so batches cannot be padded. Set one "
                         "(tokenizer.pad_token = ...) and save it again.")
    from tokenizers import Tokenizer

    # A copy without the padding and truncation the last call left on the backend: the bundle states them itself.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    settings = {
        "file": TOKENIZER_FILE,
        "pad_token": str(tokenizer.pad_token),
        "pad_id": int(tokenizer.pad_token_id),
        "pad_type_id": int(tokenizer.pad_token_type_id),
        "padding_side": str(tokenizer.padding_side),
        "truncation_side": str(tokenizer.truncation_side),
        "unk_id": None if tokenizer.unk_token_id is None else int(tokenizer.unk_token_id),
    }
    return backend.to_str().encode(), settings


class TextTokenizer:
    """Texts -> padded, truncated token tensors, as transformers' fast tokenizer gives them."""

    def __init__(self, backend: Any, settings: Mapping[str, Any], max_length: int) -> None:
        self.backend = backend
        self.settings = dict(settings)
        self.max_length = int(max_length)
        self.unk_id: int | None = settings.get("unk_id")
        backend.no_padding()
        backend.no_truncation()
        backend.enable_truncation(self.max_length, stride=0, strategy="longest_first",
                                  direction=str(settings.get("truncation_side", "right")))
        backend.enable_padding(direction=str(settings.get("padding_side", "right")), pad_id=int(settings["pad_id"]),
                               pad_type_id=int(settings.get("pad_type_id", 0)), pad_token=str(settings["pad_token"]),
                               length=None, pad_to_multiple_of=None)
        backend.encode_special_tokens = False  # as transformers' split_special_tokens=False

    @classmethod
    def from_bundle(cls, folder: Path, spec: Mapping[str, Any], max_length: int) -> TextTokenizer:
        """The bundle's tokenizer.json with the settings its processor.json records; for a bundle exported before
        those were recorded, transformers' AutoTokenizer (slow to import), with a warning."""
        folder = Path(folder)
        settings = spec.get("tokenizer")
        if not isinstance(settings, Mapping):
            return cls._from_transformers_folder(folder, max_length)
        path = folder / str(settings.get("file", TOKENIZER_FILE))
        if not path.is_file():
            raise InvalidModelError(f"The processor bundle in {folder} has no {path.name}, which its processor.json "
                                    "names. The bundle is incomplete: export the model again and attach its whole "
                                    "bundle.")
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError("This model's text processor needs the tokenizers package. Install it (pip install "
                              "tokenizers, or the plugin's extra, e.g. 'ciro-network[hf]').") from exc
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise InvalidModelError(f"Cannot load {path}: {_first_line(exc)}. Export the model again and attach "
                                    "its whole bundle.") from exc
        try:
            return cls(backend, settings, max_length)
        except Exception as exc:  # a processor.json whose settings are missing or malformed
            raise InvalidModelError(f"The tokenizer settings in {folder / 'processor.json'} are unusable: "
                                    f"{_first_line(exc)}. Export the model again and attach its whole bundle.") from exc

    @classmethod
    def from_transformers(cls, tokenizer: Any, max_length: int) -> TextTokenizer:
        """The same tokenizer as a loaded transformers one (its backend and call settings)."""
        from tokenizers import Tokenizer

        data, settings = bundle_tokenizer(tokenizer)
        return cls(Tokenizer.from_str(data.decode()), settings, max_length)

    @classmethod
    def _from_transformers_folder(cls, folder: Path, max_length: int) -> TextTokenizer:
        warnings.warn(f"The processor bundle in {folder} was exported by an older Ciro and records no tokenizer "
                      "settings, so it is loaded through transformers' AutoTokenizer (seconds to import). Deploy the "
                      "model again to ship a bundle that loads in milliseconds.", UserWarning, stacklevel=3)
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except Exception as exc:
            raise InvalidModelError(f"Cannot load the tokenizer in the processor bundle {folder}: "
                                    f"{_first_line(exc)}. Export the model again with this version of Ciro and "
                                    "attach its bundle.") from exc
        try:
            return cls.from_transformers(tokenizer, max_length)
        except InputError as exc:
            raise InvalidModelError(f"The processor bundle in {folder} cannot be used: {exc.message}") from exc

    def encode(self, texts: Sequence[str]) -> list[Any]:
        """One ``tokenizers.Encoding`` per text (ids, attention mask, type ids, offsets, special-token mask)."""
        return list(self.backend.encode_batch(list(texts), add_special_tokens=True))

    def tensors(self, texts: Sequence[str], names: Sequence[str]) -> dict[str, np.ndarray]:
        """The model's inputs by name (int64 [batch, sequence])."""
        unknown = [n for n in names if n not in _FIELDS]
        if unknown:
            raise InvalidModelError(f"The model takes {unknown}, which a text tokenizer does not produce (it makes "
                                    f"{', '.join(_FIELDS)}). Export the model again.")
        encodings = self.encode(texts)
        return {n: np.asarray([getattr(e, _FIELDS[n]) for e in encodings], dtype=np.int64) for n in names}

    def id_to_token(self, token_id: int) -> str | None:
        token: str | None = self.backend.id_to_token(int(token_id))
        return token


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]
