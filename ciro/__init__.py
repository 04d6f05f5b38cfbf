"""Ciro: verifiable AI inference on a Ray cluster, settled on Starknet.

Re-exported here: the client side (``CiroClient``, ``verify``, the job and model types, the errors) and the
building blocks the gateway and the plugins share with it (``ModelStore``, ``QuorumPolicy``, ``sign_receipt``,
the wire encodings, ``check_options``). Public modules beside them: ``ciro.auth`` (signed requests),
``ciro.convert``, ``ciro.zk``/``ciro.zk_verify``, ``ciro.chain``, ``ciro.local``, ``ciro.networks`` (network
profiles), ``ciro.plugins`` (the entry-point loader), ``ciro.home`` (the CIRO_HOME layout), ``ciro.procs`` (starting and
stopping processes), ``ciro.levels``, ``ciro.tokenizing`` and ``ciro.textmodels`` (the text pipeline the
plugins share); names with a leading underscore are private.

>>> from ciro import CiroClient
>>> client = CiroClient.local()                    # embedded default: local Ray + gateway
>>> model = client.deploy("model.onnx")
>>> result = client.infer(model.hash, x)           # result.outputs, result.output_commitment
"""

from ._version import __version__
from .auth import sign_request
from .client import AsyncCiroClient, CiroClient
from .config import DEFAULT_PORT, Config
from .deployments import DEPLOYMENT_NAME, Deployment, valid_deployment_name
from .errors import (
    AuthError,
    ChainError,
    CiroError,
    ConfigError,
    ContractRevertedError,
    DeploymentError,
    DeploymentExistsError,
    DeploymentNotFoundError,
    ForbiddenError,
    GatewayError,
    GatewayUnavailableError,
    InputError,
    InsufficientEscrowError,
    InvalidComputeError,
    InvalidModelError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    ModelError,
    ModelNotFoundError,
    ModelTooLargeError,
    NoQuorumError,
    PayloadTooLargeError,
    ProtocolError,
    UnauthenticatedError,
    WorkerBusyError,
    WorkerError,
)
from .identity import Identity, KeyStore
from .jobs import (
    SERVED_LEVELS,
    BatchResult,
    JobResult,
    JobSpec,
    JobStatus,
    ModelInfo,
    TensorSpec,
    VerificationLevel,
    new_job_id,
    new_job_ids,
)
from .modelstore import ModelStore, read_model_file
from .options import JOB_OPTIONS, check_options, options_doc
from .processing import Processor, is_raw
from .quorum import QuorumPolicy
from .receipts import Receipt, sign_receipt
from .sources import resolve_model
from .tensors import (
    BINARY_CONTENT_TYPE,
    canonical_bytes,
    commitment,
    decode_binary,
    decode_canonical,
    decode_json,
    encode_binary,
    encode_json,
    model_hash,
)
from .verify import VerificationReport, verify

__all__ = [
    "BINARY_CONTENT_TYPE",
    "DEFAULT_PORT",
    "DEPLOYMENT_NAME",
    "JOB_OPTIONS",
    "SERVED_LEVELS",
    "AsyncCiroClient",
    "AuthError",
    "BatchResult",
    "ChainError",
    "CiroClient",
    "CiroError",
    "Config",
    "ConfigError",
    "ContractRevertedError",
    "Deployment",
    "DeploymentError",
    "DeploymentExistsError",
    "DeploymentNotFoundError",
    "ForbiddenError",
    "GatewayError",
    "GatewayUnavailableError",
    "Identity",
    "InputError",
    "InsufficientEscrowError",
    "InvalidComputeError",
    "InvalidModelError",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobNotFoundError",
    "JobResult",
    "JobSpec",
    "JobStatus",
    "JobTimeoutError",
    "KeyStore",
    "ModelError",
    "ModelInfo",
    "ModelNotFoundError",
    "ModelStore",
    "ModelTooLargeError",
    "NoQuorumError",
    "PayloadTooLargeError",
    "Processor",
    "ProtocolError",
    "QuorumPolicy",
    "Receipt",
    "TensorSpec",
    "UnauthenticatedError",
    "VerificationLevel",
    "VerificationReport",
    "WorkerBusyError",
    "WorkerError",
    "__version__",
    "canonical_bytes",
    "check_options",
    "commitment",
    "decode_binary",
    "decode_canonical",
    "decode_json",
    "encode_binary",
    "encode_json",
    "is_raw",
    "load_ipython_extension",
    "model_hash",
    "new_job_id",
    "new_job_ids",
    "options_doc",
    "read_model_file",
    "resolve_model",
    "sign_receipt",
    "sign_request",
    "valid_deployment_name",
    "verify",
]


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext ciro``: hands over to the Jupyter extension (the ``jupyter`` extra)."""
    try:
        from ciro_jupyter import load_ipython_extension as load
    except ImportError as exc:
        raise ConfigError("The %ciro magics need the jupyter extra: pip install 'ciro-network[jupyter]'.") from exc
    load(ipython)
