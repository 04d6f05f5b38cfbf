"""The fee token: STRK, an ERC20 (the compiled CiroToken class) at Starknet's STRK address, predeployed at genesis.

Every v3 transaction pays its fee in it, from the sender to the sequencer (`fees` says how much). The devnet moves
the fee by writing the token's two balance cells directly (what the token's `transfer` would write, without running
it on the VM or emitting its event); minting (`devnet_mint`, genesis) calls the token's own `mint` as its owner,
an address no account controls.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from ciro.networks import STRK

from .errors import INSUFFICIENT_ACCOUNT_BALANCE, RpcError
from .felts import encode_short_string

if TYPE_CHECKING:
    from .txs import ParsedTx
    from .vm import CallOutcome, Execution

__all__ = ["ACCOUNT_FUNDS", "ADDRESS", "CLASS_NAME", "balance", "check_balance", "max_fee", "mint", "transfer_fee"]

ADDRESS = int(STRK, 16)
CLASS_NAME = "CiroToken"
#: The token's owner, the only address allowed to mint: no account (no key) lives there.
MINTER = encode_short_string("ciro-devnet-minter")
#: What each predeployed account holds at genesis: 1,000,000 STRK (in fri, 10^-18 STRK).
ACCOUNT_FUNDS = 10**6 * 10**18
_U128 = (1 << 128) - 1


def constructor_calldata() -> list[int]:
    """name, symbol, decimals, initial supply (u256: none), recipient, owner."""
    return [encode_short_string("Starknet Token"), encode_short_string("STRK"), 18, 0, 0, MINTER, MINTER]


@cache
def _balance_key(address: int) -> int:
    from starknet_py.hash.storage import get_storage_var_address

    return int(get_storage_var_address("balances", address))


def balance(ex: Execution, address: int) -> int:
    """The STRK balance of `address` (fri) as `ex` sees it."""
    key = _balance_key(address)
    return ex.storage_at(ADDRESS, key) + (ex.storage_at(ADDRESS, key + 1) << 128)


def _write_balance(ex: Execution, address: int, value: int) -> None:
    key = _balance_key(address)
    ex.set_storage(ADDRESS, key, value & _U128)
    ex.set_storage(ADDRESS, key + 1, value >> 128)


def transfer_fee(ex: Execution, sender: int, recipient: int, fee: int) -> None:
    """Move `fee` fri from the sender to the sequencer (the sender holds it: `check_balance` ran at submission)."""
    if fee == 0 or sender == recipient:
        return
    have = balance(ex, sender)
    if have < fee:
        raise AssertionError(f"the fee {fee} exceeds the sender's balance {have}")
    _write_balance(ex, sender, have - fee)
    _write_balance(ex, recipient, balance(ex, recipient) + fee)


def max_fee(tx: ParsedTx) -> int:
    """The most a transaction can be charged: each resource's max amount times its max price per unit."""
    return sum(b.max_amount * b.max_price_per_unit for b in tx.resource_bounds.values())


def check_balance(ex: Execution, tx: ParsedTx) -> None:
    """Refuse (INSUFFICIENT_ACCOUNT_BALANCE) a transaction whose sender cannot pay its max fee."""
    need = max_fee(tx)
    have = balance(ex, tx.sender)
    if have < need:
        raise RpcError(
            INSUFFICIENT_ACCOUNT_BALANCE,
            data=f"the max fee of the transaction (sum of max amount x max price per unit) is {need} fri, "
            f"but {hex(tx.sender)} holds {have} fri of the fee token (STRK at {hex(ADDRESS)})",
        )


def mint(ex: Execution, address: int, amount: int) -> CallOutcome:
    """The token's `mint(recipient, amount)`, called by its owner."""
    from starknet_py.hash.selector import get_selector_from_name

    selector = int(get_selector_from_name("mint"))
    return ex.call(ADDRESS, selector, [address, amount & _U128, amount >> 128], caller_address=MINTER)
