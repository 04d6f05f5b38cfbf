"""The ``ciro`` command line.

Exit codes: 0 success; 1 other Ciro error; 2 usage error; 3 no gateway reachable;
4 bad model or input (nothing was changed); 5 the job failed, was cancelled or timed out; 6 no such job or
deployment. The group, the shared error handling and the exit codes are in ``ciro._cli_base``; the chain and
key commands in ``ciro._cli_chain``; plugins add theirs through the ``ciro.cli`` entry point group.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from . import (
    _cli_chain,  # noqa: F401  (registers devnet, fund, keys)
    local,
)
from ._cli_base import (
    EXIT_ERROR,
    EXIT_INPUT,
    EXIT_JOB,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    _cfg,
    _client,
    cli,
    exit_code,
    handle_errors,
)
from .client import AsyncCiroClient
from .config import Config
from .errors import (
    InputError,
)
from .jobs import JobResult, JobStatus
from .plugins import load_entry_points
from .tensors import decode_json

__all__ = ["EXIT_ERROR", "EXIT_INPUT", "EXIT_JOB", "EXIT_NOT_FOUND", "EXIT_UNAVAILABLE", "EXIT_USAGE", "cli",
           "exit_code", "handle_errors", "main"]


@cli.command()
@click.option("--workers", type=int, help="Worker actors to start (CIRO_NUM_WORKERS).")
@click.option("--ray-address", help="Join this Ray cluster (host:port) instead of starting a local head.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve HTTPS with this PEM certificate (chain) (CIRO_TLS_CERT); needs --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The PEM private key of --tls-cert (CIRO_TLS_KEY).")
@click.option("--devnet-port", type=int, help="Port of this home's local devnet (CIRO_DEVNET_PORT; default 5050).")
@click.option("--network", help="Network profile the gateway settles on (CIRO_NETWORK): local or devnet (the "
              "default: the local devnet), sepolia, mainnet or a [networks.NAME] table of the config file, which "
              "must give rpc_url, token, pool, job_manager and governance.")
@click.pass_context
@handle_errors
def up(ctx: click.Context, workers: int | None, ray_address: str | None, tls_cert: Path | None,
       tls_key: Path | None, devnet_port: int | None, network: str | None) -> None:
    """Start the embedded default: a local Ray head (or join --ray-address), the local devnet and the gateway.

    A devnet of this home that is already running (`ciro devnet`) is used as it is, and `ciro down` leaves it
    running. With --network sepolia (or mainnet, or a profile of the config file) the gateway settles there
    instead, and no devnet starts. If a step fails, what this command had started is stopped again."""
    cfg = _cfg(ctx)
    if ray_address or tls_cert or tls_key or devnet_port or network:
        cfg = Config.load(home=cfg.home, port=cfg.port, ray_address=ray_address, devnet_port=devnet_port,
                          tls_cert=tls_cert and str(tls_cert.resolve()), tls_key=tls_key and str(tls_key.resolve()),
                          network=network)
    url = local.ensure_running(cfg, progress=True, num_workers=workers)
    click.echo(f"gateway: {url}  (API docs: {url}/docs, metrics: {url}/metrics)")
    if url.startswith("https://") and not _cfg(ctx).url.startswith("https://"):
        click.echo(f"note: other commands and the SDK look for {_cfg(ctx).url}; put tls_cert and tls_key (or "
                   f"gateway_url = \"{url}\") in config.toml or CIRO_* variables, with ca_bundle if a private CA "
                   "signed the certificate.", err=True)


@cli.command()
@click.option("--keep-ray", is_flag=True, help="Stop only the gateway; leave the Ray head running.")
@click.pass_context
@handle_errors
def down(ctx: click.Context, keep_ray: bool) -> None:
    """Stop what `ciro up` started for this home: its gateway, Ray head and devnet, as $CIRO_HOME/run/local.json
    records them (also what a failed or killed `ciro up` left). A recorded pid is signalled only while it still runs
    the command recorded for it.

    A devnet that `ciro up` found running instead of starting one (`ciro devnet`) is left running: stop it with
    Ctrl-C where it runs."""
    cfg = _cfg(ctx)
    stopped = local.stop(cfg, keep_ray=keep_ray)
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    kept = local.running_devnet(cfg)
    if kept:
        click.echo(f"left running: the devnet of `ciro devnet` on {kept.get('url')} (pid {kept['pid']}); stop it "
                   "with Ctrl-C where it runs")


@cli.command()
@click.argument("job_id", required=False)
@click.pass_context
@handle_errors
def status(ctx: click.Context, job_id: str | None) -> None:
    """Gateway health, queue and workers; or the status of JOB_ID."""
    with _client(ctx) as client:
        if job_id:
            _print_job(client.status(job_id))
            return
        h = client.health()
        workers = client.workers()
    click.echo(f"gateway {client.url}: {h['status']} (version {h['version']}, up {h['uptime_s']:.0f}s)")
    click.echo(f"ray: {h.get('ray_address') or 'local'}   queue: {h['queue_depth']} jobs")
    click.echo(f"workers: {len(workers)}")
    for w in workers:
        click.echo(f"  {w['id']:<6} {'alive' if w['alive'] else 'dead ':<6} {w.get('hostname', '?')} "
                   f"cpus={w.get('num_cpus')} gpus={w.get('num_gpus')} jobs={w.get('jobs_done', 0)} "
                   f"providers={','.join(w.get('execution_providers', []))}")


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="A name to refer to the model by (default: the file name).")
@click.option("--zk", is_flag=True, help="Also run the EZKL set-up (proving/verifying keys) for zk jobs.")
@click.option("--zk-inputs", type=click.Choice(["public", "hashed"]), default="public", show_default=True,
              help="zk: the proof shows the quantised inputs, or only a Poseidon hash of them.")
@click.option("--zk-outputs", type=click.Choice(["public", "hashed"]), default="public", show_default=True,
              help="zk: the proof shows the quantised outputs, or only a Poseidon hash of them.")
@click.pass_context
@handle_errors
def deploy(ctx: click.Context, model: Path, name: str | None, zk: bool, zk_inputs: str, zk_outputs: str) -> None:
    """Validate and upload an ONNX model; prints its hash (the model ref)."""
    if zk:
        click.echo("zk: running the EZKL set-up once for this model (settings, circuit, SRS, keys) ...", err=True)
    with _client(ctx) as client:
        info = client.deploy(model, name=name, zk=zk, zk_inputs=zk_inputs, zk_outputs=zk_outputs)
    click.echo(f"deployed {info.name}: {info.hash}")
    if info.zk:
        srs = info.zk["srs"]
        click.echo(f"  zk     ready: logrows {info.zk['logrows']}, vk {info.zk['vk_hash'][:16]}..., "
                   f"{srs['kind']} SRS {srs['name']}, inputs {info.zk['input_visibility']}, outputs "
                   f"{info.zk['output_visibility']}")
        if srs["kind"] == "development":
            click.echo("  zk     WARNING: development SRS: proofs are not sound against whoever made it "
                       "(set CIRO_SRS_DIR to pinned public-ceremony files)")
    for kind, specs in (("input", info.inputs), ("output", info.outputs)):
        for s in specs:
            click.echo(f"  {kind:<6} {s.name}: {s.dtype}{[d if d is not None else '?' for d in s.shape]}")


@cli.command()
@click.pass_context
@handle_errors
def models(ctx: click.Context) -> None:
    """List deployed models."""
    with _client(ctx) as client:
        for m in client.models():
            click.echo(f"{m.hash}  {m.name:<24} {m.size:>12,} B  opset {m.opset.get('ai.onnx', '?')}")


def _load_input(path: Path) -> Any:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict) and data and all(isinstance(v, dict) and "dtype" in v for v in data.values()):
                return decode_json(data)
            return data  # a plain (nested) list, or {name: list}: cast to the model's dtypes
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read input file {path}: {exc}.") from exc
    raise InputError(f"Unsupported input file {path.name}: use .json, .npy or .npz.")


def _write_output(path: Path, result: JobResult) -> None:
    outputs = result.outputs or {}
    if path.suffix == ".npz":
        np.savez(path, **outputs)  # type: ignore[arg-type]
    elif path.suffix == ".npy":
        if len(outputs) != 1:
            raise InputError(f"The model has {len(outputs)} outputs; write them to .npz or .json instead.")
        np.save(path, next(iter(outputs.values())))
    else:
        path.write_text(json.dumps(result.to_dict(), indent=1))


def _print_job(r: JobResult) -> None:
    click.echo(json.dumps({k: v for k, v in r.to_dict().items() if v not in (None, {})}, indent=1))


@cli.command()
@click.argument("model")
@click.option("--input", "-i", "input_path", required=True, type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Input file: .json (named tensors or a plain list), .npy or .npz.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the result (.json/.npz/.npy).")
@click.option("--verify", "verification", default=None,
              help="Verification level: receipt (default), none, quorum or zk (model deployed with --zk).")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the result.")
@click.option("--fresh", is_flag=True, help="Run it even if the gateway's result cache holds this job's result.")
@click.option("--prepaid", is_flag=True, help="Pay the gateway's price from your CiroLedger deposit (`ciro deposit`).")
@click.pass_context
@handle_errors
def infer(ctx: click.Context, model: str, input_path: Path, out: Path | None, verification: str | None,
          timeout: float | None, fresh: bool, prepaid: bool) -> None:
    """Run one job of MODEL (hash, hash prefix or name) on an input file and print the result."""
    inputs = _load_input(input_path)
    # job options only when asked (an unset option leaves the gateway's default)
    extra: dict[str, Any] = {k: True for k, on in (("fresh", fresh), ("prepaid", prepaid)) if on}
    with _client(ctx) as client:
        result = client.infer(model, inputs, verification=verification, timeout=timeout, **extra)
    if out:
        _write_output(out, result)
        click.echo(f"job {result.job_id}: done, output written to {out}")
    else:
        _print_job(result)


@cli.command()
@click.option("--status", "status_", type=click.Choice([s.value for s in JobStatus]))
@click.option("--limit", type=int, default=20, show_default=True)
@click.pass_context
@handle_errors
def jobs(ctx: click.Context, status_: str | None, limit: int) -> None:
    """List recent jobs."""
    with _client(ctx) as client:
        rows = client.jobs(status=status_, limit=limit)
    click.echo(f"{'job':<32}  {'status':<15}  {'model':<12}  {'worker':<6}  {'latency':<10}  payment")
    for r in rows:
        lat = f"{r.latency_s * 1000:.1f} ms" if r.latency_s is not None else "-"
        pay = (r.settlement or "unpaid") + (f" {r.payment / 1e18:g} CIRO" if r.payment is not None else "") + (
            f" tx {r.settlement_tx[:12]}..." if r.settlement_tx else "")
        click.echo(f"{r.job_id:<32}  {r.status.value:<15}  {r.model_hash[:12]:<12}  {r.worker or '-':<6}  "
                   f"{lat:<10}  {pay}")


@cli.command()
@click.option("--worker-key", help="Only this worker's faults (0x... public key).")
@click.option("--limit", type=int, default=20, show_default=True)
@click.pass_context
@handle_errors
def faults(ctx: click.Context, worker_key: str | None, limit: int) -> None:
    """List evidence recorded against workers (quorum dissent, outputs a zk proof contradicts) and its slashing."""
    with _client(ctx) as client:
        rows = client.faults(worker_key=worker_key, limit=limit)
    click.echo(f"{'job':<32}  {'worker':<8}  {'kind':<16}  {'reason':<20}  slash")
    for f in rows:
        reason = f["detail"].get("reason") or "-"
        slash = (f.get("slash") or "not filed") + (f" tx {f['slash_tx'][:12]}..." if f.get("slash_tx") else "")
        click.echo(f"{f['job_id']:<32}  {f['worker'] or '-'!s:<8}  {f['kind']:<16}  {reason:<20}  {slash}")


@cli.command()
@click.option("--jobs", "n_jobs", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=32, show_default=True)
@click.pass_context
@handle_errors
def demo(ctx: click.Context, n_jobs: int, concurrency: int) -> None:
    """Train a digits classifier, deploy it, run N jobs, check every output against onnxruntime."""
    from tqdm import tqdm

    from .demo import build_digits_model, run_demo, run_paid_demo

    cfg = _cfg(ctx)
    url = cfg.gateway_url or local.ensure_running(cfg, progress=True)
    model_path = build_digits_model(cfg.paths.demo / "digits.onnx")
    click.echo(f"demo: model {model_path} -> gateway {url}, {n_jobs} jobs at concurrency {concurrency}")

    async def go() -> Any:
        client = AsyncCiroClient(url, config=cfg)
        try:
            with tqdm(total=n_jobs, unit="job", file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
                report = await run_demo(client, model_path, jobs=n_jobs, concurrency=concurrency,
                                        on_done=lambda: bar.update(1))
            click.echo(report.table())
            paid = await run_paid_demo(client, model_path)
            return report, paid
        finally:
            await client.aclose()

    report, paid = asyncio.run(go())
    if paid is not None:
        click.echo("demo: paid jobs: prepaid from one deposit in CiroLedger on the local devnet, run, and settled per "
                   "worker batch" if paid.how == "prepaid" else
                   "demo: paid jobs: each escrowed on the local devnet, run, verified and settled in a batch")
        click.echo(paid.table())
    click.echo(f"demo: {report.matched}/{report.jobs} outputs match onnxruntime")
    if report.matched != report.jobs or (paid is not None and paid.paid != paid.jobs):
        sys.exit(EXIT_JOB)


@cli.command("verify")
@click.argument("result", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The ONNX file: check the result's model hash against it (zk: and rebuild the verifying key).")
@click.option("--input", "-i", "input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The input file the job ran on: check the input commitment against it.")
@click.option("--input-name", help="The model input's name, when --input is a bare array (.npy or a plain list).")
@click.option("--worker-key", "worker_keys", multiple=True, help="A trusted worker public key (repeatable).")
@click.option("--srs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="SRS file for a zk proof (default: found by hash in CIRO_SRS_DIR or $CIRO_HOME/srs).")
@click.option("--vk", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="zk: a verifying key file you trust (e.g. the model owner's registered key), used instead of "
              "rebuilding one from --model (still needed: it checks the proof's settings).")
@click.pass_context
@handle_errors
def verify_cmd(ctx: click.Context, result: Path, model: Path | None, input_path: Path | None,
               input_name: str | None, worker_keys: tuple[str, ...], srs: Path | None, vk: Path | None) -> None:
    """Check a saved result offline (no network). Exit 0 only when every check passes.

    A zk proof is checked against a verifying key you chose: rebuilt from --model (cached in
    $CIRO_HOME/vk-cache) or given with --vk; never the one the prover shipped."""
    from .verify import verify

    inputs = None
    if input_path is not None:
        raw = _load_input(input_path)
        if isinstance(raw, dict):
            inputs = {k: np.asarray(v) for k, v in raw.items()}
        elif input_name:
            inputs = {input_name: np.asarray(raw)}
        else:
            raise click.UsageError("--input holds a bare array: name the model input with --input-name NAME, "
                                   "or save the input as .npz (np.savez(f, NAME=x)).")
    if vk is not None and model is None:
        raise click.UsageError("--vk needs --model MODEL.onnx too: the proof's settings (how its public values "
                               "decode) are checked against the model.")
    report = verify(result, inputs=inputs, model=model, trusted_workers=list(worker_keys) or None, srs=srs,
                    vk=vk, config=_cfg(ctx))
    click.echo(report.text())
    if not report.valid:
        sys.exit(EXIT_ERROR)


@cli.command("estimate")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch", "batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="the circuit over B rows that proves B jobs in one proof (zk_batch_buckets)")
@handle_errors
def estimate_cmd(model: Path, batch: int) -> None:
    """Predict the cost of a zk set-up and proof of MODEL on this machine, before paying for either."""
    from .estimate import estimate

    e = estimate(model, batch=batch)
    gib = 2**30
    prove = [("prove (per job)", f"~{e['prove_s']:.1f} s on {e['cores']} cores")] if batch == 1 else [
        ("prove (batch)", f"~{e['prove_s']:.1f} s on {e['cores']} cores, one proof for {batch} jobs"),
        ("per inference", f"~{e['per_inference_s']:.2f} s")]
    rows = [
        ("circuit", f"2^{e['logrows']} rows (logrows {e['logrows']}; {e['num_rows']:,} used)"
         + (f", {batch} rows of inputs" if batch > 1 else "")),
        ("set-up (once)", f"~{e['setup_s']:.1f} s"),
        *prove,
        ("peak memory", f"~{e['peak_rss_bytes'] / gib:.2f} GiB"),
        ("proving key", f"~{e['pk_bytes'] / 2**20:,.0f} MiB"),
        ("verifying key", f"~{e['vk_bytes'] / 2**10:,.0f} KiB"),
        ("basis", e["basis"]),
    ]
    for k, v in rows:
        click.echo(f"{k:<16} {v}")
    click.echo(e["message"])


#: Entry point group of plugin commands (click commands or groups), e.g. ``ciro hf``.
CLI_PLUGINS = "ciro.cli"


def _add_plugins() -> None:
    def warn(message: str) -> None:  # a broken optional plugin warns; the core CLI still works
        click.echo(f"warning: {message}", err=True)

    for name, command in load_entry_points(CLI_PLUGINS, warn=warn, skip=lambda name: name in cli.commands):
        cli.add_command(command, name)


def main() -> None:
    _add_plugins()
    cli(prog_name="ciro")


if __name__ == "__main__":
    main()
