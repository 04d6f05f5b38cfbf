"""Poseidon Merkle trees over receipt leaves: one worker signature covers a batch (docs/encoding.md).

The tree is binary over the leaves padded with zeros to the next power of two; an inner node is
``poseidon_hash(left, right)`` (Starknet's two-input Poseidon, ``hades_permutation(l, r, 2)[0]``),
the same as ``contracts/src/merkle.cairo``. A batch of one leaf is its own root with an empty path.
A path lists the siblings from the leaf upwards; bit ``k`` of the leaf's index says whether the node
at height ``k`` is a right child.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InputError

__all__ = ["BATCH_DOMAIN", "LEAF_DOMAIN", "batch_message", "merkle_levels", "merkle_path", "merkle_root",
           "receipt_leaf", "root_from_path"]

LEAF_DOMAIN = int.from_bytes(b"CIRO_LEAF_V1", "big")
BATCH_DOMAIN = int.from_bytes(b"CIRO_BATCH_V1", "big")


def _hash2(left: int, right: int) -> int:
    from starknet_pathfinder_crypto import poseidon_hash  # Rust; imported on first use, then a dict look-up

    return int(poseidon_hash(left, right))


def merkle_levels(leaves: Sequence[int]) -> list[list[int]]:
    """Every level of the tree, leaves (padded) first, root last."""
    if not leaves:
        raise InputError("A Merkle tree needs at least one leaf.")
    width = 1
    while width < len(leaves):
        width *= 2
    from starknet_pathfinder_crypto import poseidon_hash

    level = [int(x) for x in leaves] + [0] * (width - len(leaves))
    levels = [level]
    while len(level) > 1:
        level = [int(poseidon_hash(level[i], level[i + 1])) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def merkle_root(leaves: Sequence[int]) -> int:
    return merkle_levels(leaves)[-1][0]


def merkle_path(levels: list[list[int]], index: int) -> list[int]:
    """Siblings of leaf ``index`` from the bottom up, given ``merkle_levels(leaves)``."""
    if not 0 <= index < len(levels[0]):
        raise InputError(f"Leaf index {index} is outside a tree of {len(levels[0])} leaves.")
    path = []
    for level in levels[:-1]:
        path.append(level[index ^ 1])
        index //= 2
    return path


def root_from_path(leaf: int, index: int, path: Sequence[int]) -> int:
    """The root a leaf at ``index`` with sibling ``path`` hashes up to (raises on an index the path cannot hold)."""
    if not 0 <= index < 2 ** len(path):
        raise InputError(f"Leaf index {index} does not fit a path of {len(path)} siblings.")
    node = int(leaf)
    for sibling in path:
        node = _hash2(int(sibling), node) if index & 1 else _hash2(node, int(sibling))
        index //= 2
    return node


def _u256_halves(value: int) -> tuple[int, int]:
    return value >> 128, value & ((1 << 128) - 1)


def receipt_leaf(*, job_id: int, model_hash: int, input_commitment: int, output_commitment: int, worker_key: int,
                 level: int, timestamp_ms: int, price: int, client: int) -> int:
    """A job's leaf: Poseidon over 13 felts, as ``receipt_leaf`` in contracts/src/merkle.cairo.

    Digests are 256-bit integers (split into high and low 128 bits), ``level`` a Cairo short string, ``price`` the
    amount the worker is owed in token base units (a u128; 0 when unpaid), ``client`` the paying account (0 unpaid).
    """
    from starknet_pathfinder_crypto import poseidon_hash_many

    if not 0 <= price < 2**128:
        raise InputError(f"A receipt price must fit 128 bits, got {price}.")
    felts = [LEAF_DOMAIN, job_id, *_u256_halves(model_hash), *_u256_halves(input_commitment),
             *_u256_halves(output_commitment), worker_key, level, timestamp_ms, price, client]
    return int(poseidon_hash_many(felts))


def batch_message(*, root: int, worker_key: int, count: int, total: int) -> int:
    """The felt a worker signs for a batch: its root, key, number of real leaves and the sum of their prices."""
    from starknet_pathfinder_crypto import poseidon_hash_many

    return int(poseidon_hash_many([BATCH_DOMAIN, root, worker_key, count, total]))
