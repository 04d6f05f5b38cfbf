"""The JSON-RPC 2.0 server (aiohttp): the Starknet methods starknet-py 0.30's FullNodeClient uses, plus `devnet_*`.

Every call runs on one worker thread (the chain is not thread-safe and Cairo execution is CPU-bound), so the
event loop keeps accepting requests while a transaction executes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from . import fees, feetoken
from .blocks import Block, TxRecord
from .chain import RPC_SPEC_VERSION, SEQUENCER_ADDRESS, STARKNET_VERSION, UDC_ADDRESS, Devnet
from .errors import (
    CLASS_HASH_NOT_FOUND,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNEXPECTED_ERROR,
    RpcError,
)
from .felts import parse_felt, parse_felts

log = logging.getLogger("ciro_devnet")

Handler = Callable[..., Any]


def _price(value: int) -> dict[str, str]:
    return {"price_in_fri": hex(value), "price_in_wei": hex(value)}


def _header(devnet: Devnet, block: Block | None) -> dict[str, Any]:
    """A block header; None gives the pre-confirmed (pending) block's."""
    header: dict[str, Any] = {
        "timestamp": block.timestamp if block is not None else max(devnet.now(), devnet.latest.timestamp),
        "sequencer_address": hex(SEQUENCER_ADDRESS),
        "l1_gas_price": _price(fees.L1_GAS_PRICE),
        "l2_gas_price": _price(fees.L2_GAS_PRICE),
        "l1_data_gas_price": _price(fees.L1_DATA_GAS_PRICE),
        "l1_da_mode": "BLOB",
        "starknet_version": STARKNET_VERSION,
    }
    if block is None:
        header["block_number"] = devnet.latest.number + 1
        return header
    events = sum(len(devnet.txs[h].receipt["events"]) for h in block.tx_hashes)
    header.update(
        {
            "status": "ACCEPTED_ON_L2",
            "block_hash": hex(block.hash),
            "parent_hash": hex(block.parent_hash),
            "block_number": block.number,
            "new_root": "0x0",  # no Patricia commitments on this devnet
            "event_commitment": "0x0",
            "transaction_commitment": "0x0",
            "receipt_commitment": "0x0",
            "state_diff_commitment": "0x0",
            "event_count": events,
            "transaction_count": len(block.tx_hashes),
            "state_diff_length": len(block.state_diff),
        }
    )
    return header


class Methods:
    """The RPC methods, each a function of named params; called on the worker thread. `ready` is what
    `devnet_getConfig` says of the node: false while its launcher still prepares the chain (`--home`)."""

    def __init__(self, devnet: Devnet, *, ready: bool = True) -> None:
        self.devnet = devnet
        self.ready = ready
        d = devnet
        self.table: dict[str, tuple[Handler, tuple[str, ...]]] = {
            "starknet_specVersion": (lambda: RPC_SPEC_VERSION, ()),
            "starknet_chainId": (lambda: hex(d.chain_id), ()),
            "starknet_syncing": (lambda: False, ()),
            "starknet_blockNumber": (lambda: d.latest.number, ()),
            "starknet_blockHashAndNumber": (
                lambda: {"block_hash": hex(d.latest.hash), "block_number": d.latest.number},
                (),
            ),
            "starknet_getBlockWithTxHashes": (self.block_with_tx_hashes, ("block_id",)),
            "starknet_getBlockWithTxs": (self.block_with_txs, ("block_id", "response_flags")),
            "starknet_getBlockWithReceipts": (self.block_with_receipts, ("block_id", "response_flags")),
            "starknet_getBlockTransactionCount": (self.block_transaction_count, ("block_id",)),
            "starknet_getStateUpdate": (self.state_update, ("block_id", "contract_addresses")),
            "starknet_getNonce": (
                lambda block_id, contract_address: hex(d.nonce_at(parse_felt(contract_address), block_id)),
                ("block_id", "contract_address"),
            ),
            "starknet_getClassHashAt": (
                lambda block_id, contract_address: hex(d.class_hash_at(parse_felt(contract_address), block_id)),
                ("block_id", "contract_address"),
            ),
            "starknet_getClass": (
                lambda block_id, class_hash: d.contract_class(parse_felt(class_hash)).sierra,
                ("block_id", "class_hash"),
            ),
            "starknet_getClassAt": (
                lambda block_id, contract_address: (
                    d.contract_class(d.class_hash_at(parse_felt(contract_address), block_id)).sierra
                ),
                ("block_id", "contract_address"),
            ),
            "starknet_getCompiledCasm": (self.compiled_casm, ("class_hash",)),
            "starknet_getStorageAt": (self.storage_at, ("contract_address", "key", "block_id", "response_flags")),
            "starknet_call": (self.call, ("request", "block_id")),
            "starknet_estimateFee": (self.estimate_fee, ("request", "simulation_flags", "block_id")),
            "starknet_simulateTransactions": (self.simulate, ("block_id", "transactions", "simulation_flags")),
            "starknet_addInvokeTransaction": (self.add_invoke, ("invoke_transaction",)),
            "starknet_addDeclareTransaction": (self.add_declare, ("declare_transaction",)),
            "starknet_addDeployAccountTransaction": (self.add_deploy_account, ("deploy_account_transaction",)),
            "starknet_getTransactionByHash": (
                lambda transaction_hash, response_flags=None: d.transaction(parse_felt(transaction_hash)).tx,
                ("transaction_hash", "response_flags"),
            ),
            "starknet_getTransactionByBlockIdAndIndex": (
                lambda block_id, index, response_flags=None: d.transaction_by_index(block_id, int(index)).tx,
                ("block_id", "index", "response_flags"),
            ),
            "starknet_getTransactionReceipt": (self.receipt, ("transaction_hash",)),
            "starknet_getTransactionStatus": (self.status, ("transaction_hash",)),
            "starknet_getEvents": (lambda filter: d.events(filter), ("filter",)),
            "devnet_setTime": (self.set_time, ("time", "generate_block")),
            "devnet_increaseTime": (self.increase_time, ("time", "generate_block")),
            "devnet_createBlock": (lambda: {"block_hash": hex(d.create_block().hash)}, ()),
            "devnet_getPredeployedAccounts": (lambda: [a.to_json() for a in d.accounts], ()),
            "devnet_mint": (self.mint, ("address", "amount", "unit")),
            "devnet_getConfig": (self.config, ()),
        }

    def _block(self, block_id: Any) -> Block | None:
        number = self.devnet.block_number_of(block_id)
        return None if number is None else self.devnet.blocks[number]

    def _records(self, block: Block | None) -> list[TxRecord]:
        return [] if block is None else [self.devnet.txs[h] for h in block.tx_hashes]

    def block_with_tx_hashes(self, block_id: Any) -> dict[str, Any]:
        block = self._block(block_id)
        return {**_header(self.devnet, block), "transactions": [r.tx["transaction_hash"] for r in self._records(block)]}

    def block_with_txs(self, block_id: Any, response_flags: Any = None) -> dict[str, Any]:
        block = self._block(block_id)
        return {**_header(self.devnet, block), "transactions": [r.tx for r in self._records(block)]}

    def block_with_receipts(self, block_id: Any, response_flags: Any = None) -> dict[str, Any]:
        block = self._block(block_id)
        transactions = [{"transaction": r.tx, "receipt": r.receipt} for r in self._records(block)]
        return {**_header(self.devnet, block), "transactions": transactions}

    def block_transaction_count(self, block_id: Any) -> int:
        return len(self._records(self._block(block_id)))

    def state_update(self, block_id: Any, contract_addresses: Any = None) -> dict[str, Any]:
        block = self._block(block_id)
        if block is None:
            from .state import StateDiff

            return {"old_root": "0x0", "state_diff": StateDiff().to_rpc()}
        return {
            "block_hash": hex(block.hash),
            "new_root": "0x0",
            "old_root": "0x0",
            "state_diff": block.state_diff.to_rpc(),
        }

    def compiled_casm(self, class_hash: Any) -> dict[str, Any]:
        casm = self.devnet.contract_class(parse_felt(class_hash)).casm
        return {k: v for k, v in casm.items() if k != "pythonic_hints"}

    def storage_at(self, contract_address: Any, key: Any, block_id: Any, response_flags: Any = None) -> Any:
        value = hex(self.devnet.storage_at(parse_felt(contract_address), parse_felt(key), block_id))
        if response_flags and "INCLUDE_LAST_UPDATE_BLOCK" in response_flags:
            return {"value": value, "last_update_block": self.devnet.latest.number}
        return value

    def call(self, request: dict[str, Any], block_id: Any) -> list[str]:
        self.devnet.block_number_of(block_id)  # an unknown block is an error; known ones run on the latest state
        retdata = self.devnet.call(
            parse_felt(request["contract_address"]),
            parse_felt(request["entry_point_selector"]),
            parse_felts(request.get("calldata", [])),
        )
        return [hex(v) for v in retdata]

    def estimate_fee(self, request: list[Any], simulation_flags: list[str] | None = None, block_id: Any = None) -> Any:
        if block_id is not None:
            self.devnet.block_number_of(block_id)
        usages = self.devnet.estimate_fee(list(request), skip_validate="SKIP_VALIDATE" in (simulation_flags or []))
        return [u.to_estimate() for u in usages]

    def simulate(self, block_id: Any, transactions: list[Any], simulation_flags: list[str] | None = None) -> Any:
        """Simulations never charge the fee (with or without SKIP_FEE_CHARGE; each trace's fee_estimation says what
        it would be); RETURN_INITIAL_READS is not supported."""
        flags = simulation_flags or []
        if "RETURN_INITIAL_READS" in flags:
            raise RpcError(INVALID_PARAMS, data="RETURN_INITIAL_READS is not supported by this devnet")
        self.devnet.block_number_of(block_id)
        outcomes = self.devnet.simulate(list(transactions), skip_validate="SKIP_VALIDATE" in flags)
        return [{"transaction_trace": o.trace(), "fee_estimation": o.gas.to_estimate()} for o in outcomes]

    def add_invoke(self, invoke_transaction: dict[str, Any]) -> dict[str, Any]:
        record, _ = self.devnet.add_transaction(invoke_transaction, "INVOKE")
        return {"transaction_hash": hex(record.hash)}

    def add_declare(self, declare_transaction: dict[str, Any]) -> dict[str, Any]:
        record, outcome = self.devnet.add_transaction(declare_transaction, "DECLARE")
        return {"transaction_hash": hex(record.hash), "class_hash": hex(outcome.tx.class_hash)}

    def add_deploy_account(self, deploy_account_transaction: dict[str, Any]) -> dict[str, Any]:
        record, outcome = self.devnet.add_transaction(deploy_account_transaction, "DEPLOY_ACCOUNT")
        return {"transaction_hash": hex(record.hash), "contract_address": hex(outcome.tx.sender)}

    def receipt(self, transaction_hash: Any) -> dict[str, Any]:
        record = self.devnet.transaction(parse_felt(transaction_hash))
        block = self.devnet.blocks[record.block_number]
        return {**record.receipt, "block_hash": hex(block.hash), "block_number": block.number}

    def status(self, transaction_hash: Any) -> dict[str, Any]:
        receipt = self.devnet.transaction(parse_felt(transaction_hash)).receipt
        status = {"finality_status": receipt["finality_status"], "execution_status": receipt["execution_status"]}
        if "revert_reason" in receipt:
            status["failure_reason"] = receipt["revert_reason"]
        return status

    def set_time(self, time: int, generate_block: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = {"block_timestamp": self.devnet.set_time(int(time))}
        if generate_block:
            result["block_hash"] = hex(self.devnet.create_block().hash)
        return result

    def increase_time(self, time: int, generate_block: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = {"timestamp_increased_by": int(time), "now": self.devnet.increase_time(int(time))}
        if generate_block:
            result["block_hash"] = hex(self.devnet.create_block().hash)
        return result

    def mint(self, address: Any, amount: Any, unit: str = "FRI") -> dict[str, Any]:
        """Mint fee token to an address (a faucet: no transaction, a block of its own). Only FRI (STRK) exists here."""
        if unit != "FRI":
            raise RpcError(INVALID_PARAMS, data=f"unit {unit!r}: this devnet's only fee token is STRK (FRI)")
        value = int(amount) if isinstance(amount, int) else parse_felt(amount)
        balance = self.devnet.mint(parse_felt(address), value)
        return {"new_balance": str(balance), "unit": "FRI", "block_hash": hex(self.devnet.latest.hash)}

    def config(self) -> dict[str, Any]:
        d = self.devnet
        return {
            "chain_id": d.chain_id_text,
            "seed": d.seed,
            "starknet_version": STARKNET_VERSION,
            "spec_version": RPC_SPEC_VERSION,
            "account_class_hash": hex(d.account_class_hash),
            "udc_address": hex(UDC_ADDRESS),
            "fees_charged": True,
            "fee_token": hex(feetoken.ADDRESS),
            "state_dir": str(d.files.root) if d.files is not None else None,
            "ready": self.ready,
        }

    def run(self, method: str, params: Any) -> Any:
        entry = self.table.get(method)
        if entry is None:
            raise RpcError(METHOD_NOT_FOUND, data=method)
        handler, names = entry
        if params is None:
            params = {}
        if isinstance(params, list):
            if len(params) > len(names):
                raise RpcError(INVALID_PARAMS, data=f"{method} takes at most {len(names)} params")
            params = dict(zip(names, params, strict=False))
        if not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, data="params must be an object or an array")
        unknown = set(params) - set(names)
        if unknown:
            raise RpcError(INVALID_PARAMS, data=f"unexpected params {sorted(unknown)}")
        try:
            inspect.signature(handler).bind(**params)
        except TypeError as exc:  # a missing param
            raise RpcError(INVALID_PARAMS, data=f"{method}: {exc}") from exc
        try:
            return handler(**params)
        except (KeyError, ValueError) as exc:  # malformed values (felts, transactions, filters)
            raise RpcError(INVALID_PARAMS, data=repr(exc)) from exc


class RpcServer:
    def __init__(self, devnet: Devnet, *, ready: bool = True) -> None:
        self.devnet = devnet
        self.methods = Methods(devnet, ready=ready)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ciro-devnet")

    @property
    def ready(self) -> bool:
        return self.methods.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self.methods.ready = value

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/is_alive", self._alive)
        app.router.add_post("/{tail:.*}", self._post)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _shutdown(self, app: web.Application) -> None:
        self.executor.shutdown(wait=True)

    async def _alive(self, request: web.Request) -> web.Response:
        return web.Response(text="Alive!!!")

    async def _post(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response(_error(None, RpcError(PARSE_ERROR)))
        if isinstance(body, list):
            if not body:
                return web.json_response(_error(None, RpcError(INVALID_REQUEST)))
            answers = [await self.dispatch(message) for message in body]
            return web.json_response([a for a in answers if a is not None])
        answer = await self.dispatch(body)
        return web.json_response(answer) if answer is not None else web.Response(status=204)

    async def dispatch(self, message: Any) -> dict[str, Any] | None:
        if (
            not isinstance(message, dict)
            or message.get("jsonrpc") != "2.0"
            or not isinstance(message.get("method"), str)
        ):
            return _error(message.get("id") if isinstance(message, dict) else None, RpcError(INVALID_REQUEST))
        request_id = message.get("id")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self.executor, self.methods.run, message["method"], message.get("params")
            )
        except RpcError as exc:
            if exc.code in (INTERNAL_ERROR, UNEXPECTED_ERROR, CLASS_HASH_NOT_FOUND):
                log.debug("%s -> %s", message["method"], exc)
            return _error(request_id, exc)
        except Exception as exc:
            log.exception("%s failed", message["method"])
            return _error(request_id, RpcError(UNEXPECTED_ERROR, data=f"{type(exc).__name__}: {exc}"))
        if "id" not in message:
            return None  # a notification
        return {"jsonrpc": "2.0", "id": request_id, "result": result}


def _error(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}
