"""Execution of Cairo 1 entry points on StarkWare's Python Cairo VM (cairo-lang's Starknet business logic).

This module imports cairo-lang at import time (~2.5 s); the rest of `ciro_devnet` imports it lazily. The package's
`__init__` installs the import fix (`_cairo_fix`) that cairo-lang needs on Python 3.11 before this module loads.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starkware.cairo.lang.vm.utils import RunResources
from starkware.cairo.lang.vm.vm_exceptions import HintException, VmException
from starkware.starknet.business_logic.execution.deprecated_objects import (
    ExecutionResourcesManager,
)
from starkware.starknet.business_logic.execution.execute_entry_point import ExecuteEntryPoint
from starkware.starknet.business_logic.execution.objects import (
    CallInfo,
    CallType,
    TransactionExecutionContext,
)
from starkware.starknet.business_logic.state.state import CachedSyncState
from starkware.starknet.business_logic.state.state_api import SyncStateReader
from starkware.starknet.business_logic.state.state_api_objects import BlockInfo, ResourcePrice
from starkware.starknet.core.os.syscall_utils import HandlerException
from starkware.starknet.definitions.constants import VERSIONED_CONSTANTS, GasCost
from starkware.starknet.definitions.data_availability_mode import DataAvailabilityMode
from starkware.starknet.definitions.error_codes import StarknetErrorCode
from starkware.starknet.definitions.execution_mode import ExecutionMode
from starkware.starknet.definitions.general_config import StarknetGeneralConfig
from starkware.starknet.public.abi import CONSTRUCTOR_ENTRY_POINT_SELECTOR
from starkware.starknet.services.api.contract_class.contract_class import (
    CompiledClass,
    CompiledClassBase,
    ContractClass,
    EntryPointType,
)
from starkware.starkware_utils.error_handling import StarkException

from ._cairo_math import install as _install_fast_math
from ._cairo_runs import install as _install_run_caches
from .felts import describe_felts
from .state import StateDiff, StateStore

_install_fast_math()  # cairo-lang's modular inverse and square root, faster (same results)
_install_run_caches()  # hints compiled once, builtin security checks walk memory once (same checks)

L1 = DataAvailabilityMode.L1
MAX_STEPS_EXECUTE = VERSIONED_CONSTANTS.invoke_tx_max_n_steps
MAX_STEPS_VALIDATE = VERSIONED_CONSTANTS.validate_max_n_steps
INITIAL_GAS = GasCost.DEFAULT_INITIAL.value


@dataclass(frozen=True)
class BlockContext:
    """What a contract sees of the block it runs in (`get_block_info()`), plus the gas prices in fri."""

    number: int
    timestamp: int
    sequencer_address: int
    starknet_version: str
    l1_gas_price: int
    l1_data_gas_price: int
    l2_gas_price: int


@dataclass(frozen=True)
class TxContext:
    """What a contract sees of the transaction it runs in (`get_tx_info()`)."""

    account_address: int = 0
    transaction_hash: int = 0
    signature: tuple[int, ...] = ()
    nonce: int = 0
    version: int = 3
    validate: bool = False  # the validation phase (`__validate*__`): fewer steps, restricted syscalls


@dataclass(frozen=True)
class Event:
    from_address: int
    keys: list[int]
    data: list[int]


@dataclass
class Resources:
    """Cairo resources used: VM steps, builtin applications, syscalls."""

    n_steps: int = 0
    n_memory_holes: int = 0
    builtins: dict[str, int] = field(default_factory=dict)
    syscalls: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: Resources) -> Resources:
        builtins = dict(self.builtins)
        for name, count in other.builtins.items():
            builtins[name] = builtins.get(name, 0) + count
        syscalls = dict(self.syscalls)
        for name, count in other.syscalls.items():
            syscalls[name] = syscalls.get(name, 0) + count
        return Resources(
            n_steps=self.n_steps + other.n_steps,
            n_memory_holes=self.n_memory_holes + other.n_memory_holes,
            builtins=builtins,
            syscalls=syscalls,
        )


@dataclass
class CallOutcome:
    """The result of running one entry point (with everything it called)."""

    retdata: list[int]
    failed: bool
    error: str | None  # the revert reason, decoded, when failed
    events: list[Event]
    resources: Resources
    gas_consumed: int = 0
    trace: dict[str, Any] | None = None  # the FUNCTION_INVOCATION tree (simulateTransactions), when the run ended


class _StoreReader(SyncStateReader):
    """cairo-lang's state-reader interface over the devnet's committed state."""

    def __init__(self, store: StateStore, compiled: dict[int, CompiledClassBase]) -> None:
        self.store = store
        self.compiled = compiled

    def get_compiled_class(self, compiled_class_hash: int) -> CompiledClassBase:
        if compiled_class_hash not in self.compiled:
            artifact = self.store.artifact_by_compiled_hash(compiled_class_hash)
            if artifact is None:
                raise StarkException(
                    code=StarknetErrorCode.UNDECLARED_CLASS,
                    message=f"Class with hash {hex(compiled_class_hash)} is not declared.",
                )
            # CompiledClass.load rewrites the dict it is given: hand it a copy.
            self.compiled[compiled_class_hash] = CompiledClass.load(copy.deepcopy(artifact.casm))
        return self.compiled[compiled_class_hash]

    def get_sierra_class(self, class_hash: int) -> ContractClass:
        artifact = self.store.classes.get(class_hash)
        if artifact is None:
            raise StarkException(
                code=StarknetErrorCode.UNDECLARED_CLASS, message=f"Class with hash {hex(class_hash)} is not declared."
            )
        return ContractClass.load(copy.deepcopy(artifact.sierra))

    def get_compiled_class_hash(self, class_hash: int) -> int:
        return self.store.compiled_class_hashes.get(class_hash, 0)

    def get_class_hash_at(self, contract_address: int) -> int:
        return self.store.class_hash_at(contract_address)

    def get_nonce_at(self, data_availability_mode: DataAvailabilityMode, contract_address: int) -> int:
        return self.store.nonce(contract_address)

    def get_storage_at(self, data_availability_mode: DataAvailabilityMode, contract_address: int, key: int) -> int:
        return self.store.storage_at(contract_address, key)


class _ChainId:
    """Stands in for cairo-lang's StarknetChainId enum, which only knows StarkWare's networks."""

    def __init__(self, value: int) -> None:
        self.value = value


class _GeneralConfig(StarknetGeneralConfig):
    """cairo-lang's general config with any chain id (the syscall handler reads `chain_id.value`)."""

    devnet_chain_id = 0

    @property
    def chain_id(self) -> Any:
        return _ChainId(self.devnet_chain_id)


class Execution:
    """A scratch view of the state for one transaction (or a part of it): writes stay here until merged."""

    def __init__(self, vm: VM, state: CachedSyncState, block: BlockContext) -> None:
        self.vm = vm
        self.state = state
        self.block = block

    # Reads.

    def nonce(self, address: int) -> int:
        return int(self.state.get_nonce_at(L1, address))

    def class_hash_at(self, address: int) -> int:
        return int(self.state.get_class_hash_at(address))

    def storage_at(self, address: int, key: int) -> int:
        return int(self.state.get_storage_at(L1, address, key))

    def compiled_class_hash(self, class_hash: int) -> int:
        return int(self.state.get_compiled_class_hash(class_hash))

    # Writes.

    def increment_nonce(self, address: int) -> None:
        self.state.increment_nonce(L1, address)

    def set_storage(self, address: int, key: int, value: int) -> None:
        self.state.set_storage_at(L1, address, key, value)

    def declare(self, class_hash: int, compiled_class_hash: int) -> None:
        """Mark a class as declared (its artifact must already be in the store's class table)."""
        self.state.set_compiled_class_hash(class_hash, compiled_class_hash)

    def child(self) -> Execution:
        """A nested scratch state; `merge()` it into this one to keep its writes."""
        state = CachedSyncState(self.state.block_info, self.state, compiled_class_cache=self.vm.compiled)
        return Execution(self.vm, state, self.block)

    def merge(self, child: Execution) -> None:
        assert child.state.state_reader is self.state, "merge() takes a child of this execution"
        self.state.cache.update_writes_from_other(child.state.cache)

    def diff(self) -> StateDiff:
        """The writes of this execution (relative to what it reads from)."""
        cache = self.state.cache
        return StateDiff(
            storage=dict(cache._storage_writes),
            nonces=dict(cache._nonce_writes),
            deployed=dict(cache._class_hash_writes),
            declared=dict(cache._compiled_class_hash_writes),
        )

    # Runs.

    def call(
        self,
        contract_address: int,
        selector: int,
        calldata: Sequence[int],
        *,
        caller_address: int = 0,
        tx: TxContext | None = None,
        entry_point_type: EntryPointType = EntryPointType.EXTERNAL,
    ) -> CallOutcome:
        """Run an entry point on this state (its writes stay in this execution)."""
        entry_point = ExecuteEntryPoint.create(
            contract_address=contract_address,
            calldata=list(calldata),
            entry_point_selector=selector,
            caller_address=caller_address,
            initial_gas=INITIAL_GAS,
            entry_point_type=entry_point_type,
            call_type=CallType.Call,
        )
        return self._run(entry_point, tx or TxContext())

    def deploy(
        self,
        contract_address: int,
        class_hash: int,
        constructor_calldata: Sequence[int],
        *,
        deployer_address: int = 0,
        tx: TxContext | None = None,
    ) -> CallOutcome:
        """Deploy a declared class at an address and run its constructor (the caller is the deployer)."""
        if self.compiled_class_hash(class_hash) == 0:
            return _failure(f"Class with hash {hex(class_hash)} is not declared.")
        if self.class_hash_at(contract_address) != 0:
            return _failure(f"Requested contract address {hex(contract_address)} is unavailable for deployment.")
        self.state.set_class_hash_at(contract_address, class_hash)
        compiled = self.state.get_compiled_class_by_class_hash(class_hash)
        if not compiled.entry_points_by_type[EntryPointType.CONSTRUCTOR]:
            if constructor_calldata:
                return _failure("Cannot pass calldata to a contract with no constructor.")
            return CallOutcome(retdata=[], failed=False, error=None, events=[], resources=Resources())
        return self.call(
            contract_address,
            CONSTRUCTOR_ENTRY_POINT_SELECTOR,
            constructor_calldata,
            caller_address=deployer_address,
            tx=tx,
            entry_point_type=EntryPointType.CONSTRUCTOR,
        )

    def _run(self, entry_point: ExecuteEntryPoint, tx: TxContext) -> CallOutcome:
        context = TransactionExecutionContext(
            account_contract_address=tx.account_address,
            transaction_hash=tx.transaction_hash,
            signature=list(tx.signature),
            max_fee=0,
            nonce=tx.nonce,
            version=tx.version,
            run_resources=RunResources(n_steps=MAX_STEPS_VALIDATE if tx.validate else MAX_STEPS_EXECUTE),
            n_emitted_events=0,
            n_sent_messages=0,
            execution_mode=ExecutionMode.VALIDATE if tx.validate else ExecutionMode.EXECUTE,
        )
        manager = ExecutionResourcesManager.empty()
        try:
            info = entry_point.execute(
                state=self.state,
                resources_manager=manager,
                tx_execution_context=context,
                general_config=self.vm.general_config,
                support_reverted=True,
            )
        except StarkException as exc:
            return _failure(_error_text(exc), _resources(manager))
        resources = _resources(manager)
        if info.failure_flag:
            return CallOutcome(
                retdata=list(info.retdata),
                failed=True,
                error=f"Execution failed. Failure reason: {describe_felts(info.retdata)}.",
                events=[],
                resources=resources,
                gas_consumed=info.gas_consumed,
                trace=_trace(info),
            )
        return CallOutcome(
            retdata=list(info.retdata),
            failed=False,
            error=None,
            events=_events(info),
            resources=resources,
            gas_consumed=info.gas_consumed,
            trace=_trace(info),
        )


class VM:
    """Runs contracts against a StateStore; each transaction gets its own `Execution`."""

    def __init__(self, store: StateStore, chain_id: int) -> None:
        self.store = store
        self.compiled: dict[int, CompiledClassBase] = {}
        self.reader = _StoreReader(store, self.compiled)
        self.general_config = _GeneralConfig()
        self.general_config.devnet_chain_id = chain_id

    def begin(self, block: BlockContext) -> Execution:
        info = BlockInfo(
            block_number=block.number,
            block_timestamp=block.timestamp,
            l1_gas_price=ResourcePrice(price_in_wei=block.l1_gas_price, price_in_fri=block.l1_gas_price),
            l1_data_gas_price=ResourcePrice(price_in_wei=block.l1_data_gas_price, price_in_fri=block.l1_data_gas_price),
            l2_gas_price=ResourcePrice(price_in_wei=block.l2_gas_price, price_in_fri=block.l2_gas_price),
            sequencer_address=block.sequencer_address,
            starknet_version=block.starknet_version,
            use_kzg_da=True,
        )
        return Execution(self, CachedSyncState(info, self.reader, compiled_class_cache=self.compiled), block)


def _failure(error: str, resources: Resources | None = None) -> CallOutcome:
    return CallOutcome(retdata=[], failed=True, error=error, events=[], resources=resources or Resources())


def _resources(manager: ExecutionResourcesManager) -> Resources:
    usage = manager.cairo_usage
    return Resources(
        n_steps=int(usage.n_steps),
        n_memory_holes=int(usage.n_memory_holes),
        builtins={name: int(n) for name, n in usage.builtin_instance_counter.items() if n},
        syscalls={name: int(n) for name, n in manager.syscall_counter.items() if n},
    )


def _events(info: CallInfo) -> list[Event]:
    """Events of a call tree in emission order, leaving out the subtrees of calls that failed."""
    ordered: list[tuple[int, Event]] = []

    def visit(call: CallInfo) -> None:
        if call.failure_flag:
            return
        for event in call.events:
            ordered.append((event.order, Event(call.contract_address, list(event.keys), list(event.data))))
        for inner in call.internal_calls:
            visit(inner)

    visit(info)
    return [event for _, event in sorted(ordered, key=lambda pair: pair[0])]


def _trace(call: CallInfo) -> dict[str, Any]:
    """A call tree as the RPC's FUNCTION_INVOCATION (L2 gas counted as 100 per Cairo step of the call)."""
    call_type = "LIBRARY_CALL" if call.call_type is CallType.Delegate else "CALL"
    return {
        "contract_address": hex(call.contract_address),
        "entry_point_selector": hex(call.entry_point_selector or 0),
        "calldata": [hex(v) for v in call.calldata],
        "caller_address": hex(call.caller_address),
        "class_hash": hex(call.class_hash or 0),
        "entry_point_type": call.entry_point_type.name if call.entry_point_type is not None else "EXTERNAL",
        "call_type": call_type,
        "result": [hex(v) for v in call.retdata],
        "calls": [_trace(inner) for inner in call.internal_calls],
        "events": [
            {"keys": [hex(k) for k in e.keys], "data": [hex(d) for d in e.data], "order": e.order} for e in call.events
        ],
        "messages": [],
        "execution_resources": {"l1_gas": 0, "l2_gas": 100 * int(call.execution_resources.n_steps)},
        "is_reverted": bool(call.failure_flag),
    }


def _error_text(exc: StarkException) -> str:
    """A StarkException from a run, as the chain of called contracts down to the innermost error."""
    cause = exc.__cause__
    if isinstance(cause, VmException) and isinstance(cause.inner_exc, HintException):
        handler = cause.inner_exc.inner_exc
        if isinstance(handler, HandlerException):
            inner = _error_text(handler.stark_exception)
            return f"Error in the called contract ({hex(handler.called_contract_address)}):\n{inner}"
    message = exc.message or exc.code.name
    if isinstance(cause, VmException) and cause.inner_exc is not None:
        message = f"{type(cause.inner_exc).__name__}: {cause.inner_exc}"
    return str(message).strip()
