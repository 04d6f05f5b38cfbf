// Poseidon Merkle paths over receipt leaves (the same tree as ciro/merkle.py and docs/encoding.md).
// An inner node is hades_permutation(left, right, 2).s0 (Starknet's two-input Poseidon); bit k of
// the leaf's index says whether the node at height k is a right child. A batch of one is its own
// root with an empty path.
use array::SpanTrait;
use option::OptionTrait;
use poseidon::hades_permutation;
use traits::Into;

fn hash2(left: felt252, right: felt252) -> felt252 {
    let (s0, _s1, _s2) = hades_permutation(left, right, 2);
    s0
}

// The root that `leaf` at `index` hashes up to along `path`; panics 'MERKLE: index' when the
// index does not fit the path (index >= 2 ** path.len()).
fn root_from_path(leaf: felt252, index: u64, mut path: Span<felt252>) -> felt252 {
    let mut node = leaf;
    let mut i = index;
    loop {
        match path.pop_front() {
            Option::Some(sibling) => {
                if i % 2 == 1 {
                    node = hash2(*sibling, node);
                } else {
                    node = hash2(node, *sibling);
                }
                i = i / 2;
            },
            Option::None(()) => {
                break;
            },
        };
    };
    assert(i == 0, 'MERKLE: index');
    node
}
