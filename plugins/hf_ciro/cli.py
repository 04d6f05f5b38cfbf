"""``ciro hf``: deploy a Hugging Face model, print a "Deploy on Ciro" badge for a model card."""

from __future__ import annotations

import json
import sys
from urllib.parse import quote, urlencode

import click

from ciro import CiroClient, CiroError, Config
from ciro.cli import exit_code

__all__ = ["badge_snippet", "deploy_url", "hf"]


def _fail(exc: CiroError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    sys.exit(exit_code(exc))  # the core CLI's exit codes (ciro.cli)


@click.group()
def hf() -> None:
    """Hugging Face: deploy a Hub model (downloaded unless HF_HUB_OFFLINE=1) or a folder; the Deploy-on-Ciro
    badge."""


@hf.command("deploy")
@click.argument("repo")
@click.option("--task", help="text-classification, feature-extraction, token-classification or "
                             "image-classification (default: from the model's config).")
@click.option("--revision", help="A branch, tag or commit sha of the Hub repo (default: main).")
@click.option("--token", help="A Hugging Face token for a gated or private repo (default: HF_TOKEN or the "
                              "`huggingface-cli login` token; HF_TOKEN keeps it out of the process list).")
@click.option("--verify", "verification", default="receipt", show_default=True,
              type=click.Choice(["none", "receipt", "quorum", "zk"]))
@click.option("--name", help="Deployment name (default: hf-ORG--NAME for a repo, hf-FOLDER-HASH for a folder).")
@click.option("--replace", is_flag=True, help="Let this model take over a deployment name that serves another model.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def deploy_cmd(ctx: click.Context, repo: str, task: str | None, revision: str | None, token: str | None,
               verification: str, name: str | None, replace: bool, as_json: bool) -> None:
    """Deploy REPO: a Hub repo id (org/name), downloaded into the Hugging Face cache (only the files the export
    needs) when the Hub is reachable, or taken from that cache with HF_HUB_OFFLINE=1; or a local model folder. A new
    revision of the same model updates its deployment; a name that serves another model is refused unless
    --replace."""
    from .deploy import deploy, summary

    cfg: Config = ctx.obj if isinstance(ctx.obj, Config) else Config.load()
    try:
        with CiroClient(config=cfg) as client:
            d = deploy(repo, task=task, revision=revision, verify=verification, client=client, name=name,
                       replace=replace, token=token)
    except CiroError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(summary(d)))
        return
    what = "already deployed (reused)" if d.reused else "deployed"
    click.echo(f"{d.repo_id}@{d.sha[:12]} ({d.task}) {what} as {d.name}: model {d.model_hash}")
    click.echo(f'try it: ciro infer is for tensors; from Python: CiroClient().infer("{d.name}", "some text")'
               if d.task != "image-classification" else
               f'try it from Python: CiroClient().infer("{d.name}", PIL.Image.open("cat.png"))')


def deploy_url(gateway_url: str, repo_id: str, revision: str | None = None) -> str:
    """The gateway's Deploy page for this repo."""
    query = urlencode({"repo": repo_id, **({"revision": revision} if revision else {})}, quote_via=quote)
    return f"{gateway_url.rstrip('/')}/deploy?{query}"


def badge_snippet(gateway_url: str, repo_id: str, revision: str | None = None) -> str:
    """Markdown for a model card: the gateway's badge, linking to its Deploy page for this repo."""
    return f"[![Deploy on Ciro]({gateway_url.rstrip('/')}/badge.svg)]({deploy_url(gateway_url, repo_id, revision)})"


@hf.command("badge")
@click.argument("repo_id")
@click.option("--revision", help="Pin the badge to a revision.")
@click.option("--gateway", help="The gateway URL the badge points to (default: the configured one).")
@click.pass_context
def badge_cmd(ctx: click.Context, repo_id: str, revision: str | None, gateway: str | None) -> None:
    """Print a "Deploy on Ciro" badge snippet for REPO_ID's model card (Markdown, then HTML)."""
    cfg: Config = ctx.obj if isinstance(ctx.obj, Config) else Config.load()
    url = gateway or cfg.url
    click.echo(badge_snippet(url, repo_id, revision))
    click.echo(f'<a href="{deploy_url(url, repo_id, revision)}"><img src="{url.rstrip("/")}/badge.svg" '
               'alt="Deploy on Ciro"></a>')
