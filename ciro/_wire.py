"""What the SDK checks before a request and after an answer: names and ids the gateway could hold, inputs as
named arrays of the model's dtypes, and a final job turned into its error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .deployments import valid_deployment_name
from .errors import (
    DeploymentNotFoundError,
    InputError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    error_class,
)
from .jobs import JobResult, JobStatus, ModelInfo


def _dep(name: str) -> str:
    """A deployment name as the gateway allows them; anything else (a '/', a '?') cannot name one."""
    if not valid_deployment_name(name):
        raise DeploymentNotFoundError(f"No deployment {name!r}: names are letters, digits, '.', '_' and '-' (at most "
                                      "128). List deployments with client.deployments().", detail={"name": str(name)})
    return name


def _job_id(job_id: str) -> str:
    """A job id as the gateway makes them (32 hex characters); anything else cannot name a job."""
    text = str(job_id).strip().lower()
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
        raise JobNotFoundError(f"No job {job_id!r}: job ids are 32 hex characters. List jobs with `ciro jobs`.",
                               detail={"job_id": str(job_id)})
    return text


def _checked(result: JobResult) -> JobResult:
    if result.status is JobStatus.FAILED:
        err = result.error or {}
        cls = error_class(str(err.get("code")))
        if not issubclass(cls, JobFailedError):  # e.g. worker_error: the job failed because of it
            cls = JobFailedError
        raise cls(f"Job {result.job_id} failed: {err.get('message', 'no reason given')}",
                  detail={"job_id": result.job_id, "code": err.get("code"), **(err.get("detail") or {})})
    if result.status is JobStatus.CANCELLED:
        raise JobCancelledError(f"Job {result.job_id} was cancelled.", detail={"job_id": result.job_id})
    return result


def _normalize(info: ModelInfo, inputs: Any) -> dict[str, np.ndarray]:
    """Named arrays for the model: a dict by input name, or one array/list/DataFrame for a single-input model.

    Python lists and DataFrames are cast to the model's dtype; numpy arrays keep theirs (the gateway
    rejects a mismatch rather than silently casting).
    """
    specs = {s.name: s for s in info.inputs}
    if isinstance(inputs, Mapping):
        named = dict(inputs)
    else:
        if len(specs) != 1:
            raise InputError(
                f"Model {info.hash[:12]} has inputs {sorted(specs)}: pass a dict mapping each name to an array.")
        named = {next(iter(specs)): inputs}
    out: dict[str, np.ndarray] = {}
    for name, value in named.items():
        spec = specs.get(name)
        if hasattr(value, "to_numpy") and not isinstance(value, np.ndarray):  # pandas
            value = value.to_numpy()
            if spec is not None:
                value = value.astype(spec.dtype)
        elif not isinstance(value, np.ndarray):
            value = np.asarray(value, dtype=spec.dtype if spec else None)
        out[str(name)] = value
    return out
