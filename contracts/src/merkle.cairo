// Poseidon Merkle paths over receipt leaves (the same tree as ciro/merkle.py and docs/encoding.md).
// An inner node is hades_permutation(left, right, 2).s0 (Starknet's two-input Poseidon); bit k of
// the leaf's index says whether the node at height k is a right child. A batch of one is its own
// root with an empty path.
use array::{ArrayTrait, SpanTrait};
use option::OptionTrait;
use poseidon::{hades_permutation, poseidon_hash_span};
use traits::Into;
use integer::{u64_safe_divmod, u64_as_non_zero};

fn hash2(left: felt252, right: felt252) -> felt252 {
    let (s0, _s1, _s2) = hades_permutation(left, right, 2);
    s0
}

// The root that `leaf` at `index` hashes up to along `path`; panics 'MERKLE: index' when the
// index does not fit the path (index >= 2 ** path.len()).
fn root_from_path(leaf: felt252, index: u64, mut path: Span<felt252>) -> felt252 {
    let two = u64_as_non_zero(2);
    let mut node = leaf;
    let mut i = index;
    loop {
        match path.pop_front() {
            Option::Some(sibling) => {
                let (half, bit) = u64_safe_divmod(i, two);
                if bit == 1 {
                    node = hash2(*sibling, node);
                } else {
                    node = hash2(node, *sibling);
                }
                i = half;
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
    receipt_leaf_felts(
        job_id.into(),
        model_hash.high.into(),
        model_hash.low.into(),
        input_commitment.high.into(),
        input_commitment.low.into(),
        output_commitment.high.into(),
        output_commitment.low.into(),
        worker_key,
        level,
        timestamp_ms.into(),
        price.into(),
        client
    )
}

// `receipt_leaf` over the 12 felts as hashed (each digest high, low): poseidon_hash_span's sponge unrolled (two
// felts a permutation, then the 13th with the padding 1), the same hash without building an array.
fn receipt_leaf_felts(
    job_id: felt252,
    model_high: felt252,
    model_low: felt252,
    input_high: felt252,
    input_low: felt252,
    output_high: felt252,
    output_low: felt252,
    worker_key: felt252,
    level: felt252,
    timestamp_ms: felt252,
    price: felt252,
    client: felt252
) -> felt252 {
    let (s0, s1, s2) = hades_permutation('CIRO_LEAF_V1', job_id, 0);
    let (s0, s1, s2) = hades_permutation(s0 + model_high, s1 + model_low, s2);
    let (s0, s1, s2) = hades_permutation(s0 + input_high, s1 + input_low, s2);
    let (s0, s1, s2) = hades_permutation(s0 + output_high, s1 + output_low, s2);
    let (s0, s1, s2) = hades_permutation(s0 + worker_key, s1 + level, s2);
    let (s0, s1, s2) = hades_permutation(s0 + timestamp_ms, s1 + price, s2);
    let (s0, _s1, _s2) = hades_permutation(s0 + client, s1 + 1, s2);
    s0
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
