"""The devnet chain: genesis (predeployed accounts funded in the fee token), time, transactions included one per
block and charged their fee, persistence.

`Devnet` is synchronous and not thread-safe: the RPC server runs every call on one worker thread. It is also the
API for tools that prepare a chain without transactions (`declare_class`, `deploy_predeclared`, `set_storage`).
Executing a transaction is `execution`'s, reading the chain `queries`' (a mixin), the records `blocks`'.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import fees, feetoken
from .accounts import PredeployedAccount, derive_accounts
from .blocks import Block, TxRecord
from .build import compiled_dir
from .classes import ContractClassArtifact, artifact_from_sierra, load_artifact
from .errors import (
    COMPILED_CLASS_HASH_MISMATCH,
    CONTRACT_ERROR,
    CONTRACT_NOT_FOUND,
    DUPLICATE_TX,
    INVALID_PARAMS,
    TRANSACTION_EXECUTION_ERROR,
    UNSUPPORTED_TX_VERSION,
    RpcError,
)
from .execution import TxOutcome, check_bounds_prices, execute, receipt
from .felts import encode_short_string
from .persist import ChainFiles
from .queries import ChainQueries
from .state import StateDiff, StateStore
from .txs import ParsedTx, parse_transaction

if TYPE_CHECKING:
    from .vm import VM, BlockContext, CallOutcome, Execution

__all__ = ["DEFAULT_CHAIN_ID", "RPC_SPEC_VERSION", "SEQUENCER_ADDRESS", "STARKNET_VERSION", "UDC_ADDRESS", "Block",
           "Devnet", "TxOutcome", "TxRecord"]

STARKNET_VERSION = "0.14.0"  # below 0.14.1: starknet-py then hashes CASM with Poseidon, as cairo-lang does
RPC_SPEC_VERSION = "0.10.2"
DEFAULT_CHAIN_ID = "SN_CIRO_DEV"
SEQUENCER_ADDRESS = 0x1000
# The Universal Deployer starknet-py 0.30 calls by default, and the legacy one.
UDC_ADDRESS = 0x02CEED65A4BD731034C01113685C831B01C15D7D432F71AFB1CF1634B53A2125
LEGACY_UDC_ADDRESS = 0x041A78E741E5AF2FEC34B695679BC6891742439F7AFB8484ECD7766661AD02BF
TAGS = ("latest", "pre_confirmed", "l1_accepted")


class Devnet(ChainQueries):
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
            if self.store.class_hash_at(feetoken.ADDRESS) == 0:  # saved before fees were charged
                self._install_fee_token(Path(contracts_dir) if contracts_dir is not None else compiled_dir())
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
                "contracts_dir= a folder with CiroAccount/UniversalDeployer/CiroToken "
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
        self._deploy_fee_token(ex, contracts, [acc.address for acc in self.accounts])
        self._seal_block(ex.diff(), [])

    def _deploy_fee_token(self, ex: Execution, contracts: Path, holders: list[int]) -> None:
        """STRK at its Starknet address (the compiled CiroToken class), each holder minted ACCOUNT_FUNDS."""
        name = feetoken.CLASS_NAME
        token = load_artifact(contracts / f"{name}.sierra.json", contracts / f"{name}.casm.json")
        if not ex.compiled_class_hash(token.class_hash):
            self._add_artifact(token)
            ex.declare(token.class_hash, token.compiled_class_hash)
        _check(ex.deploy(feetoken.ADDRESS, token.class_hash, feetoken.constructor_calldata()), "deploy the fee token")
        for holder in holders:
            _check(feetoken.mint(ex, holder, feetoken.ACCOUNT_FUNDS), "fund an account with the fee token")

    def _install_fee_token(self, contracts: Path) -> None:
        """A chain saved before fees were charged: the fee token, and every account funded, in a block."""
        ex = self.vm.begin(self._block_context())
        holders = [a for a, c in self.store.contracts.items() if c == self.account_class_hash]
        self._deploy_fee_token(ex, contracts, holders)
        self._seal_block(ex.diff(), [])

    def mint(self, address: int, amount: int) -> int:
        """Mint fee token (fri) to an address (in a block of its own, no transaction); returns its new balance."""
        if amount < 0 or amount >= 2**256:
            raise RpcError(INVALID_PARAMS, data=f"amount {amount} is not a u256")
        ex = self.vm.begin(self._block_context())
        outcome = feetoken.mint(ex, address, amount)
        if outcome.failed:
            raise RpcError(TRANSACTION_EXECUTION_ERROR, data={"transaction_index": 0, "execution_error": outcome.error})
        self._seal_block(ex.diff(), [])
        return self.fee_balance(address)

    def fee_balance(self, address: int) -> int:
        """The fee-token (STRK) balance of an address, in fri."""
        return feetoken.balance(self.vm.begin(self._block_context()), address)

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
        check_bounds_prices(tx)
        block = self._block_context()
        ex = self.vm.begin(block)
        feetoken.check_balance(ex, tx)
        outcome = execute(ex, tx, self._artifact_for, validate=True, enforce_bounds=True,
                          fee_recipient=SEQUENCER_ADDRESS)
        if outcome.artifact is not None:
            self._add_artifact(outcome.artifact)
        record = TxRecord(tx.hash, block.number, 0, tx.to_rpc(), receipt(outcome))
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
                outcomes.append(execute(ex, tx, self._artifact_for, validate=not skip_validate, enforce_bounds=False))
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

def _check(outcome: CallOutcome, what: str) -> None:
    if outcome.failed:
        raise RuntimeError(f"genesis: could not {what}: {outcome.error}")
