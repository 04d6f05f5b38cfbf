// Poseidon Merkle paths over receipt leaves (the same tree as ciro/merkle.py and docs/encoding.md).
// An inner node is hades_permutation(left, right, 2).s0 (Starknet's two-input Poseidon); bit k of
// the leaf's index says whether the node at height k is a right child. A batch of one is its own
// root with an empty path.
use array::{ArrayTrait, SpanTrait};
use option::OptionTrait;
use poseidon::{hades_permutation, poseidon_hash_span};
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

// A job's receipt leaf: poseidon_hash_span over 13 felts (docs/encoding.md). `price` is what the worker is owed for
// the job in token base units (0 unpaid), `client` the paying account (0 unpaid).
fn receipt_leaf(
    job_id: u128,
    model_hash: u256,
    input_commitment: u256,
    output_commitment: u256,
    worker_key: felt252,
    level: felt252,
    timestamp_ms: u64,
    price: u128,
    client: felt252
) -> felt252 {
    let mut felts: Array<felt252> = ArrayTrait::new();
    felts.append('CIRO_LEAF_V1');
    felts.append(job_id.into());
    felts.append(model_hash.high.into());
    felts.append(model_hash.low.into());
    felts.append(input_commitment.high.into());
    felts.append(input_commitment.low.into());
    felts.append(output_commitment.high.into());
    felts.append(output_commitment.low.into());
    felts.append(worker_key);
    felts.append(level);
    felts.append(timestamp_ms.into());
    felts.append(price.into());
    felts.append(client);
    poseidon_hash_span(felts.span())
}

// What a worker signs for a batch: its root, its key, the number of real leaves and the sum of their prices.
fn batch_message(root: felt252, worker_key: felt252, count: u64, total: u128) -> felt252 {
    let mut felts: Array<felt252> = ArrayTrait::new();
    felts.append('CIRO_BATCH_V1');
    felts.append(root);
    felts.append(worker_key);
    felts.append(count.into());
    felts.append(total.into());
    poseidon_hash_span(felts.span())
}

// The number of siblings on every path of a tree over `count` leaves (padded to a power of two):
// the smallest d with 2 ** d >= count.
fn tree_depth(count: u64) -> u32 {
    let mut depth: u32 = 0;
    let mut width: u64 = 1;
    loop {
        if width >= count {
            break;
        }
        width = width * 2;
        depth += 1;
    };
    depth
}
