"""Declaring and deploying the Ciro contracts through any account (the devnet bootstrap uses this too)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .artifacts import compiled_dir, load_class
from .client import ChainClient, TxResult

__all__ = ["UDC_ADDRESS", "class_hashes", "declare", "deploy"]

#: The Universal Deployer Contract's address on Starknet networks (starknet-py's default; the local devnet
#: predeploys its UDC there).
UDC_ADDRESS = 0x02CEED65A4BD731034C01113685C831B01C15D7D432F71AFB1CF1634B53A2125


@dataclass(frozen=True)
class ClassHashes:
    sierra: int
    compiled: int


def class_hashes(name: str) -> ClassHashes:
    """From the committed manifest (checked against a fresh build by the test suite)."""
    entry = json.loads((compiled_dir() / "manifest.json").read_text())[name]
    return ClassHashes(int(entry["sierra_class_hash"], 16), int(entry["compiled_class_hash"], 16))


async def declare(chain: ChainClient, name: str) -> int:
    """Declare a contract class unless the node already has it; returns its class hash."""
    from starknet_py.net.client_errors import ClientError

    hashes = class_hashes(name)
    try:
        await chain.node.get_class_by_hash(hashes.sierra)
        return hashes.sierra
    except ClientError:
        pass
    sierra, _ = load_class(name)

    async def send(nonce: int) -> int:
        from starknet_py.net.client_models import ResourceBoundsMapping

        text = json.dumps(sierra)
        draft = await chain.account.sign_declare_v3(text, hashes.compiled, nonce=nonce,
                                                    resource_bounds=ResourceBoundsMapping.init_with_zeros())
        tx = await chain.account.sign_declare_v3(text, hashes.compiled, nonce=nonce,
                                                 resource_bounds=await chain.estimate_bounds(draft))
        return int((await chain.node.declare(tx)).transaction_hash)

    await chain.submit(send, what=f"Declaring {name}")
    return hashes.sierra


async def deploy(chain: ChainClient, class_hash: int, calldata: list[int], *, salt: int,
                 what: str = "The deployment", then: Sequence[Any] = ()) -> tuple[int, TxResult | None]:
    """Deploy through the UDC (not unique: the address depends only on class, salt and calldata), followed in the
    same transaction by the calls ``then``. Idempotent: when that address already holds this class, nothing is
    sent and the result is None."""
    from starknet_py.net.client_errors import ClientError
    from starknet_py.net.udc_deployer.deployer import Deployer

    deployment: Any = Deployer(deployer_address=UDC_ADDRESS).create_contract_deployment_raw(
        class_hash=class_hash, salt=salt, raw_calldata=calldata)
    try:
        if int(await chain.node.get_class_hash_at(deployment.address)) == class_hash:
            return int(deployment.address), None
    except ClientError:
        pass
    result = await chain.execute([deployment.call, *then], what=what)
    return int(deployment.address), result
