"""The ``CIRO_HOME`` layout, in one place: every file and folder Ciro keeps there (default ``~/.ciro``).

::

    config.toml            settings (or $CIRO_CONFIG)           chain.json      the Ciro deployment settled on
    keys/                  key pairs (KeyStore), store.key      models/         content-addressed model store
    jobs.db nonces.db      the gateway's job store and          deployments.db  providers.db
                           signed-request nonces
    run/NAME.json          what runs (local.json, devnet.json, provider.json), gateway.token
    logs/NAME.log          logs of the processes `ciro up` / `ciro provider join` start
    devnet/                the local devnet's state             srs/            development SRS files
    vk-cache/              verifying keys `ciro verify` rebuilt processors/      unpacked processor bundles
    hf/                    Hugging Face exports                 demo/           `ciro demo`'s model

Use ``Config.paths`` (a :class:`HomePaths` of ``cfg.home``) rather than joining names to ``cfg.home``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["HomePaths"]


@dataclass(frozen=True)
class HomePaths:
    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def devnet(self) -> Path:
        return self.root / "devnet"

    @property
    def srs(self) -> Path:
        return self.root / "srs"

    @property
    def vk_cache(self) -> Path:
        return self.root / "vk-cache"

    @property
    def processors(self) -> Path:
        return self.root / "processors"

    @property
    def hf(self) -> Path:
        return self.root / "hf"

    @property
    def demo(self) -> Path:
        return self.root / "demo"

    @property
    def chain_file(self) -> Path:
        return self.root / "chain.json"

    @property
    def store_key(self) -> Path:
        return self.keys / "store.key"

    def db(self, name: str) -> Path:
        """A gateway database: jobs, nonces, deployments or providers."""
        if name not in ("jobs", "nonces", "deployments", "providers"):
            raise ValueError(f"no database {name!r} in CIRO_HOME")
        return self.root / f"{name}.db"

    def run_file(self, name: str) -> Path:
        """``run/NAME.json``: the record of a running process (local, devnet, provider)."""
        return self.run / f"{name}.json"

    def log_file(self, name: str) -> Path:
        """``logs/NAME.log``."""
        return self.logs / f"{name}.log"
