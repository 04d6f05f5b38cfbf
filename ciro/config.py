"""Configuration: arguments > ``CIRO_*`` environment > config file > defaults.

Every setting is a field of :class:`Config`. Its environment variable is ``CIRO_`` plus the
field name in upper case (``max_batch_size`` -> ``CIRO_MAX_BATCH_SIZE``). The config file is
TOML, at ``$CIRO_CONFIG`` or else ``$CIRO_HOME/config.toml``, with the same keys at top level.
This module is the only place that reads ``CIRO_*`` variables.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .home import HomePaths

__all__ = ["DEFAULT_PORT", "Config", "config_path", "read_config_section"]

DEFAULT_PORT = 8765
_UNSET: Any = object()


def _default_home() -> Path:
    return Path(os.environ.get("CIRO_HOME") or Path.home() / ".ciro").expanduser()


@dataclass(frozen=True)
class Config:
    """Resolved settings. Build one with :meth:`Config.load`."""

    home: Path = field(default_factory=_default_home)
    #: Gateway URL for clients. None means the embedded default on ``host:port``.
    gateway_url: str | None = None
    #: Client: the network profile a client selects when given no URL (``ciro.networks``: local, devnet, sepolia,
    #: mainnet or a ``[networks.NAME]`` table of the config file). "local": the gateway above / the embedded default.
    network: str = "local"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    #: Ray cluster address (``host:port`` of the GCS). None: ``ciro up`` starts a local head.
    ray_address: str | None = None
    #: The address this machine's Ray node advertises (a LAN address for a cluster of several machines).
    node_ip: str = "127.0.0.1"
    num_workers: int = 2
    worker_num_cpus: float = 1.0
    worker_num_gpus: float = 0.0
    #: Dynamic batching: dispatch at most this many jobs together...
    max_batch_size: int = 64
    #: ...and wait at most this long for a batch to fill while every worker is busy.
    batch_timeout_ms: float = 2.0
    max_model_bytes: int = 512 * 1024 * 1024
    max_payload_bytes: int = 64 * 1024 * 1024
    #: Attempts per job before it fails (a worker death costs one attempt).
    max_attempts: int = 3
    #: SQLite ``synchronous`` for the job store. NORMAL survives a gateway crash; FULL also an OS crash.
    jobstore_sync: str = "NORMAL"
    request_timeout_s: float = 60.0
    #: Worker actor class(es) as import paths "module:Class", comma-separated and assigned to worker
    #: slots in turn (a provider's own subclass of OnnxWorker, or a fault-injecting one in tests).
    worker_class: str = "ciro_ray.worker:OnnxWorker"
    #: Verification level of jobs that do not name one: none | receipt | quorum | zk.
    verification: str = "receipt"
    #: Folder of public-ceremony KZG SRS files, pinned by SHA256SUMS. Unset: a development SRS (not sound).
    srs_dir: str | None = None
    #: Proofs made at the same time (each holds the proving key in memory).
    max_concurrent_proofs: int = 1
    #: A proof still running after this long is stopped and its job fails.
    proof_timeout_s: float = 1800.0
    #: zk jobs of one model are proven together, as one circuit over B rows, B one of these batch sizes (a set-up
    #: per model and B, made on first use)...
    zk_batch_buckets: str = "1,4,16,64"
    #: ...waiting at most this long after the first of them for the largest bucket to fill (0: never wait).
    zk_batch_wait_ms: float = 200.0
    #: Gateway: "auto" accepts unsigned POSTs only from this machine (loopback) and checks every signed
    #: one; "required" refuses every unsigned POST. Signatures: see ciro.auth.
    auth: str = "auto"
    #: Gateway: the longest lifetime (expiry - now) a signed request may claim.
    max_request_ttl_s: float = 300.0
    #: Gateway: file of client public keys allowed to submit (one 0x-hex key per line). Unset: any signer.
    allowed_clients: str | None = None
    #: Gateway: file of worker public keys allowed to serve. Unset: the workers this gateway starts.
    allowed_workers: str | None = None
    #: On-chain payment: "auto" settles jobs whose client escrowed them when $CIRO_HOME/chain.json names a
    #: deployment (others run unpaid); "required" refuses jobs without escrow; "off" ignores the chain.
    settlement: str = "auto"
    #: The account key (in $CIRO_HOME/keys) the gateway settles with: the deployment's governance/operator.
    operator_key: str = "devnet-governance"
    #: What the gateway charges per job, in CIRO base units (10**18 = 1 CIRO); a job's escrow must cover it.
    price_per_job: int = 10**15
    #: A job waits this long for its escrow; the escrow's deadline must be at least this far ahead.
    escrow_window_s: float = 600.0
    #: Settlement batches: at most this many jobs per transaction, at least every this many seconds.
    settle_batch: int = 50
    settle_interval_s: float = 1.0
    #: Port of the local Starknet devnet (`ciro devnet`), the embedded default's chain.
    devnet_port: int = 5050
    #: Provider: who runs this node's workers (set it where `ray start` runs). Quorum jobs go to workers of
    #: distinct providers where the cluster has them. Unset: each Ray node counts as its own provider.
    provider: str | None = None
    #: Provider node: the GPU's model name and memory (GB) when nvidia-smi cannot tell (set by `ciro provider join`).
    gpu_model: str | None = None
    gpu_memory_gb: float = 0.0
    #: Provider node: seconds between the signed heartbeats `ciro provider join` sends for its workers.
    heartbeat_interval_s: float = 10.0
    #: Gateway: a provider worker whose last heartbeat is older than this is down (downtime evidence starts).
    heartbeat_timeout_s: float = 60.0
    #: Gateway: downtime longer than this is slashed on chain (CDCPool violation 2; the seed's 6 hours).
    downtime_slash_s: float = 6 * 3600.0
    #: Gateway: how often it looks for provider nodes joining or leaving the Ray cluster.
    node_poll_s: float = 2.0
    #: Client: "auto" signs requests to a gateway that is not on this machine; "always"; "never".
    sign_requests: str = "auto"
    #: Client: name of the key (in $CIRO_HOME/keys) that signs requests; created on first use.
    client_key: str = "client"
    #: Gateway: the shared secret incoming webhooks must carry (e.g. Hugging Face's X-Webhook-Secret);
    #: unset: webhooks are refused.
    webhook_secret: str | None = None
    #: Gateway: PEM certificate (chain) and private key; set both to serve HTTPS, neither for plain HTTP.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Client: PEM file of CA certificates trusted in addition to the system store (a private CA's gateway).
    ca_bundle: str | None = None
    #: Gateway: seal job inputs and outputs in the job store with AES-256-GCM (key: $CIRO_HOME/keys/store.key).
    encrypt_at_rest: bool = False
    #: Gateway: results kept for reuse, the result cache's entries (default 0: off, every job runs; e.g. 10000 to
    #: turn it on): a job asking exactly what a done job of the same submitter asked is then answered with that
    #: job's outputs and evidence, unless it is escrowed or asks for ``fresh``; the least recently used goes first.
    result_cache_size: int = 0

    @classmethod
    def load(cls, **overrides: Any) -> Config:
        """Resolve settings. Keyword arguments that are None count as not given."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(overrides) - set(names)
        if unknown:
            raise ConfigError(
                f"Unknown setting(s) {sorted(unknown)}. Known settings: {', '.join(sorted(names))}."
            )
        given = {k: v for k, v in overrides.items() if v is not None}
        home = Path(given.get("home") or os.environ.get("CIRO_HOME") or _default_home()).expanduser()
        values: dict[str, Any] = {k: v for k, v in _read_file(home).items() if k not in _SECTIONS}
        for name in names:
            env = os.environ.get("CIRO_" + name.upper())
            if env is not None and env != "":
                values[name] = env
        values.update(given)
        values["home"] = home
        kwargs = {}
        for name, value in values.items():
            if name not in names:
                raise ConfigError(
                    f"Unknown setting {name!r} in the config file. Remove it or use one of: "
                    f"{', '.join(sorted(names))}."
                )
            kwargs[name] = _coerce(name, value, names[name].type)
        cfg = cls(**kwargs)
        cfg._validate()
        return cfg

    def as_env(self) -> dict[str, str]:
        """Every setting as ``CIRO_*`` variables, to hand this exact configuration to a child process."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out["CIRO_" + f.name.upper()] = str(value)
        return out

    @property
    def paths(self) -> HomePaths:
        """Where each file of ``home`` lives (``ciro.home``)."""
        return HomePaths(self.home)

    @property
    def local_url(self) -> str:
        return f"{'https' if self.tls_cert else 'http'}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return (self.gateway_url or self.local_url).rstrip("/")

    def _validate(self) -> None:
        checks = [
            (self.num_workers >= 0, "num_workers must be >= 0 (0: only provider nodes' workers)"),
            (self.heartbeat_interval_s > 0 and self.heartbeat_timeout_s > 0 and self.downtime_slash_s > 0,
             "heartbeat_interval_s, heartbeat_timeout_s and downtime_slash_s must be > 0"),
            (self.max_batch_size >= 1, "max_batch_size must be >= 1"),
            (self.batch_timeout_ms >= 0, "batch_timeout_ms must be >= 0"),
            (self.zk_batch_wait_ms >= 0, "zk_batch_wait_ms must be >= 0"),
            (self.max_attempts >= 1, "max_attempts must be >= 1"),
            (0 < self.port < 65536, "port must be between 1 and 65535"),
            (self.jobstore_sync.upper() in {"OFF", "NORMAL", "FULL", "EXTRA"},
             "jobstore_sync must be one of OFF, NORMAL, FULL, EXTRA"),
            (self.auth in {"auto", "required"}, "auth must be 'auto' or 'required'"),
            (self.sign_requests in {"auto", "always", "never"}, "sign_requests must be 'auto', 'always' or 'never'"),
            (self.max_request_ttl_s > 0, "max_request_ttl_s must be > 0"),
            (self.settlement in {"auto", "required", "off"}, "settlement must be 'auto', 'required' or 'off'"),
            (self.settle_batch >= 1, "settle_batch must be >= 1"),
            (self.result_cache_size >= 0, "result_cache_size must be >= 0 (0 disables the result cache)"),
            ((self.tls_cert is None) == (self.tls_key is None),
             "tls_cert and tls_key go together: set both (the gateway serves HTTPS) or neither (plain HTTP)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"Invalid configuration: {msg}. Fix the argument, CIRO_* variable or config file.")


#: Tables of the config file that are not settings (read by their own modules, e.g. ``ciro.networks``).
_SECTIONS = ("networks",)


def config_path(home: Path) -> Path:
    """The config file: ``$CIRO_CONFIG``, else ``$CIRO_HOME/config.toml``."""
    return Path(os.environ.get("CIRO_CONFIG") or home / "config.toml")


def read_config_section(home: Path, name: str) -> dict[str, Any]:
    """A table of the config file that is not a setting (``_SECTIONS``), e.g. ``[networks.sepolia]``."""
    section = _read_file(home).get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{name!r} in {config_path(home)} must be a table ([{name}.NAME]). Fix the file.")
    return section


def _read_file(home: Path) -> dict[str, Any]:
    path = config_path(home)
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc}. Fix or remove the file.") from exc


def _coerce(name: str, value: Any, typ: Any) -> Any:
    t = str(typ)
    try:
        if name == "home":
            return Path(value).expanduser()
        if value is None:
            return None
        if t.startswith("bool"):
            return _to_bool(value)
        if t.startswith("int"):
            return int(value)
        if t.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Setting {name!r} has the invalid value {value!r} ({exc}). Expected {t}.") from exc


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("use true/false, yes/no, on/off or 1/0")
