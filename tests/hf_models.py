"""Tiny random Hugging Face models built locally (no Hub): one folder per task, with a tokenizer built from a
small vocab.txt (or a ViT image processor). Shared by the hf tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORDS = [
    *("the", "a", "an", "is", "in", "on", "and", "of", "to", "i", "you", "he", "she", "it", "we", "they", "this"),
    *("that", "very", "not", "good", "bad", "great", "movie", "film", "cat", "dog", "sat", "mat", "alice", "bob"),
    *("paris", "london", "berlin", "lives", "works", "visited", "love", "hate", "play", "walk", "run", "fast", "slow"),
    *("model", "ciro"),
]
PIECES = ("##s", "##ing", "##ed", "##er", "##ly")
TEXTS = ["Alice lives in Paris.", "I love this movie , it is very good !", "Bob visited Zanzibar and London walking."]
TOKEN_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _tokenizer_into(folder: Path) -> None:
    from transformers import BertTokenizerFast

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", *WORDS, *PIECES]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)


def _bert_config(**extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=len(WORDS) + len(PIECES) + 8, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=37, max_position_embeddings=64, **extra)


def _labels(names: list[str]) -> dict[str, Any]:
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def build_models(root: Path) -> dict[str, Path]:
    """Tiny random models saved as Hugging Face folders under ``root``: one per task."""
    import torch
    from transformers import (
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    torch.manual_seed(0)
    built = {
        "text-classification": BertForSequenceClassification(_bert_config(**_labels(["NEG", "NEU", "POS"]))),
        "token-classification": BertForTokenClassification(_bert_config(**_labels(TOKEN_LABELS))),
        "feature-extraction": BertModel(_bert_config()),
    }
    folders = {}
    for task, model in built.items():
        folder = root / task
        model.save_pretrained(folder)
        _tokenizer_into(folder)
        folders[task] = folder
    vit = ViTForImageClassification(ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        **_labels(["cat", "dog", "bird", "fish", "frog", "horse", "ship"])))
    folders["image-classification"] = root / "image-classification"
    vit.save_pretrained(folders["image-classification"])
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folders["image-classification"])
    return folders

