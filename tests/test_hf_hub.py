"""`ciro hf deploy ORG/NAME` downloads from the Hub: a fake Hub on localhost (tests/hub_server.py) serves the small
test models, HF_ENDPOINT points the CLI and a gateway on the session's Ray cluster at it. Downloads only what the
export reads, pins the commit sha, redeploys a pushed revision from the webhook by downloading it; HF_HUB_OFFLINE=1
reads only the cache; gated, missing and unreachable repos are refused with what to do."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CIRO, Cluster, free_port, with_tests_on_path
from hf_models import TEXTS
from hub_server import FakeHub

from ciro import CiroClient, DeploymentNotFoundError, JobStatus

pytestmark = pytest.mark.timeout(600)
TOKEN = "hf_fake_token_for_tests"
SECRET = "hub-webhook-secret"
#: Files a model repo often holds that the export never reads: none of them may be downloaded.
DECOYS = {"pytorch_model.bin": b"\0" * 4096, "tf_model.h5": b"\1" * 4096, "README.md": b"# tiny\n",
          "onnx/model.onnx": b"\2" * 1024, "checkpoint-10/model.safetensors": b"\3" * 2048}
LABELS = {"NEG", "NEU", "POS"}


@dataclass
class Hub:
    fake: FakeHub
    gw: Cluster
    cache: Path
    client: CiroClient
    folder: Path  # the text-classification model the fake Hub serves
    sha: str  # org/tiny-cls's first commit
    gated_sha: str  # org/gated-cls's commit

    def ciro(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CIRO, *args], env={**self.gw.env, **env}, capture_output=True, text=True, timeout=300)


def _repo_files(folder: Path) -> dict[str, bytes]:
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    return {**files, **DECOYS}


@pytest.fixture(scope="module")
def hub(cluster: Cluster, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("hf-hub")
    folder = models["text-classification"]
    with FakeHub(token=TOKEN) as fake:
        sha = fake.push("org/tiny-cls", _repo_files(folder))
        gated_sha = fake.push("org/gated-cls", _repo_files(folder), gated=True)
        port = free_port()
        env = {**cluster.env, "CIRO_HOME": str(root / "home"), "CIRO_PORT": str(port), "CIRO_WORKER_NUM_CPUS": "0.25",
               "CIRO_SETTLEMENT": "off", "CIRO_WEBHOOK_SECRET": SECRET, "CIRO_MAX_MODEL_BYTES": str(256 << 20),
               "CIRO_MAX_PAYLOAD_BYTES": str(64 << 20), "HF_ENDPOINT": fake.url, "HF_HUB_CACHE": str(root / "hub"),
               "HF_HOME": str(root / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            env.pop(var, None)
        gw = Cluster(root / "home", port, cluster.ray_address, f"http://127.0.0.1:{port}", with_tests_on_path(env))
        gw.ciro("up", "--ray-address", cluster.ray_address, "--workers", "1")
        client = CiroClient(gw.url, config=gw.config)
        try:
            yield Hub(fake, gw, root / "hub", client, folder, sha, gated_sha)
        finally:
            client.close()
            gw.ciro("down", check=False)


def _snapshot(hub: Hub, repo_id: str, sha: str) -> Path:
    return hub.cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / sha


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_deploy_downloads_only_what_the_export_reads_and_pins_the_commit(hub: Hub) -> None:
    # The Deploy page shows the model from the Hub's listing and its small files: no weights are fetched for it.
    page = httpx.get(f"{hub.gw.url}/deploy", params={"repo": "org/tiny-cls"}, timeout=60)
    assert page.status_code == 200, page.text
    assert hub.sha in page.text and "text-classification" in page.text and "downloaded when deployed" in page.text
    assert not hub.fake.seen("GET", "model.safetensors")

    out = hub.ciro("hf", "deploy", "org/tiny-cls", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    d = json.loads(out.stdout)
    assert (d["name"], d["sha"], d["task"], d["reused"]) == ("hf-org--tiny-cls", hub.sha, "text-classification", False)
    meta = hub.client.deployment(d["name"]).metadata["hf"]
    assert (meta["repo_id"], meta["sha"], meta["source"]) == ("org/tiny-cls", hub.sha, "cache")
    r = hub.client.infer(d["name"], TEXTS[1])
    assert r.status is JobStatus.DONE and r.receipt is not None and {x["label"] for x in r.prediction} == LABELS

    # What huggingface_hub's cache now holds: the files the export reads, from that commit, and the branch's ref.
    snap = _snapshot(hub, "org/tiny-cls", hub.sha)
    assert _files(snap) == _files(hub.folder)
    for name in _files(hub.folder):
        assert (snap / name).read_bytes() == (hub.folder / name).read_bytes()
    assert (snap.parent.parent / "refs" / "main").read_text() == hub.sha
    assert not [s for s in hub.fake.seen() if any(s.path.endswith(decoy) for decoy in DECOYS)]
    assert hub.fake.seen("GET", f"/org/tiny-cls/resolve/{hub.sha}/model.safetensors")
    assert {s.token for s in hub.fake.seen()} == {None}  # no token was configured, none was sent


def test_a_push_webhook_downloads_and_deploys_the_new_revision(hub: Hub) -> None:
    import torch
    from transformers import BertForSequenceClassification

    try:
        before = hub.client.deployment("hf-org--tiny-cls")  # deployed by the first test
    except DeploymentNotFoundError:  # this test alone
        first = hub.ciro("hf", "deploy", "org/tiny-cls", "--json")
        assert first.returncode == 0, first.stderr[-3000:]
        before = hub.client.deployment("hf-org--tiny-cls")
    assert before.metadata["hf"]["sha"] == hub.sha

    new = hub.cache.parent / "v2"  # new weights, pushed to the Hub only: this machine has never seen them
    torch.manual_seed(7)
    old = BertForSequenceClassification.from_pretrained(hub.folder)
    BertForSequenceClassification(old.config).save_pretrained(new)
    for f in hub.folder.iterdir():
        if not (new / f.name).exists():
            shutil.copy(f, new / f.name)
    sha2 = hub.fake.push("org/tiny-cls", _repo_files(new))
    assert sha2 != hub.sha and not _snapshot(hub, "org/tiny-cls", sha2).exists()

    payload = {"event": {"action": "update", "scope": "repo.content"},
               "repo": {"type": "model", "name": "org/tiny-cls", "id": "6516b5ae", "private": False, "headSha": sha2},
               "webhook": {"id": "6516b5b0", "version": 3},
               "updatedRefs": [{"ref": "refs/heads/main", "oldSha": hub.sha, "newSha": sha2}]}
    resp = httpx.post(f"{hub.gw.url}/webhooks/huggingface", json=payload, headers={"x-webhook-secret": SECRET},
                      timeout=30)
    assert resp.status_code == 202, resp.text
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        events = httpx.get(f"{hub.gw.url}/webhooks/huggingface").json()
        if events and events[-1]["state"] != "redeploying":
            break
        time.sleep(0.5)
    assert events and events[-1]["state"] == "done", events[-1:]
    after = hub.client.deployment("hf-org--tiny-cls")
    assert after.metadata["hf"]["sha"] == sha2 and after.model_hash != before.model_hash
    assert after.previous_model_hash == before.model_hash
    assert hub.fake.seen("GET", f"/org/tiny-cls/resolve/{sha2}/model.safetensors")  # downloaded by the gateway
    assert (_snapshot(hub, "org/tiny-cls", sha2) / "model.safetensors").read_bytes() == \
        (new / "model.safetensors").read_bytes()
    assert {x["label"] for x in hub.client.infer(after.name, TEXTS[0]).prediction} == LABELS


def test_offline_and_unreachable_read_only_the_cache(hub: Hub, tmp_path: Path) -> None:
    seen = len(hub.fake.seen())
    cached = tmp_path / "cached"  # a cache holding one snapshot of org/tiny-cls, as huggingface_hub lays it out
    snap = cached / "models--org--tiny-cls" / "snapshots" / hub.sha
    shutil.copytree(hub.folder, snap)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text(hub.sha)
    closed = f"http://127.0.0.1:{free_port()}"
    runs = {  # quick failures, run side by side: each CLI start costs a few seconds here
        "offline-empty": (("org/tiny-cls",), {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")}),
        "offline-cached": (("org/tiny-cls", "--revision", "v9"), {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cached)}),
        "unreachable": (("org/tiny-cls", "--revision", "v9"), {"HF_ENDPOINT": closed, "HF_HUB_CACHE": str(cached)}),
    }
    with ThreadPoolExecutor(len(runs)) as pool:
        done = {k: pool.submit(hub.ciro, "hf", "deploy", *args, **env) for k, (args, env) in runs.items()}
        out = {k: f.result() for k, f in done.items()}

    empty = out["offline-empty"]
    assert empty.returncode == 4, empty.stderr
    assert "'org/tiny-cls' is not in the local Hugging Face cache" in empty.stderr
    assert "HF_HUB_OFFLINE=1 is set" in empty.stderr and "unset HF_HUB_OFFLINE to download it" in empty.stderr
    assert "huggingface-cli download org/tiny-cls" in empty.stderr and "never downloads" not in empty.stderr
    for key in ("offline-cached", "unreachable"):  # the cached revisions are named
        proc = out[key]
        assert proc.returncode == 4, proc.stderr
        assert "Revision 'v9' of 'org/tiny-cls' is not in the local Hugging Face cache" in proc.stderr
        assert hub.sha in proc.stderr and "cached refs: ['main']" in proc.stderr
    assert f"The Hub ({closed}) could not be reached (Connection refused)" in out["unreachable"].stderr
    assert len(hub.fake.seen()) == seen  # offline, nothing was asked of the Hub


def test_a_gated_repo_needs_a_token_and_a_missing_repo_or_revision_is_named(hub: Hub) -> None:
    runs = {
        "no-token": ("org/gated-cls",),
        "wrong-token": ("org/gated-cls", "--token", "hf_not_the_right_one"),
        "missing-repo": ("org/does-not-exist",),
        "missing-revision": ("org/tiny-cls", "--revision", "no-such-branch"),
    }
    with ThreadPoolExecutor(len(runs) + 1) as pool:
        done = {k: pool.submit(hub.ciro, "hf", "deploy", *args) for k, args in runs.items()}
        # HF_TOKEN is sent as well (huggingface_hub's own lookup): the gate lets it through to the missing branch.
        done["hf-token"] = pool.submit(hub.ciro, "hf", "deploy", "org/gated-cls", "--revision", "nope", HF_TOKEN=TOKEN)
        out = {k: f.result() for k, f in done.items()}

    for key, status in (("no-token", "401 because no token was sent"),
                        ("wrong-token", "403 because the token sent may not read it")):
        proc = out[key]
        assert proc.returncode == 1, proc.stderr  # an auth error, not a bad model
        assert f"'org/gated-cls' is a gated model: the Hub ({hub.fake.url}) answered {status}" in proc.stderr
        assert f"Accept its licence on {hub.fake.url}/org/gated-cls" in proc.stderr and "--token" in proc.stderr
    missing = out["missing-repo"]
    assert missing.returncode == 4, missing.stderr
    assert f"'org/does-not-exist' is not a model repo on the Hub ({hub.fake.url})" in missing.stderr
    revision = out["missing-revision"]
    assert revision.returncode == 4, revision.stderr
    assert f"'org/tiny-cls' has no revision 'no-such-branch' on the Hub ({hub.fake.url})" in revision.stderr
    by_env = out["hf-token"]
    assert by_env.returncode == 4 and "'org/gated-cls' has no revision 'nope'" in by_env.stderr, by_env.stderr
    assert not _snapshot(hub, "org/gated-cls", hub.gated_sha).exists()  # nothing of the gated repo was downloaded

    before = len(hub.fake.seen())
    ok = hub.ciro("hf", "deploy", "org/gated-cls", "--token", TOKEN, "--json")
    assert ok.returncode == 0, ok.stderr[-3000:]
    d = json.loads(ok.stdout)
    assert (d["name"], d["sha"]) == ("hf-org--gated-cls", hub.gated_sha)
    assert (_snapshot(hub, "org/gated-cls", hub.gated_sha) / "model.safetensors").is_file()
    downloads = hub.fake.seen()[before:]
    assert downloads and {s.token for s in downloads} == {TOKEN}  # the listing and every file carried the token
