"""Network profiles: which gateway a client talks to, and which Starknet network and Ciro contracts it settles on.

``CiroClient(network=NAME)`` (or ``CIRO_NETWORK``, or ``network = "NAME"`` in the config file) selects one:

- ``local`` (and its alias ``devnet``): the embedded default, started if needed (local Ray, gateway and the local
  Starknet devnet, which charges fees in STRK as Starknet does).
- ``sepolia`` and ``mainnet``: Starknet's public networks (chain id, fee token). Ciro runs no public gateway and
  has deployed no contracts there, so a profile names them: a ``[networks.sepolia]`` table in the config file
  with ``gateway_url`` (the gateway that settles there) and, to check that gateway, the contract addresses
  (``token``, ``pool``, ``job_manager``).
- any other name defined by a ``[networks.NAME]`` table; a URL is a gateway, no profile.

When a profile names contract addresses, the client checks that the gateway settles on exactly those before it
sends anything (``check_gateway``): a gateway pointed at other contracts is refused.

The same profiles choose what a gateway settles on (``ciro up --network NAME``, ``CIRO_NETWORK``, ``network`` in the
config file): an embedded profile settles on the local devnet; any other needs ``rpc_url``, the contracts
(``token``, ``pool``, ``job_manager``) and ``governance`` (the operator's account, whose key is ``operator_key``)
in its table, and :func:`settlement_record` refuses it, naming what is missing, until they are there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import Config, config_path, read_config_section
from .errors import ConfigError

__all__ = ["BUILTIN", "STRK", "NetworkProfile", "check_gateway", "profile", "settlement_record"]

#: STRK, the fee token of Starknet's public networks (the same address on Sepolia and mainnet).
STRK = "0x4718f5a0fc34cc1af16a1cdee98ffb20c31f5cd61d6ab07201858f4287c938d"
_CONTRACTS = ("token", "pool", "job_manager")
_KEYS = ("gateway_url", "rpc_url", "chain_id", "fee_token", *_CONTRACTS, "ledger", "governance")
#: What a gateway needs of a profile to settle on its network (beyond the built-in chain id and fee token).
_SETTLE = ("rpc_url", *_CONTRACTS, "governance")


@dataclass(frozen=True)
class NetworkProfile:
    name: str
    #: Starknet chain id ("SN_SEPOLIA", "SN_MAIN"); None for the local devnet (it reports its own).
    chain_id: str | None = None
    #: Address of the token fees are paid in (STRK, on the public networks and on the local devnet alike).
    fee_token: str | None = STRK
    #: True for the embedded default (started on this machine when needed).
    embedded: bool = False
    gateway_url: str | None = None
    rpc_url: str | None = None
    token: str | None = None
    pool: str | None = None
    job_manager: str | None = None
    #: CiroLedger (prepaid jobs, settlement v2); optional: without it jobs are paid through JobManager escrows only.
    ledger: str | None = None
    #: The operator's (governance) account on that network: a gateway settles with it.
    governance: str | None = None

    def contracts(self) -> dict[str, str]:
        """The contract addresses the profile pins (normalised hex), if any."""
        return {k: _hex(getattr(self, k), f"{self.name}.{k}") for k in (*_CONTRACTS, "ledger") if getattr(self, k)}


BUILTIN = {
    "local": NetworkProfile("local", embedded=True),
    "devnet": NetworkProfile("devnet", embedded=True),  # the same: the local devnet
    "sepolia": NetworkProfile("sepolia", chain_id="SN_SEPOLIA", fee_token=STRK),
    "mainnet": NetworkProfile("mainnet", chain_id="SN_MAIN", fee_token=STRK),
}


def _hex(value: str, what: str) -> str:
    try:
        return hex(int(str(value), 16))
    except ValueError as exc:
        raise ConfigError(f"{what} = {value!r} is not a hex address. Fix it in the config file.") from exc


def profile(name: str, cfg: Config) -> NetworkProfile:
    """The profile ``name``: a built-in one, overlaid by the config file's ``[networks.NAME]`` table."""
    tables: Mapping[str, Any] = read_config_section(cfg.home, "networks")
    table = tables.get(name)
    base = BUILTIN.get(name)
    if base is None and table is None:
        known = sorted({*BUILTIN, *tables})
        raise ConfigError(f"Unknown network {name!r}. Use one of {', '.join(known)}, the URL of a gateway, or "
                          f"define it as a [networks.{name}] table in {config_path(cfg.home)}.")
    if table is None:
        return base  # type: ignore[return-value]
    if not isinstance(table, Mapping):
        raise ConfigError(f"[networks.{name}] in {config_path(cfg.home)} must be a table of {', '.join(_KEYS)}.")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in [networks.{name}] of {config_path(cfg.home)}. "
                          f"Known keys: {', '.join(_KEYS)}.")
    values: dict[str, Any] = {k: str(v) for k, v in table.items()}
    return dataclasses.replace(base or NetworkProfile(name), **values)


def gateway_for(p: NetworkProfile, cfg: Config) -> str | None:
    """The gateway URL of a non-embedded profile (None for the embedded default: the caller starts it)."""
    if p.embedded:
        return None
    if not p.gateway_url:
        raise ConfigError(
            f"Network {p.name!r} has no gateway configured. Ciro runs no public gateway: add the URL of a gateway "
            f"that settles on {p.name} to {config_path(cfg.home)}:\n  [networks.{p.name}]\n  gateway_url = "
            '"https://..."\n  token = "0x..."  # and pool, job_manager: the Ciro contracts it must settle on')
    return p.gateway_url.rstrip("/")


def check_gateway(p: NetworkProfile, chain: Mapping[str, Any], url: str) -> None:
    """Refuse a gateway that does not settle on the contracts the profile pins (``chain``: its ``/v1/chain``)."""
    pinned = p.contracts()
    if not pinned:
        return
    if not chain.get("enabled"):
        raise ConfigError(f"The gateway at {url} does not settle on any chain, but network {p.name!r} expects the "
                          f"contracts {pinned}. Use a gateway that settles on {p.name}.")
    actual = {k: _hex(str(chain.get(k) or "0"), f"the gateway's {k}") for k in pinned}
    wrong = {k: (actual[k], v) for k, v in pinned.items() if actual[k] != v}
    if wrong:
        detail = "; ".join(f"{k} {got} instead of {want}" for k, (got, want) in wrong.items())
        raise ConfigError(f"The gateway at {url} settles on other contracts than network {p.name!r} names ({detail})."
                          f" Check [networks.{p.name}] in the config file, or use that network's gateway.")


def settlement_record(p: NetworkProfile, cfg: Config) -> dict[str, str | None] | None:
    """What a gateway settling on ``p`` records in ``chain.json`` (the fields of ``ciro.chain.Network``), or None for
    an embedded profile (the local devnet records its own deployment). Refuses a profile that lacks any of them."""
    if p.embedded:
        return None
    missing = [k for k in _SETTLE if not getattr(p, k)]
    if missing:
        raise ConfigError(
            f"A gateway cannot settle on network {p.name!r}: its profile has no {', '.join(missing)}. Ciro has "
            f"deployed no contracts there: deploy them (ciro.chain.deploy_network, paid by the operator's account) "
            f"and record them in {config_path(cfg.home)}:\n  [networks.{p.name}]\n  rpc_url = \"https://...\"  "
            "# a Starknet JSON-RPC node of that network\n  token = \"0x...\"\n  pool = \"0x...\"\n  job_manager = "
            f"\"0x...\"\n  governance = \"0x...\"  # the operator's account; its key is operator_key "
            f"({cfg.operator_key!r})\nor use the local devnet (--network local).")
    record: dict[str, str | None] = {k: _hex(getattr(p, k), f"{p.name}.{k}") for k in (*_CONTRACTS, "governance")}
    record.update(network=p.name, rpc_url=p.rpc_url, chain_id=p.chain_id,
                  fee_token=_hex(p.fee_token or STRK, f"{p.name}.fee_token"),
                  ledger=_hex(p.ledger, f"{p.name}.ledger") if p.ledger else None)
    return record
