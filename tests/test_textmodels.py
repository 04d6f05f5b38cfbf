"""The text pipeline both plugins share (ciro.textmodels): how logits become labels and scores."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ciro import InvalidModelError
from ciro.textmodels import Scoring, label_names, score_function, scores


def _config(problem_type: str | None = None, num_labels: int = 2) -> SimpleNamespace:
    return SimpleNamespace(problem_type=problem_type, num_labels=num_labels,
                           id2label={1: "POS", 0: "NEG"} if num_labels == 2 else {})


def test_the_score_function_follows_the_model_config_as_transformers_pipelines_do() -> None:
    assert score_function(_config()) == "softmax"
    assert score_function(_config("multi_label_classification")) == "sigmoid"
    assert score_function(_config(num_labels=1)) == "sigmoid"  # one logit: a probability, never softmax's 1.0
    assert score_function(_config("regression")) == "none"
    assert label_names(_config()) == {"0": "NEG", "1": "POS"}


def test_scores_top_and_ranked() -> None:
    logits = np.array([[0.0, 2.0], [3.0, -1.0]], np.float32)
    x = logits.astype(np.float64)  # scores are computed in float64
    want = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scores(logits, "softmax"), want, rtol=1e-12)
    np.testing.assert_allclose(scores(logits, "sigmoid"), 1 / (1 + np.exp(-logits.astype(np.float64))))
    np.testing.assert_array_equal(scores(logits, "none"), logits.astype(np.float64))
    s = Scoring({"0": "NEG", "1": "POS"})
    assert [t["label"] for t in s.top(logits)] == ["POS", "NEG"]
    assert s.top(logits)[0]["score"] == pytest.approx(want[0, 1])
    assert [r["label"] for r in s.ranked(logits[1])] == ["NEG", "POS"]
    assert Scoring().label(3) == "LABEL_3"


def test_old_bundles_read_and_unknown_functions_are_refused() -> None:
    assert Scoring.from_spec({"labels": {"0": "a"}, "multi_label": True}).function == "sigmoid"
    assert Scoring.from_spec({}).function == "softmax"
    with pytest.raises(InvalidModelError, match="Unknown score function 'tanh'"):
        Scoring.from_spec({"function": "tanh"})
    with pytest.raises(InvalidModelError, match="Export the model again"):
        scores([1.0], "tanh")
