"""`ciro estimate`'s fitted parts as pure functions: the batched proof's fill factor and what the recorded scaling data
claims about it (ciro/zk_scaling.json), recomputed from the recorded runs."""

from __future__ import annotations

from typing import Any

import pytest

from ciro.estimate import fill_factor, fill_rows, fit, scaling


def _b(logrows: int, rows: int, single_logrows: int, single_rows: int, prove: float, single: float,
       model: str = "m", batch: int = 16) -> dict[str, Any]:
    return {"model": model, "batch": batch, "logrows": logrows, "num_rows": rows, "single_logrows": single_logrows,
            "single_num_rows": single_rows, "prove_s": prove, "single_prove_s": single}


def test_fill_factor_is_the_slope_of_proof_time_over_rows_filled() -> None:
    # half the rows filled beyond one row's took 1.5x: c = 1; a quarter took 1.25x: still c = 1
    assert fill_factor([_b(15, 16384, 15, 0, 6.0, 4.0), _b(15, 8192, 15, 0, 5.0, 4.0)]) == pytest.approx(1.0)
    assert fill_factor([]) == 0.0
    # a batched circuit that grew to another logrows says nothing about one logrows: left out
    assert fill_factor([_b(16, 60000, 15, 0, 20.0, 4.0)]) == 0.0
    # faster than one row (noise): never a negative factor
    assert fill_factor([_b(15, 16384, 15, 0, 3.0, 4.0)]) == 0.0


def test_fill_rows_scales_proof_job_and_per_inference_together() -> None:
    out = {"logrows": 15, "num_rows": 2**14 + 100, "batch": 16, "prove_s": 4.0, "job_s": 5.0}
    fill_rows(out, 100, [_b(15, 16384, 15, 0, 6.0, 4.0)])
    assert out["fill"] == pytest.approx(1.5)
    assert (out["prove_s"], out["job_s"]) == pytest.approx((6.0, 7.0))  # the proof's extra time, once
    assert out["per_inference_s"] == pytest.approx(6.0 / 16) and out["job_per_inference_s"] == pytest.approx(7 / 16)


def test_recorded_batched_error_is_the_leave_one_out_error_of_the_recorded_runs() -> None:
    meta = scaling()
    runs, batched = meta["runs"], meta["batched"]
    assert len(batched) >= 3
    errors = []
    for i, b in enumerate(batched):
        others = batched[:i] + batched[i + 1:]
        out = {"logrows": b["logrows"], "num_rows": b["num_rows"], "batch": b["batch"],
               "prove_s": fit(runs, "prove_s", b["logrows"], b.get("cores", 2)), "job_s": 0.0}
        errors.append(fill_rows(out, b["single_num_rows"], others)["prove_s"] / b["prove_s"] - 1)
    assert max(map(abs, errors)) == pytest.approx(meta["batched_error"], abs=0.005)
    assert meta["batched_error"] <= 0.30  # issue 17's target, on the recorded run
