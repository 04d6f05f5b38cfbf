"""Hugging Face models on Ciro: resolve a Hub repo id or a local folder (:mod:`hf_ciro.resolve`), export it to ONNX
with a processor bundle (:mod:`hf_ciro.export`), and turn raw text or images into model inputs and model outputs into
labels, entities or embeddings (:mod:`hf_ciro.processor`).

The package imports nothing at import time: transformers and torch are slow to import and only the ``hf`` extra
installs them.
"""

__all__: list[str] = []
