"""A Ciro deployment on a Starknet network: the three contracts' addresses, where they live, and the
accounts of Ciro's keys (one CiroAccount per key, at an address that follows from the key alone).

``$CIRO_HOME/chain.json`` records the deployment the gateway settles on: the local devnet writes it, and
:func:`settle_on` writes it from the network profile ``network`` selects (``ciro up --network sepolia``: the
profile's RPC URL, chain id, fee token and the addresses of a deployment made with :func:`deploy_network`).
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError
from ..identity import Identity
from ..networks import STRK, profile, settlement_record
from ..receipts import short_string
from .client import ChainClient
from .contracts import CDCPool, CiroToken, JobManager
from .deploy import class_hashes, declare, deploy

__all__ = ["ACCOUNT_FEE_FUNDS", "Network", "account_address", "account_exists", "deploy_network", "ensure_account",
           "node_chain_id", "settle_on"]

CHAIN_FILE = "chain.json"
#: Fee token (STRK, in fri) an account gets from whoever deploys it (:func:`ensure_account`): 10 STRK, some
#: thousands of Ciro transactions at the devnet's gas prices.
ACCOUNT_FEE_FUNDS = 10 * 10**18


def _u256(value: int) -> list[int]:
    return [value & ((1 << 128) - 1), value >> 128]


def account_address(public_key: int) -> int:
    """Where the CiroAccount of a key lives: deployed through the UDC, not unique, salt = the key."""
    from starknet_py.hash.address import compute_address

    return int(compute_address(class_hash=class_hashes("CiroAccount").sierra, constructor_calldata=[public_key],
                               salt=public_key, deployer_address=0))


@dataclass(frozen=True)
class Network:
    rpc_url: str
    token: int
    pool: int
    job_manager: int
    #: The governance / operator account (mints, assigns jobs, slashes).
    governance: int
    #: The token fees are paid in (STRK on Starknet and on the local devnet).
    fee_token: int = int(STRK, 16)
    #: The network profile it came from (None: the local devnet's own record, or one written by hand).
    network: str | None = None
    #: The chain id the node must report (None: not checked).
    chain_id: str | None = None
    #: CiroLedger (settlement v2: deposits, signed spend caps, one transaction a batch); None where not deployed.
    ledger: int | None = None

    def save(self, home: Path) -> Path:
        path = home / CHAIN_FILE
        home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({k: (hex(v) if isinstance(v, int) else v) for k, v in asdict(self).items()},
                                  indent=1))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, home: Path) -> Network:
        path = home / CHAIN_FILE
        try:
            d: dict[str, Any] = json.loads(path.read_text())
            return cls(rpc_url=str(d["rpc_url"]), token=int(d["token"], 16), pool=int(d["pool"], 16),
                       job_manager=int(d["job_manager"], 16), governance=int(d["governance"], 16),
                       fee_token=int(d.get("fee_token", STRK), 16), network=d.get("network"),
                       chain_id=d.get("chain_id"), ledger=int(d["ledger"], 16) if d.get("ledger") else None)
        except FileNotFoundError as exc:
            raise ConfigError(f"No Ciro deployment recorded in {path}. Start the local devnet (`ciro devnet`), or "
                              "write the addresses of your deployment there.") from exc
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{path} is malformed ({exc}). Fix it or start the devnet again.") from exc

    def token_on(self, chain: ChainClient) -> CiroToken:
        return CiroToken(chain, self.token)

    def fee_token_on(self, chain: ChainClient) -> CiroToken:
        """The fee token as an ERC20 (transfer, balance_of)."""
        return CiroToken(chain, self.fee_token)

    def pool_on(self, chain: ChainClient) -> CDCPool:
        return CDCPool(chain, self.pool)

    def job_manager_on(self, chain: ChainClient) -> JobManager:
        return JobManager(chain, self.job_manager)


def settle_on(cfg: Config) -> Network | None:
    """Before a gateway starts: record in ``chain.json`` the network ``cfg.network`` selects, after checking that
    its node answers with the profile's chain id; None for the embedded profile (the local devnet records its own
    deployment there, and a record another profile left is removed so that the devnet is started again)."""
    p = profile(cfg.network, cfg)
    record = settlement_record(p, cfg)
    path = cfg.home / CHAIN_FILE
    if record is None:
        try:
            left = json.loads(path.read_text()).get("network")
        except (OSError, ValueError, AttributeError):
            left = None
        if left is not None and not profile(str(left), cfg).embedded:
            path.unlink()
        return None
    rpc_url = str(record["rpc_url"])
    if p.chain_id:
        reported = node_chain_id(rpc_url)
        if reported != p.chain_id:
            raise ConfigError(f"The node at {rpc_url} ([networks.{p.name}] rpc_url) is on chain {reported!r}, not "
                              f"{p.chain_id!r} as network {p.name!r} is. Point rpc_url at a {p.name} node.")
    net = Network(rpc_url=rpc_url, token=int(str(record["token"]), 16), pool=int(str(record["pool"]), 16),
                  job_manager=int(str(record["job_manager"]), 16), governance=int(str(record["governance"]), 16),
                  fee_token=int(str(record["fee_token"]), 16), network=p.name, chain_id=p.chain_id,
                  ledger=int(str(record["ledger"]), 16) if record.get("ledger") else None)
    net.save(cfg.home)
    return net


def node_chain_id(rpc_url: str, timeout_s: float = 10.0) -> str:
    """The chain id a Starknet node reports (``starknet_chainId``, decoded: "SN_SEPOLIA")."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "starknet_chainId", "params": []}).encode()
    request = urllib.request.Request(rpc_url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            value = int(json.loads(answer.read())["result"], 16)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"No Starknet node answers starknet_chainId at {rpc_url} ({exc}). Check the network "
                          "profile's rpc_url and that this machine can reach it.") from exc
    return value.to_bytes((value.bit_length() + 7) // 8, "big").decode(errors="replace")


async def deploy_network(gov: ChainClient, *, rpc_url: str, supply: int, min_stake: int, unstake_cooldown_s: int,
                         name: str = "Ciro", symbol: str = "CIRO", decimals: int = 18) -> Network:
    """Declare and deploy CiroToken, CDCPool and JobManager with ``gov`` as governance (and token owner). The
    addresses follow from the classes, governance and arguments, so deploying again finds the same contracts."""
    token_cls, pool_cls, jm_cls = [await declare(gov, n) for n in ("CiroToken", "CDCPool", "JobManager")]
    token, _ = await deploy(gov, token_cls, [short_string(name), short_string(symbol), decimals, *_u256(supply),
                                             gov.address, gov.address], salt=gov.address, what="Deploying CiroToken")
    pool, _ = await deploy(gov, pool_cls, [gov.address, token, *_u256(min_stake), unstake_cooldown_s],
                           salt=gov.address, what="Deploying CDCPool")
    jm, _ = await deploy(gov, jm_cls, [gov.address, token, pool], salt=gov.address, what="Deploying JobManager")
    net = Network(rpc_url=rpc_url, token=token, pool=pool, job_manager=jm, governance=gov.address)
    if int(await net.pool_on(gov).view("job_manager")) != jm:
        await gov.execute([net.pool_on(gov).prepare("set_job_manager", jm)], what="CDCPool.set_job_manager")
    return net


async def ensure_account(gov: ChainClient, identity: Identity | int, *, fee_funds: int = ACCOUNT_FEE_FUNDS) -> int:
    """Deploy the CiroAccount of ``identity`` (a key pair, or just its public key), paid by ``gov``, unless it
    exists; returns its address. A new account gets ``fee_funds`` fri of the fee token from ``gov`` in the same
    transaction, so that it can send transactions of its own."""
    from starknet_py.net.client_errors import ClientError

    public_key = identity if isinstance(identity, int) else identity.public_key
    label = f"key {public_key:#x}" if isinstance(identity, int) else f"key {identity.name!r}"
    address = account_address(public_key)
    try:
        await gov.node.get_class_hash_at(address)
        return address
    except ClientError:
        pass
    cls = await declare(gov, "CiroAccount")
    funding = [fee_transfer_call(address, fee_funds)] if fee_funds else []
    deployed, _ = await deploy(gov, cls, [public_key], salt=public_key, what=f"Deploying the account of {label}",
                               then=funding)
    assert deployed == address, "UDC address differs from the computed one"
    return address


def fee_transfer_call(recipient: int, amount: int) -> Any:
    """The fee token's ``transfer(recipient, amount)`` as a starknet-py Call (built without parsing an ABI)."""
    from starknet_py.hash.selector import get_selector_from_name
    from starknet_py.net.client_models import Call

    return Call(to_addr=int(STRK, 16), selector=get_selector_from_name("transfer"),
                calldata=[recipient, amount & ((1 << 128) - 1), amount >> 128])


async def account_exists(chain: ChainClient, address: int) -> bool:
    from starknet_py.net.client_errors import ClientError

    try:
        await chain.node.get_class_hash_at(address)
        return True
    except ClientError:
        return False
