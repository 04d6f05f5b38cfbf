"""The gateway's dashboard: live data at /v1/dashboard and the page at /dashboard, in Debian's Chromium."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
from conftest import Cluster, browser_page

from ciro import CiroClient, ModelInfo


def test_dashboard_data_and_page_show_both_workers_recent_jobs_and_the_chart(cluster: Cluster, client: CiroClient,
                                                                              mlp_path: Path) -> None:
    model: ModelInfo = client.deploy(mlp_path)
    results = client.infer_batch(model.hash, np.ones((40, 16), np.float32))
    data = httpx.get(f"{cluster.url}/v1/dashboard", timeout=30).json()
    workers = {w["id"]: w for w in data["workers"]}
    assert len(workers) == 2 and {w["provider"] for w in workers.values()} == {"provider-a", "provider-b"}
    assert sum(w["jobs_last_hour"] for w in workers.values()) >= 40
    assert all(0.0 <= w["utilisation"] <= 1.0 for w in workers.values())
    assert data["eta"] is not None and 0.0 < data["eta"] <= 1.0  # somebody worked in the last hour
    assert data["security"] is None and not data["settlement"]  # this gateway settles nothing
    assert sum(data["jobs_per_hour"]) >= 40 and data["jobs_per_hour"][-1] >= 40  # the current hour is last
    assert {j["id"] for j in data["recent_jobs"]} & {r.job_id for r in results}

    from playwright.sync_api import expect

    with browser_page() as page:
        page.goto(f"{cluster.url}/dashboard")
        rows = page.get_by_role("table", name="workers").locator("tbody tr")
        expect(rows).to_have_count(2)
        expect(page.get_by_role("table", name="workers")).to_contain_text("provider-a")
        expect(page.get_by_role("table", name="workers")).to_contain_text("provider-b")
        expect(page.get_by_role("img", name="jobs per hour", exact=False)).to_be_visible()
        expect(page.locator("#eta")).not_to_have_text("n/a")
        expect(page.locator("#security")).to_contain_text("settles no payments")
        expect(page.get_by_role("table", name="recent jobs").locator("tbody tr").first).to_be_visible()
