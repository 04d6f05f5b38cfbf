"""The devnet chain: blocks (one per transaction), transactions, receipts, events, predeployed accounts, time.

`Devnet` is synchronous and not thread-safe: the RPC server runs every call on one worker thread. It is also the
API for tools that prepare a chain without transactions (`declare_class`, `deploy_predeclared`, `set_storage`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import fees
from .accounts import PredeployedAccount, derive_accounts
from .build import compiled_dir
from .classes import ContractClassArtifact, artifact_from_sierra, load_artifact
from .errors import (
    BLOCK_NOT_FOUND,
    CLASS_ALREADY_DECLARED,
    CLASS_HASH_NOT_FOUND,
    COMPILED_CLASS_HASH_MISMATCH,
    CONTRACT_ERROR,
    CONTRACT_NOT_FOUND,
    DUPLICATE_TX,
    INSUFFICIENT_RESOURCES_FOR_VALIDATE,
    INVALID_CONTINUATION_TOKEN,
    INVALID_PARAMS,
    INVALID_TRANSACTION_NONCE,
    INVALID_TXN_INDEX,
    PAGE_SIZE_TOO_BIG,
    TRANSACTION_EXECUTION_ERROR,
    TXN_HASH_NOT_FOUND,
    UNSUPPORTED_TX_VERSION,
    VALIDATION_FAILURE,
    RpcError,
)
from .felts import encode_short_string, parse_felt
from .persist import ChainFiles
from .state import StateDiff, StateStore
from .txs import ParsedTx, parse_transaction

if TYPE_CHECKING:
    from .vm import VM, BlockContext, CallOutcome, Execution

STARKNET_VERSION = "0.14.0"  # below 0.14.1: starknet-py then hashes CASM with Poseidon, as cairo-lang does
RPC_SPEC_VERSION = "0.10.2"
DEFAULT_CHAIN_ID = "SN_CIRO_DEV"
SEQUENCER_ADDRESS = 0x1000
# The Universal Deployer starknet-py 0.30 calls by default, and the legacy one.
UDC_ADDRESS = 0x02CEED65A4BD731034C01113685C831B01C15D7D432F71AFB1CF1634B53A2125
LEGACY_UDC_ADDRESS = 0x041A78E741E5AF2FEC34B695679BC6891742439F7AFB8484ECD7766661AD02BF
VALID = encode_short_string("VALID")
MAX_EVENTS_CHUNK = 1000
TAGS = ("latest", "pre_confirmed", "l1_accepted")


def _selector(name: str) -> int:
    from starknet_py.hash.selector import get_selector_from_name

    return int(get_selector_from_name(name))


@dataclass
class Block:
    number: int
    hash: int
    parent_hash: int
    timestamp: int
    tx_hashes: list[int]
    state_diff: StateDiff

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "hash": hex(self.hash),
            "parent_hash": hex(self.parent_hash),
            "timestamp": self.timestamp,
            "tx_hashes": [hex(h) for h in self.tx_hashes],
            "state_diff": self.state_diff.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Block:
        return cls(
            number=data["number"],
            hash=int(data["hash"], 16),
            parent_hash=int(data["parent_hash"], 16),
            timestamp=data["timestamp"],
            tx_hashes=[int(h, 16) for h in data["tx_hashes"]],
            state_diff=StateDiff.from_json(data["state_diff"]),
        )


@dataclass
class TxRecord:
    """An included transaction: its RPC form and its receipt (without the block fields)."""

    hash: int
    block_number: int
    index: int
    tx: dict[str, Any]
    receipt: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"block_number": self.block_number, "index": self.index, "tx": self.tx, "receipt": self.receipt}

    @classmethod
    def from_json(cls, tx_hash: str, data: dict[str, Any]) -> TxRecord:
        return cls(int(tx_hash, 16), data["block_number"], data["index"], data["tx"], data["receipt"])


@dataclass
class TxOutcome:
    """A transaction that passed validation: what its receipt says."""

    tx: ParsedTx
    reverted: bool
    revert_reason: str | None
    events: list[Any]  # vm.Event
    gas: fees.GasUsage
    contract_address: int | None = None  # DEPLOY_ACCOUNT
    artifact: ContractClassArtifact | None = None  # DECLARE
    state_diff: StateDiff = field(default_factory=StateDiff)
    validate_trace: dict[str, Any] | None = None
    execute_trace: dict[str, Any] | None = None  # __execute__ (INVOKE) or the constructor (DEPLOY_ACCOUNT)
    resources: Any = None  # vm.Resources: Cairo steps, builtins and syscalls of validation and execution

    def trace(self) -> dict[str, Any]:
        """The TRANSACTION_TRACE of `starknet_simulateTransactions`."""
        trace: dict[str, Any] = {
            "type": self.tx.type,
            "execution_resources": self.gas.to_resources(),
            "state_diff": self.state_diff.to_rpc(),
        }
        if self.validate_trace is not None:
            trace["validate_invocation"] = self.validate_trace
        if self.tx.type == "INVOKE":
            if self.reverted or self.execute_trace is None:
                trace["execute_invocation"] = {"revert_reason": self.revert_reason or "reverted"}
            else:
                trace["execute_invocation"] = self.execute_trace
        elif self.tx.type == "DEPLOY_ACCOUNT":
            trace["constructor_invocation"] = self.execute_trace
        return trace


class Devnet:
    """A local Starknet chain. `state_dir` makes it persistent: saved after each block, reloaded at start."""

    def __init__(
        self,
        *,
        accounts: int = 10,
        seed: int = 0,
        chain_id: str = DEFAULT_CHAIN_ID,
        state_dir: str | Path | None = None,
        contracts_dir: str | Path | None = None,
    ) -> None:
        from .vm import VM

        self.files = ChainFiles(Path(state_dir)) if state_dir is not None else None
        self.store = StateStore()
        self.blocks: list[Block] = []
        self.txs: dict[int, TxRecord] = {}
        self.time_offset = 0
        self._artifacts: dict[int, ContractClassArtifact] = {}  # compiled classes seen, declared or not
        saved = self.files.load() if self.files is not None else None
        self.restored = saved is not None  # loaded from state_dir (accounts, seed and chain id are the saved ones)
        if saved is not None:
            self.chain_id_text = saved["chain_id"]
            self.seed = saved["seed"]
            self.accounts = [PredeployedAccount.from_json(a) for a in saved["accounts"]]
            self.account_class_hash = int(saved["account_class_hash"], 16)
            self.time_offset = saved["time_offset"]
            self.store = StateStore.from_json(saved["state"], saved["classes"])
            for line in saved["blocks"]:
                self.blocks.append(Block.from_json(line["block"]))
                self.txs.update((int(h, 16), TxRecord.from_json(h, t)) for h, t in line["txs"].items())
            self.vm: VM = VM(self.store, encode_short_string(self.chain_id_text))
        else:
            self.chain_id_text = chain_id
            self.seed = seed
            self.vm = VM(self.store, encode_short_string(chain_id))
            self._genesis(accounts, Path(contracts_dir) if contracts_dir is not None else compiled_dir())
        self.chain_id = encode_short_string(self.chain_id_text)

    # Genesis and direct state changes (no transactions).

    def _genesis(self, n_accounts: int, contracts: Path) -> None:
        if not (contracts / "CiroAccount.sierra.json").exists():
            raise FileNotFoundError(
                f"no compiled CiroAccount in {contracts}: run `make contracts` in a checkout, or pass "
                "contracts_dir= a folder with CiroAccount/UniversalDeployer "
                "*.sierra.json and *.casm.json"
            )
        account = load_artifact(contracts / "CiroAccount.sierra.json", contracts / "CiroAccount.casm.json")
        udc = load_artifact(contracts / "UniversalDeployer.sierra.json", contracts / "UniversalDeployer.casm.json")
        self.account_class_hash = account.class_hash
        self.accounts = derive_accounts(self.seed, n_accounts, account.class_hash)
        ex = self.vm.begin(self._block_context())
        for artifact in (account, udc):
            self._add_artifact(artifact)
            ex.declare(artifact.class_hash, artifact.compiled_class_hash)
        for address in (UDC_ADDRESS, LEGACY_UDC_ADDRESS):
            _check(ex.deploy(address, udc.class_hash, []), "deploy the UDC")
        for acc in self.accounts:
            _check(ex.deploy(acc.address, account.class_hash, [acc.public_key]), "deploy an account")
        self._seal_block(ex.diff(), [])

    def declare_class(self, sierra_path: str | Path, casm_path: str | Path | None = None) -> int:
        """Declare a compiled class without a transaction (in a block of its own); returns its class hash."""
        artifact = load_artifact(sierra_path, casm_path)
        if not self.store.is_declared(artifact.class_hash):
            self._add_artifact(artifact)
            ex = self.vm.begin(self._block_context())
            ex.declare(artifact.class_hash, artifact.compiled_class_hash)
            self._seal_block(ex.diff(), [])
        return artifact.class_hash

    def deploy_predeclared(
        self, class_hash: int, constructor_calldata: list[int] | None = None, *, salt: int = 0, deployer: int = 0
    ) -> int:
        """Deploy a declared class without a transaction (its constructor runs, caller `deployer`); returns the
        address, computed as Starknet does (deploy_syscall from `deployer`, or from zero when 0)."""
        from starknet_py.hash.address import compute_address

        calldata = list(constructor_calldata or [])
        address = int(
            compute_address(class_hash=class_hash, constructor_calldata=calldata, salt=salt, deployer_address=deployer)
        )
        ex = self.vm.begin(self._block_context())
        outcome = ex.deploy(address, class_hash, calldata, deployer_address=deployer)
        if outcome.failed:
            raise RpcError(TRANSACTION_EXECUTION_ERROR, data={"transaction_index": 0, "execution_error": outcome.error})
        self._seal_block(ex.diff(), [])
        return address

    def set_storage(self, address: int, key: int, value: int) -> None:
        """Write a storage cell directly (in a block of its own), e.g. to mint test balances."""
        self._seal_block(StateDiff(storage={(address, key): value}), [])

    # Time.

    def now(self) -> int:
        return int(time.time()) + self.time_offset

    def set_time(self, timestamp: int) -> int:
        """The next blocks' timestamps start from `timestamp`; returns it. Earlier than the last block is refused."""
        if timestamp < self.blocks[-1].timestamp:
            raise RpcError(
                INVALID_PARAMS, data=f"time {timestamp} is before the last block's {self.blocks[-1].timestamp}"
            )
        self.time_offset = timestamp - int(time.time())
        self._save()
        return timestamp

    def increase_time(self, seconds: int) -> int:
        """Move the clock forward; returns the new time."""
        if seconds < 0:
            raise RpcError(INVALID_PARAMS, data="time only moves forward")
        self.time_offset += seconds
        self._save()
        return self.now()

    def create_block(self) -> Block:
        """Mine an empty block (at the current time)."""
        return self._seal_block(StateDiff(), [])

    # Transactions.

    def add_transaction(self, data: dict[str, Any], expected_type: str) -> tuple[TxRecord, TxOutcome]:
        """Validate, execute and include one broadcasted transaction (a block of its own)."""
        tx = parse_transaction(data, self.chain_id, expected_type)
        if tx.is_query:
            raise RpcError(UNSUPPORTED_TX_VERSION, data="query versions (2^128 + 3) are for estimates only")
        if tx.hash in self.txs:
            raise RpcError(DUPLICATE_TX, data=hex(tx.hash))
        self._check_bounds_prices(tx)
        block = self._block_context()
        ex = self.vm.begin(block)
        outcome = self._execute(ex, tx, validate=True, enforce_bounds=True)
        if outcome.artifact is not None:
            self._add_artifact(outcome.artifact)
        record = TxRecord(tx.hash, block.number, 0, tx.to_rpc(), self._receipt(outcome))
        self.txs[tx.hash] = record
        self._seal_block(outcome.state_diff, [tx.hash], timestamp=block.timestamp)
        return record, outcome

    def estimate_fee(self, transactions: list[Any], skip_validate: bool) -> list[fees.GasUsage]:
        """Each transaction's gas, run one after the other on a scratch copy of the state; a revert is an error."""
        outcomes = self.simulate(transactions, skip_validate)
        for index, outcome in enumerate(outcomes):
            if outcome.reverted:
                raise RpcError(
                    TRANSACTION_EXECUTION_ERROR,
                    data={"transaction_index": index, "execution_error": outcome.revert_reason},
                )
        return [outcome.gas for outcome in outcomes]

    def simulate(self, transactions: list[Any], skip_validate: bool) -> list[TxOutcome]:
        """Run transactions one after the other on a scratch copy of the state (nothing is kept). A transaction
        that would be rejected is an error (41); a reverted one is an outcome."""
        scratch = self.vm.begin(self._block_context())
        outcomes = []
        for index, data in enumerate(transactions):
            tx = parse_transaction(data, self.chain_id)
            ex = scratch.child()  # one transaction's writes (its state diff), then kept for the next ones
            try:
                outcomes.append(self._execute(ex, tx, validate=not skip_validate, enforce_bounds=False))
                scratch.merge(ex)
            except RpcError as exc:
                reason = exc.data if isinstance(exc.data, str) else exc.message
                raise RpcError(
                    TRANSACTION_EXECUTION_ERROR, data={"transaction_index": index, "execution_error": reason}
                ) from exc
        return outcomes

    def call(self, address: int, selector: int, calldata: list[int]) -> list[int]:
        """A view call on the latest state; nothing is written."""
        ex = self.vm.begin(self._block_context())
        if ex.class_hash_at(address) == 0:
            raise RpcError(CONTRACT_NOT_FOUND)
        outcome = ex.call(address, selector, calldata)
        if outcome.failed:
            raise RpcError(CONTRACT_ERROR, data={"revert_error": outcome.error})
        return outcome.retdata

    def _check_bounds_prices(self, tx: ParsedTx) -> None:
        bounds = tx.resource_bounds
        if all(b.max_amount == 0 for b in bounds.values()):
            raise RpcError(INSUFFICIENT_RESOURCES_FOR_VALIDATE, data="all resource bounds are zero")
        prices = {"l1_gas": fees.L1_GAS_PRICE, "l2_gas": fees.L2_GAS_PRICE, "l1_data_gas": fees.L1_DATA_GAS_PRICE}
        for name, price in prices.items():
            if bounds[name].max_amount > 0 and bounds[name].max_price_per_unit < price:
                raise RpcError(
                    INSUFFICIENT_RESOURCES_FOR_VALIDATE,
                    data=f"max price per unit of {name} {bounds[name].max_price_per_unit} is below its price {price}",
                )

    def _execute(self, ex: Execution, tx: ParsedTx, *, validate: bool, enforce_bounds: bool) -> TxOutcome:
        """Run a transaction on `ex`, keeping its writes there. Raises RpcError where it would be rejected."""
        from .vm import TxContext

        context = TxContext(
            account_address=tx.sender,
            transaction_hash=tx.hash,
            signature=tuple(tx.signature),
            nonce=tx.nonce,
            version=tx.version,
        )
        validation = dataclasses.replace(context, validate=True)
        step = ex.child()
        execution: CallOutcome | None = None
        artifact = None
        code_bytes = 0
        if tx.type == "DEPLOY_ACCOUNT":
            if step.compiled_class_hash(tx.class_hash) == 0:
                raise RpcError(CLASS_HASH_NOT_FOUND, data=hex(tx.class_hash))
            self._check_nonce(step, tx)
            execution = step.deploy(tx.sender, tx.class_hash, tx.constructor_calldata, tx=context)
            if execution.failed:
                raise RpcError(VALIDATION_FAILURE, data=f"the account's constructor failed: {execution.error}")
            checks = []
            if validate:
                calldata = [tx.class_hash, tx.contract_address_salt, *tx.constructor_calldata]
                checks.append(step.call(tx.sender, _selector("__validate_deploy__"), calldata, tx=validation))
        else:
            if step.class_hash_at(tx.sender) == 0:
                raise RpcError(VALIDATION_FAILURE, data=f"no contract is deployed at the sender {hex(tx.sender)}")
            self._check_nonce(step, tx)
            checks = []
            if tx.type == "DECLARE":
                if step.compiled_class_hash(tx.class_hash) != 0:
                    raise RpcError(CLASS_ALREADY_DECLARED, data=hex(tx.class_hash))
                artifact = self._artifact_for(tx)
                code_bytes = 32 * (len(artifact.sierra["sierra_program"]) + len(artifact.casm["bytecode"]))
                code_bytes += len(artifact.sierra["abi"])
                if validate:
                    checks.append(
                        step.call(tx.sender, _selector("__validate_declare__"), [tx.class_hash], tx=validation)
                    )
            elif validate:
                checks.append(step.call(tx.sender, _selector("__validate__"), tx.calldata, tx=validation))
        for check in checks:
            if check.failed:
                raise RpcError(VALIDATION_FAILURE, data=check.error)
            if check.retdata != [VALID]:
                raise RpcError(
                    VALIDATION_FAILURE, data=f"the account's validation returned {check.retdata}, not 'VALID'"
                )
        step.increment_nonce(tx.sender)
        ex.merge(step)

        reverted, reason, events = False, None, list(execution.events) if execution else []
        work = ex.child()
        if tx.type == "INVOKE":
            execution = work.call(tx.sender, _selector("__execute__"), tx.calldata, tx=context)
            reverted, reason, events = execution.failed, execution.error, execution.events
        elif tx.type == "DECLARE":
            assert artifact is not None
            work.declare(artifact.class_hash, artifact.compiled_class_hash)
        resources = sum((c.resources for c in checks), execution.resources if execution else _empty_resources())
        diff = ex.diff() if reverted else _merged_diff(ex, work)
        gas = fees.gas_usage(
            tx_type={"INVOKE": "INVOKE_FUNCTION"}.get(tx.type, tx.type),
            n_steps=resources.n_steps,
            builtins=resources.builtins,
            syscalls=resources.syscalls,
            calldata_length=len(tx.calldata) + len(tx.constructor_calldata),
            signature_length=len(tx.signature),
            events=[] if reverted else [(len(e.keys), len(e.data)) for e in events],
            state_diff=diff,
            code_bytes=code_bytes,
        )
        if not reverted and enforce_bounds:
            reason = _bounds_shortfall(tx, gas)
            reverted = reason is not None
        if reverted:
            events = []
        else:
            ex.merge(work)
        return TxOutcome(
            tx=tx,
            reverted=reverted,
            revert_reason=reason,
            events=events,
            gas=gas,
            contract_address=tx.sender if tx.type == "DEPLOY_ACCOUNT" else None,
            artifact=artifact,
            state_diff=ex.diff(),
            validate_trace=checks[0].trace if checks else None,
            execute_trace=execution.trace if execution is not None else None,
            resources=resources,
        )

    def _check_nonce(self, ex: Execution, tx: ParsedTx) -> None:
        nonce = ex.nonce(tx.sender)
        if tx.nonce != nonce:
            raise RpcError(
                INVALID_TRANSACTION_NONCE,
                data=f"Invalid transaction nonce of contract at address {hex(tx.sender)}. "
                f"Account nonce: {hex(nonce)}; got: {hex(tx.nonce)}.",
            )

    def _artifact_for(self, tx: ParsedTx) -> ContractClassArtifact:
        """The declared class, compiled to CASM here (once per class hash); its compiled hash must match the tx's."""
        artifact = self._artifacts.get(tx.class_hash) or self.store.classes.get(tx.class_hash)
        if artifact is None:
            assert tx.sierra is not None
            artifact = artifact_from_sierra(tx.sierra)
            self._artifacts[artifact.class_hash] = artifact
        if artifact.compiled_class_hash != tx.compiled_class_hash:
            raise RpcError(
                COMPILED_CLASS_HASH_MISMATCH,
                data=f"the transaction says {hex(tx.compiled_class_hash)}, the class compiles to "
                f"{hex(artifact.compiled_class_hash)} (Poseidon CASM hash, Starknet {STARKNET_VERSION})",
            )
        # The VM looks classes up in the store's class table, declared or not (a declare being executed).
        self.store.add_class(artifact)
        return artifact

    def _add_artifact(self, artifact: ContractClassArtifact) -> None:
        self._artifacts[artifact.class_hash] = artifact
        self.store.add_class(artifact)

    def _receipt(self, outcome: TxOutcome) -> dict[str, Any]:
        receipt: dict[str, Any] = {
            "type": outcome.tx.type,
            "transaction_hash": hex(outcome.tx.hash),
            "actual_fee": {"amount": hex(outcome.gas.fee), "unit": "FRI"},
            "execution_status": "REVERTED" if outcome.reverted else "SUCCEEDED",
            "finality_status": "ACCEPTED_ON_L2",
            "messages_sent": [],
            "events": [
                {
                    "from_address": hex(e.from_address),
                    "keys": [hex(k) for k in e.keys],
                    "data": [hex(d) for d in e.data],
                }
                for e in outcome.events
            ],
            "execution_resources": outcome.gas.to_resources(),
        }
        if outcome.reverted:
            receipt["revert_reason"] = outcome.revert_reason
        if outcome.contract_address is not None:
            receipt["contract_address"] = hex(outcome.contract_address)
        return receipt

    # Blocks.

    def _block_context(self) -> BlockContext:
        from .vm import BlockContext

        last = self.blocks[-1].timestamp if self.blocks else 0
        return BlockContext(
            number=len(self.blocks),
            timestamp=max(self.now(), last),
            sequencer_address=SEQUENCER_ADDRESS,
            starknet_version=STARKNET_VERSION,
            l1_gas_price=fees.L1_GAS_PRICE,
            l1_data_gas_price=fees.L1_DATA_GAS_PRICE,
            l2_gas_price=fees.L2_GAS_PRICE,
        )

    def _seal_block(self, diff: StateDiff, tx_hashes: list[int], timestamp: int | None = None) -> Block:
        from starknet_py.hash.utils import compute_hash_on_elements

        number = len(self.blocks)
        parent = self.blocks[-1].hash if self.blocks else 0
        stamp = timestamp if timestamp is not None else max(self.now(), self.blocks[-1].timestamp if self.blocks else 0)
        block_hash = int(compute_hash_on_elements([number, parent, stamp, SEQUENCER_ADDRESS, *tx_hashes]))
        block = Block(number, block_hash, parent, stamp, tx_hashes, diff)
        self.store.apply(diff)
        self.blocks.append(block)
        if self.files is not None:
            for class_hash in diff.declared:
                self.files.save_class(self.store.classes[class_hash])
            txs = {hex(h): self.txs[h].to_json() for h in tx_hashes}
            self.files.append_block({"block": block.to_json(), "txs": txs})
        self._save()
        return block

    def _save(self) -> None:
        """Rewrite state.json (the blocks are appended to blocks.jsonl as they are sealed)."""
        if self.files is None:
            return
        self.files.save_state(
            {
                "chain_id": self.chain_id_text,
                "seed": self.seed,
                "accounts": [a.to_json() for a in self.accounts],
                "account_class_hash": hex(self.account_class_hash),
                "time_offset": self.time_offset,
                "block_count": len(self.blocks),
                "state": self.store.to_json(),
            }
        )

    # Queries.

    @property
    def latest(self) -> Block:
        return self.blocks[-1]

    def block_number_of(self, block_id: Any) -> int | None:
        """The block a BLOCK_ID names; None for the pre-confirmed (pending) block."""
        if block_id == "pre_confirmed":
            return None
        if block_id in ("latest", "l1_accepted"):
            return self.latest.number
        if isinstance(block_id, dict) and "block_number" in block_id:
            number = block_id["block_number"]
            if not isinstance(number, int) or not 0 <= number < len(self.blocks):
                raise RpcError(BLOCK_NOT_FOUND)
            return number
        if isinstance(block_id, dict) and "block_hash" in block_id:
            wanted = parse_felt(block_id["block_hash"])
            for block in self.blocks:
                if block.hash == wanted:
                    return block.number
            raise RpcError(BLOCK_NOT_FOUND)
        raise RpcError(INVALID_PARAMS, data=f"bad block id {block_id!r}")

    def _historical(self, block_id: Any, pick: Any, current: int) -> int:
        """A state value as of a block: the latest write at or before it in the block diffs."""
        number = self.block_number_of(block_id)
        if number is None or number == self.latest.number:
            return current
        for block in reversed(self.blocks[: number + 1]):
            value = pick(block.state_diff)
            if value is not None:
                return int(value)
        return 0

    def storage_at(self, address: int, key: int, block_id: Any) -> int:
        self._require_contract(address, block_id)
        return self._historical(block_id, lambda d: d.storage.get((address, key)), self.store.storage_at(address, key))

    def nonce_at(self, address: int, block_id: Any) -> int:
        self._require_contract(address, block_id)
        return self._historical(block_id, lambda d: d.nonces.get(address), self.store.nonce(address))

    def class_hash_at(self, address: int, block_id: Any) -> int:
        class_hash = self._historical(block_id, lambda d: d.deployed.get(address), self.store.class_hash_at(address))
        if class_hash == 0:
            raise RpcError(CONTRACT_NOT_FOUND)
        return class_hash

    def _require_contract(self, address: int, block_id: Any) -> None:
        self.class_hash_at(address, block_id)

    def contract_class(self, class_hash: int) -> ContractClassArtifact:
        if not self.store.is_declared(class_hash):
            raise RpcError(CLASS_HASH_NOT_FOUND)
        return self.store.classes[class_hash]

    def transaction(self, tx_hash: int) -> TxRecord:
        record = self.txs.get(tx_hash)
        if record is None:
            raise RpcError(TXN_HASH_NOT_FOUND)
        return record

    def transaction_by_index(self, block_id: Any, index: int) -> TxRecord:
        number = self.block_number_of(block_id)
        hashes = self.blocks[number].tx_hashes if number is not None else []
        if not 0 <= index < len(hashes):
            raise RpcError(INVALID_TXN_INDEX)
        return self.txs[hashes[index]]

    def events(self, query: dict[str, Any]) -> dict[str, Any]:
        """`starknet_getEvents`: events of accepted blocks matching the filter, a chunk at a time."""
        chunk_size = int(query.get("chunk_size", 0))
        if chunk_size <= 0:
            raise RpcError(INVALID_PARAMS, data="chunk_size must be positive")
        if chunk_size > MAX_EVENTS_CHUNK:
            raise RpcError(PAGE_SIZE_TOO_BIG)
        first = self._range_end(query.get("from_block"), default=0)
        last = self._range_end(query.get("to_block"), default=self.latest.number)
        address = query.get("address")
        addresses = {parse_felt(a) for a in (address if isinstance(address, list) else [address])} if address else None
        keys = [{parse_felt(k) for k in position} for position in query.get("keys", [])]
        token = query.get("continuation_token")
        try:
            skip = int(token) if token is not None else 0
        except ValueError as exc:
            raise RpcError(INVALID_CONTINUATION_TOKEN) from exc
        if skip < 0:
            raise RpcError(INVALID_CONTINUATION_TOKEN)
        matched: list[dict[str, Any]] = []
        seen = 0
        for block in self.blocks[first : last + 1]:
            for index, tx_hash in enumerate(block.tx_hashes):
                for event_index, event in enumerate(self.txs[tx_hash].receipt["events"]):
                    if not _event_matches(event, addresses, keys):
                        continue
                    seen += 1
                    if seen <= skip:
                        continue
                    if len(matched) == chunk_size:
                        return {"events": matched, "continuation_token": str(skip + chunk_size)}
                    matched.append(
                        {
                            **event,
                            "block_hash": hex(block.hash),
                            "block_number": block.number,
                            "transaction_hash": hex(tx_hash),
                            "transaction_index": index,
                            "event_index": event_index,
                        }
                    )
        return {"events": matched}

    def _range_end(self, block_id: Any, default: int) -> int:
        if block_id is None:
            return default
        number = self.block_number_of(block_id)
        return self.latest.number if number is None else number


def _event_matches(event: dict[str, Any], addresses: set[int] | None, keys: list[set[int]]) -> bool:
    if addresses is not None and int(event["from_address"], 16) not in addresses:
        return False
    event_keys = [int(k, 16) for k in event["keys"]]
    for position, allowed in enumerate(keys):
        if not allowed:
            continue
        if position >= len(event_keys) or event_keys[position] not in allowed:
            return False
    return True


def _check(outcome: CallOutcome, what: str) -> None:
    if outcome.failed:
        raise RuntimeError(f"genesis: could not {what}: {outcome.error}")


def _empty_resources() -> Any:
    from .vm import Resources

    return Resources()


def _merged_diff(ex: Execution, work: Execution) -> StateDiff:
    """The diff `ex` would have once `work` (its child) is merged, without merging it."""
    diff = ex.diff()
    extra = work.diff()
    return StateDiff(
        storage={**diff.storage, **extra.storage},
        nonces={**diff.nonces, **extra.nonces},
        deployed={**diff.deployed, **extra.deployed},
        declared={**diff.declared, **extra.declared},
    )


def _bounds_shortfall(tx: ParsedTx, gas: fees.GasUsage) -> str | None:
    """Why the transaction's resource bounds do not cover what it used, if they do not."""
    used = {
        "l1_gas": ("L1Gas", gas.l1_gas),
        "l2_gas": ("L2Gas", gas.l2_gas),
        "l1_data_gas": ("L1DataGas", gas.l1_data_gas),
    }
    for name, (label, amount) in used.items():
        bound = tx.resource_bounds[name].max_amount
        if amount > bound:
            return f"Insufficient max {label}: max amount: {bound}, actual used: {amount}."
    return None
