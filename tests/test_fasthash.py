"""ciro.chain.fasthash gives starknet-py the same Poseidon results as poseidon-py, from the faster Rust binding."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from poseidon_py import poseidon_hash as reference

from ciro.chain import fasthash

felts = st.integers(min_value=0, max_value=2**252)  # past the prime too: both reduce modulo it


@settings(max_examples=300, deadline=None)
@given(values=st.lists(felts, max_size=40), left=felts, right=felts)
def test_same_hashes_as_poseidon_py(values: list[int], left: int, right: int) -> None:
    assert fasthash.poseidon_hash_many(values) == reference.poseidon_hash_many(values)
    assert fasthash.poseidon_hash(left, right) == reference.poseidon_hash(left, right)


def test_installed_where_starknet_py_hashes() -> None:
    from starknet_py.hash import hash_method, sierra_class_hash, transaction

    fasthash.install()
    assert sierra_class_hash.poseidon_hash_many is fasthash.poseidon_hash_many
    assert transaction.poseidon_hash_many is fasthash.poseidon_hash_many
    assert hash_method.poseidon_hash is fasthash.poseidon_hash
