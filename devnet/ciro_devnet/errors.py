"""Starknet JSON-RPC errors (codes and messages of the Starknet RPC specification)."""

from __future__ import annotations

from typing import Any

# Starknet RPC error codes.
CONTRACT_NOT_FOUND = 20
ENTRYPOINT_NOT_FOUND = 21
BLOCK_NOT_FOUND = 24
INVALID_TXN_INDEX = 27
CLASS_HASH_NOT_FOUND = 28
TXN_HASH_NOT_FOUND = 29
PAGE_SIZE_TOO_BIG = 31
INVALID_CONTINUATION_TOKEN = 33
TOO_MANY_KEYS_IN_FILTER = 34
CONTRACT_ERROR = 40
TRANSACTION_EXECUTION_ERROR = 41
CLASS_ALREADY_DECLARED = 51
INVALID_TRANSACTION_NONCE = 52
INSUFFICIENT_RESOURCES_FOR_VALIDATE = 53
INSUFFICIENT_ACCOUNT_BALANCE = 54
VALIDATION_FAILURE = 55
COMPILATION_FAILED = 56
NON_ACCOUNT = 58
DUPLICATE_TX = 59
COMPILED_CLASS_HASH_MISMATCH = 60
UNSUPPORTED_TX_VERSION = 61
UNSUPPORTED_CONTRACT_CLASS_VERSION = 62
UNEXPECTED_ERROR = 63
# JSON-RPC 2.0 codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

MESSAGES = {
    CONTRACT_NOT_FOUND: "Contract not found",
    ENTRYPOINT_NOT_FOUND: "Requested entrypoint does not exist in the contract",
    BLOCK_NOT_FOUND: "Block not found",
    INVALID_TXN_INDEX: "Invalid transaction index in a block",
    CLASS_HASH_NOT_FOUND: "Class hash not found",
    TXN_HASH_NOT_FOUND: "Transaction hash not found",
    PAGE_SIZE_TOO_BIG: "Requested page size is too big",
    INVALID_CONTINUATION_TOKEN: "The supplied continuation token is invalid or unknown",
    TOO_MANY_KEYS_IN_FILTER: "Too many keys provided in a filter",
    CONTRACT_ERROR: "Contract error",
    TRANSACTION_EXECUTION_ERROR: "Transaction execution error",
    CLASS_ALREADY_DECLARED: "Class already declared",
    INVALID_TRANSACTION_NONCE: "Invalid transaction nonce",
    INSUFFICIENT_RESOURCES_FOR_VALIDATE: (
        "The transaction's resources don't cover validation or the minimal transaction fee"
    ),
    INSUFFICIENT_ACCOUNT_BALANCE: "Account balance is smaller than the transaction's max_fee",
    VALIDATION_FAILURE: "Account validation failed",
    COMPILATION_FAILED: "Compilation failed",
    NON_ACCOUNT: "Sender address is not an account contract",
    DUPLICATE_TX: "A transaction with the same hash already exists in the mempool",
    COMPILED_CLASS_HASH_MISMATCH: "the compiled class hash did not match the one supplied in the transaction",
    UNSUPPORTED_TX_VERSION: "the transaction version is not supported",
    UNSUPPORTED_CONTRACT_CLASS_VERSION: "the contract class version is not supported",
    UNEXPECTED_ERROR: "An unexpected error occurred",
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal error",
}


class RpcError(Exception):
    """An error the devnet answers with: a Starknet RPC code, its standard message and optional data."""

    def __init__(self, code: int, data: Any = None, message: str | None = None) -> None:
        self.code = code
        self.message = message or MESSAGES.get(code, "Error")
        self.data = data
        super().__init__(f"{self.code}: {self.message}" + (f" ({data})" if data is not None else ""))

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error
