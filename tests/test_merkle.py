"""Poseidon Merkle trees (ciro.merkle): every leaf's path leads to the root, and nothing else does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ciro.errors import InputError
from ciro.merkle import merkle_levels, merkle_path, merkle_root, root_from_path

FELT = st.integers(min_value=0, max_value=2**251)


@given(st.lists(FELT, min_size=1, max_size=40), st.data())
def test_every_leaf_path_reaches_the_root(leaves: list[int], data: st.DataObject) -> None:
    levels = merkle_levels(leaves)
    root = merkle_root(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    path = merkle_path(levels, i)
    assert root_from_path(leaves[i], i, path) == root
    assert len(path) == (len(leaves) - 1).bit_length()


@given(st.lists(FELT, min_size=2, max_size=16, unique=True), st.data())
def test_a_wrong_leaf_or_index_misses_the_root(leaves: list[int], data: st.DataObject) -> None:
    levels = merkle_levels(leaves)
    root = levels[-1][0]
    i = data.draw(st.integers(0, len(leaves) - 1))
    j = data.draw(st.integers(0, len(leaves) - 1).filter(lambda j: j != i))
    path = merkle_path(levels, i)
    assert root_from_path(leaves[j], i, path) != root  # another leaf on this leaf's path
    assert root_from_path(leaves[i], j, path) != root or leaves[i] == leaves[j]  # this leaf at another index


def test_a_batch_of_one_is_its_own_root() -> None:
    assert merkle_root([7]) == 7
    assert merkle_path(merkle_levels([7]), 0) == []
    assert root_from_path(7, 0, []) == 7


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(InputError, match="at least one leaf"):
        merkle_root([])
    with pytest.raises(InputError, match="does not fit"):
        root_from_path(1, 2, [5])
    with pytest.raises(InputError, match="outside"):
        merkle_path(merkle_levels([1, 2]), 2)
