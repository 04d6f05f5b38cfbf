"""A local Starknet devnet: a JSON-RPC node in Python that runs compiled Cairo contracts on cairo-lang's VM.

`python -m ciro_devnet --port 5050` starts one. A package of its own beside the SDK (`ciro`), whose shared Starknet
client (`ciro.chain`) it uses: it needs the `chain` extra (`pip install 'ciro-network[chain]'`: cairo-lang,
starknet-py). Importing this package is cheap: cairo-lang (seconds to import) loads with the first chain. The import
fix cairo-lang 0.14.0.1 needs on Python 3.11 is installed here, before anything can import `starkware`.

Fees are charged as on Starknet, in STRK (an ERC20 at Starknet's STRK address, `feetoken`): every predeployed
account holds 1,000,000 STRK, `devnet_mint` mints more; a v3 transaction pays the gas it used (`fees`), capped by
its bounds, at the block's prices, to the sequencer; a sender whose balance is below its max fee is refused at
submission (error 54), and one that runs out of a bounded resource is reverted and pays the bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _cairo_fix  # noqa: F401  (first: installs the cairo-lang import fix)

if TYPE_CHECKING:
    from .accounts import PredeployedAccount
    from .chain import Devnet
    from .launch import DevnetProcess, DevnetThread, start_devnet_process, start_devnet_thread

__all__ = [
    "Devnet",
    "DevnetProcess",
    "DevnetThread",
    "PredeployedAccount",
    "start_devnet_process",
    "start_devnet_thread",
]

_LAZY = {
    "Devnet": "chain",
    "PredeployedAccount": "accounts",
    "DevnetProcess": "launch",
    "DevnetThread": "launch",
    "start_devnet_process": "launch",
    "start_devnet_thread": "launch",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
