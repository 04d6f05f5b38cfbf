"""The ``ciro`` command group and what every command shares: the config from the global options, a client, and
CiroErrors turned into a message and an exit code (``EXIT_*``; plugins' commands use ``handle_errors`` too)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .client import CiroClient
from .config import Config
from .errors import (
    CiroError,
    DeploymentNotFoundError,
    GatewayUnavailableError,
    InputError,
    JobError,
    JobNotFoundError,
    ModelError,
)

__all__ = ["EXIT_ERROR", "EXIT_INPUT", "EXIT_JOB", "EXIT_NOT_FOUND", "EXIT_UNAVAILABLE", "EXIT_USAGE", "cli",
           "handle_errors"]

EXIT_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INPUT, EXIT_JOB, EXIT_NOT_FOUND = 1, 2, 3, 4, 5, 6
F = TypeVar("F", bound=Callable[..., Any])


def exit_code(exc: CiroError) -> int:
    if isinstance(exc, GatewayUnavailableError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, JobNotFoundError | DeploymentNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, InputError | ModelError):
        return EXIT_INPUT
    if isinstance(exc, JobError):
        return EXIT_JOB
    return EXIT_ERROR


def handle_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CiroError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exit_code(exc))

    return wrapper  # type: ignore[return-value]


def _cfg(ctx: click.Context) -> Config:
    cfg: Config = ctx.obj
    return cfg


def _client(ctx: click.Context) -> CiroClient:
    return CiroClient(config=_cfg(ctx))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), help="CIRO_HOME (default ~/.ciro).")
@click.option("--url", "gateway_url", help="Gateway URL (CIRO_GATEWAY_URL); default: the local one.")
@click.option("--port", type=int, help="Port of the local gateway (CIRO_PORT).")
@click.version_option(package_name="ciro-network")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, gateway_url: str | None, port: int | None) -> None:
    """Ciro: verifiable inference on a Ray cluster. Start with `ciro up`, then `ciro demo`.

    \b
    Exit codes: 0 ok, 1 error, 2 usage, 3 no gateway, 4 bad model/input, 5 job failed/cancelled/timed out,
    6 no such job/deployment.
    """
    try:
        ctx.obj = Config.load(home=home, gateway_url=gateway_url, port=port)
    except CiroError as exc:
        raise click.UsageError(str(exc)) from exc


