"""The gateway pages of the Hugging Face plugin (installed through the ``ciro.gateway`` entry point):

- ``GET /deploy?repo=ORG/NAME[&revision=REV]``: the model, its task and size, the verification choices with what
  each proves (and, for zk, a pre-flight estimate on request), and a Deploy button. The page reads the Hub's listing
  and the model's small files (config, tokenizer); the weights are downloaded by the deploy, not by the page.
- ``GET /deploy/{name}``: a deployed model with a live test form: text or an image in, the prediction and its
  evidence out.
- ``GET /badge.svg``: the "Deploy on Ciro" badge that ``ciro hf badge`` links to this page.
- ``POST /webhooks/huggingface``: Hugging Face's webhook for repo updates; with the right ``X-Webhook-Secret``, a
  deployed repo is redeployed at the pushed revision (downloaded from the Hub unless HF_HUB_OFFLINE=1) and switched
  over once ready.

Server-rendered HTML with native forms: it works without JavaScript and with a screen reader.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import logging
import time
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ciro import (
    AuthError,
    CiroClient,
    CiroError,
    Config,
    DeploymentNotFoundError,
    JobResult,
    ModelNotFoundError,
    VerificationLevel,
)
from ciro.auth import csrf_token, ensure_local_token

__all__ = ["install"]

log = logging.getLogger("ciro.hf")
LEVELS = ("receipt", "quorum", "zk", "none")
_STYLE = """
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#1a1a1a}
h1{font-size:1.6rem} table{border-collapse:collapse} th,td{text-align:left;padding:.2rem .8rem .2rem 0}
fieldset{border:1px solid #bbb;border-radius:.4rem;margin:1rem 0} .choice{margin:.4rem 0}
.hint{color:#555;font-size:.92rem} .error{color:#b00020;border:1px solid #b00020;padding:.6rem;border-radius:.4rem}
button{font-size:1rem;padding:.5rem 1.2rem;border-radius:.4rem;border:1px solid #1d4ed8;background:#1d4ed8;color:#fff}
textarea{width:100%;font-size:1rem} code{background:#f3f3f3;padding:0 .2rem}
.result{border:1px solid #2a7;border-radius:.4rem;padding:.6rem;margin-top:1rem}
"""
BADGE = """<svg xmlns="http://www.w3.org/2000/svg" width="124" height="20" role="img" aria-label="Deploy on Ciro">
<title>Deploy on Ciro</title><rect width="76" height="20" fill="#555"/><rect x="76" width="48" height="20"
fill="#1d4ed8"/><g fill="#fff" font-family="Verdana,sans-serif" font-size="11"><text x="6" y="14">Deploy on</text>
<text x="84" y="14">Ciro</text></g></svg>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
                        f"content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
                        f"<style>{_STYLE}</style></head><body><main>{body}</main></body></html>", status_code=status)


def _error(title: str, message: str, status: int) -> HTMLResponse:
    return _page(title, f"<h1>{html.escape(title)}</h1><p class='error' role='alert'>{html.escape(message)}</p>",
                 status)


class _State:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._client: CiroClient | None = None
        #: The latest webhook deliveries and what came of them (newest last).
        self.events: list[dict[str, Any]] = []

    @property
    def client(self) -> CiroClient:
        """A client of this very gateway (loopback: unsigned requests are accepted)."""
        if self._client is None:
            self._client = CiroClient(self.cfg.local_url, config=self.cfg)
        return self._client


def install(app: FastAPI, cfg: Config) -> None:
    import importlib.util

    if importlib.util.find_spec("python_multipart") is None:  # the pages' forms need it (the `hf` extra)
        raise ImportError("python-multipart is not installed")
    state = _State(cfg)
    # The forms carry an anti-forgery token; the gateway also refuses unsigned POSTs that name another site.
    form_token = csrf_token(ensure_local_token(cfg.home), "hf-forms")
    csrf_field = f"<input type='hidden' name='csrf' value='{form_token}'>"

    def forged(token: str | None) -> HTMLResponse | None:
        if token is not None and hmac.compare_digest(token.encode(), form_token.encode()):
            return None
        return _error("Request refused", "This form was not sent from this gateway's own page (its anti-forgery "
                      "token is missing or wrong). Reload the page and submit it again.", 403)

    @app.get("/badge.svg", include_in_schema=False)
    async def badge() -> Response:
        return Response(BADGE, media_type="image/svg+xml")

    @app.get("/deploy", response_class=HTMLResponse, tags=["hugging face"], responses=_PAGE_ERRORS)
    async def deploy_page(request: Request, repo: str = "", revision: str | None = None) -> HTMLResponse:
        """The Deploy-on-Ciro page of a Hugging Face model."""
        if not repo:
            return _error("Deploy on Ciro", "Name the model: /deploy?repo=ORG/NAME (the badge link does).", 400)
        from .resolve import describe

        try:
            model = await asyncio.to_thread(describe, repo, revision, folders=_operator(request))
        except CiroError as exc:
            status = 404 if isinstance(exc, ModelNotFoundError) else 403 if isinstance(exc, AuthError) else 422
            return _error(f"Cannot deploy {repo}", exc.message, status)
        labels = list((model.config.get("id2label") or {}).values())
        source = {"hub": "on the Hub: downloaded when deployed", "cache": "in this gateway's Hugging Face cache",
                  "folder": "a local folder"}[model.source]
        choices = "".join(
            f"<div class='choice'><input type='radio' id='v-{lv}' name='verification' value='{lv}'"
            f"{' checked' if lv == 'receipt' else ''}><label for='v-{lv}'><b>{lv}</b>: proves "
            f"{html.escape(VerificationLevel.parse(lv).proves)}</label></div>" for lv in LEVELS)
        rev = f"<input type='hidden' name='revision' value='{html.escape(revision)}'>" if revision else ""
        label_row = (f"<tr><th>labels</th><td>{html.escape(', '.join(map(str, labels[:12])))}"
                     f"{' ...' if len(labels) > 12 else ''}</td></tr>") if labels else ""
        body = f"""<h1>Deploy <code>{html.escape(model.repo_id)}</code> on Ciro</h1>
<table aria-label="model"><tr><th>model</th><td>{html.escape(model.repo_id)}</td></tr>
<tr><th>revision</th><td><code>{html.escape(model.sha)}</code> (<span id="source">{source}</span>)</td></tr>
<tr><th>task</th><td id="task">{html.escape(model.task)}</td></tr>
<tr><th>size</th><td>{model.size / 1e6:.1f} MB</td></tr>{label_row}</table>
<form method="post" action="/deploy">{csrf_field}
<input type="hidden" name="repo" value="{html.escape(repo)}">{rev}
<fieldset><legend>Verification: the evidence every result carries</legend>{choices}
<p class="hint">zk runs an EZKL set-up for the model; its cost is estimated on this machine first:
<a href="/deploy/estimate?repo={quote(repo)}{'&revision=' + quote(revision) if revision else ''}">estimate the zk
cost</a>. Transformer models are usually far too large for a zk circuit here.</p></fieldset>
<button type="submit">Deploy</button></form>"""
        return _page(f"Deploy {model.repo_id} on Ciro", body)

    @app.get("/deploy/estimate", response_class=HTMLResponse, tags=["hugging face"], responses=_PAGE_ERRORS)
    async def estimate_page(request: Request, repo: str, revision: str | None = None) -> HTMLResponse:
        """zk pre-flight: circuit size and predicted set-up/prove time and memory on this machine. It needs the
        weights: a model not in the gateway's cache is downloaded for the operator only (anyone else deploys it
        first)."""
        from ciro.estimate import estimate

        from .deploy import exported
        from .resolve import resolve

        try:
            operator = _operator(request)
            resolved = await asyncio.to_thread(resolve, repo, revision, folders=operator, download=operator)
            onnx, _, task = await asyncio.to_thread(exported, cfg, resolved, None)
            est = await asyncio.to_thread(estimate, onnx)
        except CiroError as exc:
            return _error(f"zk estimate for {repo}", exc.message, 422)
        except Exception as exc:  # EZKL refuses many transformer graphs: say so rather than fail
            return _error(f"zk estimate for {repo}", f"EZKL cannot turn this model into a circuit: "
                          f"{str(exc).splitlines()[0][:300]}. Deploy it with receipt or quorum.", 422)
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in est.items() if not isinstance(v, dict | list))
        return _page(f"zk estimate for {repo}", f"<h1>zk estimate for <code>{html.escape(repo)}</code> ({task})</h1>"
                     f"<table aria-label='estimate'>{rows}</table><p><a href='/deploy?repo={quote(repo)}'>back</a></p>")

    @app.post("/deploy", tags=["hugging face"], response_class=HTMLResponse,
              responses={**_PAGE_ERRORS, 303: {"description": "deployed: see its page"}})
    async def deploy_action(request: Request, repo: str = Form(...), verification: str = Form("receipt"),
                            revision: str | None = Form(None), csrf: str | None = Form(None)) -> Response:
        from .deploy import deploy

        if (refused := forged(csrf)) is not None:
            return refused
        try:
            d = await asyncio.to_thread(deploy, repo, None, revision or None, verification, client=state.client,
                                        folders=_operator(request))
        except CiroError as exc:
            return _error(f"Deploying {repo} failed", exc.message, 422)
        return RedirectResponse(f"/deploy/{quote(d.name)}", status_code=303)

    def _try_form(name: str, task: str) -> str:
        if task == "image-classification":
            field = ("<label for='image'>Image</label><br><input type='file' id='image' name='image' "
                     "accept='image/*' required>")
            enctype = " enctype='multipart/form-data'"
        else:
            field = ("<label for='text'>Text</label><br><textarea id='text' name='text' rows='3' required>"
                     "</textarea>")
            enctype = ""
        return (f"<h2>Try it</h2><form method='post' action='/deploy/{quote(name)}/try'{enctype}>{csrf_field}{field}"
                "<p><button type='submit'>Run</button></p></form>")

    def _deployment_page(name: str, result: JobResult | None = None, error: str | None = None) -> HTMLResponse:
        try:
            d = state.client.deployment(name)
        except DeploymentNotFoundError as exc:
            return _error(f"No deployment {name}", exc.message, 404)
        hf = d.metadata.get("hf") or {}
        task = str(hf.get("task", ""))
        out = ""
        if error:
            out = f"<p class='error' role='alert'>{html.escape(error)}</p>"
        elif result is not None:
            ev = [("job", result.job_id), ("verification", result.verification.value),
                  ("proves", result.verification.proves), ("worker", result.worker or "-"),
                  ("output commitment", result.output_commitment or "-")]
            if result.receipt is not None:
                ev.append(("receipt signed by", result.receipt.worker_key))
            if result.proof_hash:
                ev.append(("proof hash", result.proof_hash))
            rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in ev)
            out = (f"<section class='result' aria-live='polite'><h2>Result</h2><pre id='prediction'>"
                   f"{html.escape(json.dumps(result.prediction, indent=1)[:4000])}</pre><h3>Evidence</h3>"
                   f"<table aria-label='evidence'>{rows}</table><p><a href='/v1/jobs/{result.job_id}/result'>full "
                   "evidence (JSON)</a>, verifiable offline with <code>ciro verify</code></p></section>")
        body = (f"<h1>{html.escape(str(hf.get('repo_id', name)))} on Ciro</h1><p id='status' role='status'>Deployed "
                f"as <code>{html.escape(name)}</code>: {html.escape(task)}, verification <b>{d.verification}</b>, "
                f"revision <code>{html.escape(str(hf.get('sha', ''))[:12])}</code>, model "
                f"<code>{d.model_hash[:12]}</code>.</p>" + _try_form(name, task) + out)
        return _page(f"{name} on Ciro", body)

    @app.get("/deploy/{name}", response_class=HTMLResponse, tags=["hugging face"], responses=_PAGE_ERRORS)
    async def deployment_page(name: str) -> HTMLResponse:
        return await asyncio.to_thread(_deployment_page, name)

    @app.post("/deploy/{name}/try", response_class=HTMLResponse, tags=["hugging face"], responses=_PAGE_ERRORS)
    async def try_deployment(name: str, text: Annotated[str | None, Form()] = None,
                             image: Annotated[UploadFile | None, File()] = None,
                             csrf: Annotated[str | None, Form()] = None) -> HTMLResponse:
        if (refused := forged(csrf)) is not None:
            return refused
        raw: Any = text
        if image is not None:
            raw = await image.read()
        if raw is None or raw == "" or raw == b"":
            return await asyncio.to_thread(_deployment_page, name, None, "Enter some text (or choose an image).")
        try:
            result = await asyncio.to_thread(state.client.infer, name, raw)
        except CiroError as exc:
            return await asyncio.to_thread(_deployment_page, name, None, exc.message)
        return await asyncio.to_thread(_deployment_page, name, result)

    @app.post("/webhooks/huggingface", tags=["hugging face"], responses={
        s: {"description": d} for s, d in ((202, "redeploying"), (401, "wrong or missing X-Webhook-Secret"),
                                           (404, "the repo is not deployed here"), (422, "not a webhook payload"))})
    async def hf_webhook(request: Request) -> Response:
        """Hugging Face's webhook (repo updates). Checks ``X-Webhook-Secret``; a push to a deployed repo redeploys
        the pushed revision (downloaded from the Hub, or from this machine's cache with HF_HUB_OFFLINE=1) and
        switches over once it is ready."""
        secret = cfg.webhook_secret
        given = request.headers.get("x-webhook-secret", "")
        if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
            reason = "this gateway has no webhook_secret set" if not secret else "wrong X-Webhook-Secret"
            return _json({"error": {"code": "unauthenticated", "message": f"Webhook refused: {reason}. Set the "
                                    "same secret in the Hugging Face webhook and CIRO_WEBHOOK_SECRET.",
                                    "detail": {"reason": "bad_secret"}}}, 401)
        try:
            payload = json.loads(await request.body())
            event, repo = payload["event"], payload["repo"]
            scope, action, repo_id = str(event["scope"]), str(event["action"]), str(repo["name"])
        except (ValueError, KeyError, TypeError) as exc:
            return _json({"error": {"code": "invalid_input", "message": f"Not a Hugging Face webhook payload "
                                    f"({exc}): expected event.scope, event.action and repo.name.",
                                    "detail": {}}}, 422)
        if repo.get("type", "model") != "model" or scope != "repo.content" or action not in ("update", "create"):
            return _json({"status": "ignored", "reason": f"{scope}/{action} on a {repo.get('type')} repo"})
        from .deploy import find_deployment

        current = await asyncio.to_thread(find_deployment, state.client, repo_id)
        if current is None:
            return _json({"error": {"code": "deployment_not_found", "message": f"{repo_id} is not deployed on this "
                                    "gateway; deploy it first (ciro hf deploy).", "detail": {}}}, 404)
        sha = repo.get("headSha") or None
        record = {"repo_id": repo_id, "sha": sha, "deployment": current.name, "received_at": time.time(),
                  "state": "redeploying"}
        state.events = [*state.events[-49:], record]
        asyncio.get_running_loop().create_task(_redeploy(current.name, repo_id, sha, current, record))
        return _json({"status": "redeploying", "deployment": current.name, "repo_id": repo_id, "sha": sha}, 202)

    async def _redeploy(name: str, repo_id: str, sha: str | None, current: Any, record: dict[str, Any]) -> None:
        from .deploy import deploy

        hf = current.metadata.get("hf") or {}
        try:
            d = await asyncio.to_thread(deploy, repo_id, hf.get("task"), sha, current.verification,
                                        client=state.client, name=name)
            record.update(state="done", model_hash=d.model_hash, reused=d.reused)
        except Exception as exc:  # recorded for GET /webhooks/huggingface; the old revision keeps serving
            log.warning("redeploying %s at %s failed: %s", repo_id, sha, exc)
            record.update(state="failed", error=getattr(exc, "message", str(exc))[:500])

    @app.get("/webhooks/huggingface", tags=["hugging face"])
    async def webhook_events() -> Response:
        """The latest webhook deliveries and what came of them (redeploying, done, failed)."""
        return _json(state.events)


def _operator(request: Request) -> bool:
    """Whether the gateway's auth counts the caller as its operator (who may name folders on this machine)."""
    return bool(getattr(request.state, "operator", False))


_HTML = {"text/html": {"schema": {"type": "string"}}}
#: The pages answer errors as HTML pages, not JSON.
_PAGE_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": d, "content": _HTML} for s, d in (
        (400, "the request names no model"),
        (403, "the form's anti-forgery token is wrong, or the Hub refused a gated or private repo"),
        (404, "no such model or deployment"), (422, "the model cannot be deployed, or a field is invalid"))}
for _status in (400, 422):  # malformed forms and fields are refused by FastAPI itself, as JSON
    _PAGE_ERRORS[_status]["content"] = {**_HTML, "application/json": {}}


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj), status_code=status, media_type="application/json")
