"""The shared Starknet client: contract bindings, accounts from the key store, batched settlement.

Imported on demand (``import ciro.chain``): it needs starknet-py (``pip install 'ciro-network[chain]'``).
"""

from .client import ChainClient, InsufficientFeeError, TxResult, decode_revert
from .contracts import CDCPool, CiroToken, JobManager, JobState, Violation
from .network import Network, account_address, account_exists, deploy_network, ensure_account, settle_on

__all__ = [
    "CDCPool",
    "ChainClient",
    "CiroToken",
    "InsufficientFeeError",
    "JobManager",
    "JobState",
    "Network",
    "TxResult",
    "Violation",
    "account_address",
    "account_exists",
    "decode_revert",
    "deploy_network",
    "ensure_account",
    "settle_on",
]
