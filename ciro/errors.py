"""Every error Ciro raises, rooted at :class:`CiroError`.

The tree (a domain base also subclasses the stdlib type callers already catch)::

    CiroError
    ├── ConfigError (ValueError)            bad configuration value or file
    ├── ModelError
    │   ├── InvalidModelError (ValueError)  not ONNX, fails the checker, escaping external data
    │   ├── ModelTooLargeError (ValueError) over ``max_model_bytes``
    │   └── ModelNotFoundError (LookupError) unknown model hash or name
    ├── InputError (ValueError)             wrong input name, shape, dtype or encoding
    │   └── PayloadTooLargeError            request body over ``max_payload_bytes``
    ├── JobError
    │   ├── JobNotFoundError (LookupError)  unknown job id
    │   ├── JobFailedError (RuntimeError)   the job ended in ``failed``
    │   ├── JobCancelledError               the job was cancelled
    │   ├── NoQuorumError (JobFailedError)  fewer than 2f+1 of k workers agreed
    │   └── JobTimeoutError (TimeoutError)  waited longer than asked
    ├── WorkerError (RuntimeError)          a worker died or could not run the model
    │   └── WorkerBusyError                 a leaving worker still runs batches (drain, then retry)
    ├── ChainError                          a Starknet node or contract call failed
    │   ├── ContractRevertedError           a contract refused the call (``reason`` holds its message)
    │   └── InsufficientEscrowError         a job's on-chain escrow is missing or too small (HTTP 402)
    ├── AuthError (PermissionError)
    │   ├── UnauthenticatedError            unsigned, forged, expired or replayed request (HTTP 401)
    │   └── ForbiddenError                  a valid signature from a key not allowed here (HTTP 403)
    └── GatewayError
        ├── GatewayUnavailableError (ConnectionError)  nothing answers at the gateway URL
        └── ProtocolError                   the gateway answered something unexpected

Every message ends with what to do next. Errors pickle (they cross Ray process
boundaries) and travel over HTTP as ``{"error": {"code", "message", "detail"}}``;
:func:`error_from_payload` rebuilds the same class on the client side.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "ChainError",
    "CiroError",
    "ConfigError",
    "ContractRevertedError",
    "DeploymentError",
    "DeploymentExistsError",
    "DeploymentNotFoundError",
    "ForbiddenError",
    "GatewayError",
    "GatewayUnavailableError",
    "InputError",
    "InsufficientEscrowError",
    "InvalidComputeError",
    "InvalidModelError",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobNotFoundError",
    "JobTimeoutError",
    "ModelError",
    "ModelNotFoundError",
    "ModelTooLargeError",
    "NoQuorumError",
    "PayloadTooLargeError",
    "ProtocolError",
    "UnauthenticatedError",
    "WorkerBusyError",
    "WorkerError",
    "error_class",
    "error_from_payload",
]


class CiroError(Exception):
    """Root of every Ciro error. ``code`` is stable and travels over the wire."""

    code = "ciro_error"
    http_status = 500

    def __init__(self, message: str, *, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = dict(detail or {})

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only ``detail`` would be lost by the default Exception pickling.
        return (_rebuild, (type(self), self.message, self.detail))

    def to_payload(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "detail": self.detail}}


def _rebuild(cls: type[CiroError], message: str, detail: dict[str, Any]) -> CiroError:
    return cls(message, detail=detail)


class ConfigError(CiroError, ValueError):
    code = "config_error"
    http_status = 400


class ModelError(CiroError):
    code = "model_error"
    http_status = 400


class InvalidModelError(ModelError, ValueError):
    code = "invalid_model"
    http_status = 422


class ModelTooLargeError(ModelError, ValueError):
    code = "model_too_large"
    http_status = 413


class ModelNotFoundError(ModelError, LookupError):
    code = "model_not_found"
    http_status = 404


class InputError(CiroError, ValueError):
    code = "invalid_input"
    http_status = 422


class PayloadTooLargeError(InputError):
    code = "payload_too_large"
    http_status = 413


class DeploymentError(CiroError):
    code = "deployment_error"
    http_status = 400


class DeploymentNotFoundError(DeploymentError, LookupError):
    code = "deployment_not_found"
    http_status = 404


class DeploymentExistsError(DeploymentError):
    code = "deployment_exists"
    http_status = 409


class JobError(CiroError):
    code = "job_error"
    http_status = 400


class JobNotFoundError(JobError, LookupError):
    code = "job_not_found"
    http_status = 404


class JobFailedError(JobError, RuntimeError):
    code = "job_failed"
    http_status = 409


class NoQuorumError(JobFailedError):
    code = "no_quorum"
    http_status = 409


class InvalidComputeError(JobFailedError):
    """A worker's result is not what the model computes (its proof shows other outputs); the worker is reported."""

    code = "invalid_compute"
    http_status = 409


class JobCancelledError(JobError):
    code = "job_cancelled"
    http_status = 409


class JobTimeoutError(JobError, TimeoutError):
    code = "job_timeout"
    http_status = 408


class WorkerError(CiroError, RuntimeError):
    code = "worker_error"
    http_status = 503


class WorkerBusyError(WorkerError):
    """A worker asked to leave while it still runs batches: drain it and retry."""

    code = "worker_busy"
    http_status = 409


class ChainError(CiroError):
    code = "chain_error"
    http_status = 502


class ContractRevertedError(ChainError):
    code = "contract_reverted"
    http_status = 409

    @property
    def reason(self) -> str:
        return str(self.detail.get("reason", ""))


class InsufficientEscrowError(ChainError):
    code = "insufficient_escrow"
    http_status = 402


class AuthError(CiroError, PermissionError):
    code = "auth_error"
    http_status = 401


class UnauthenticatedError(AuthError):
    code = "unauthenticated"
    http_status = 401


class ForbiddenError(AuthError):
    code = "forbidden"
    http_status = 403


class GatewayError(CiroError):
    code = "gateway_error"
    http_status = 502


class GatewayUnavailableError(GatewayError, ConnectionError):
    code = "gateway_unavailable"
    http_status = 503


class ProtocolError(GatewayError):
    code = "protocol_error"
    http_status = 502


def _all_subclasses(cls: type[CiroError]) -> list[type[CiroError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


def error_class(code: str) -> type[CiroError]:
    """The error class whose ``code`` this is; :class:`GatewayError` for an unknown code."""
    return {c.code: c for c in _all_subclasses(CiroError)}.get(code, GatewayError)


def error_from_payload(payload: Any, *, status: int) -> CiroError:
    """Rebuild the error a gateway sent; unknown shapes become :class:`ProtocolError`."""
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict) or "message" not in err:
        return ProtocolError(
            f"The gateway answered HTTP {status} with an unexpected body: {str(payload)[:200]!r}. "
            "Check that the URL points at a Ciro gateway (GET /healthz)."
        )
    cls = error_class(str(err.get("code")))
    return cls(str(err["message"]), detail=err.get("detail") or {})
