// The interface and types of CiroLedger (settlement v2: deposits, signed spend authorizations, per-batch
// settlement against Merkle roots, disputes), and the one entry point CDCPool gains for it (`set_ledger`).
use starknet::ContractAddress;
use array::{ArrayTrait, SpanTrait};

// One worker's batch in a settlement: its Merkle root over the receipt leaves, the number of real leaves, the sum of
// their prices, and the worker's Stark signature (r, s) over `merkle::batch_message(root, key, count, total)`.
#[derive(Copy, Drop, Serde)]
struct WorkerBatch {
    worker: ContractAddress,
    root: felt252,
    count: u64,
    total: u128,
    r: felt252,
    s: felt252,
}

// A charge to a client under its spend authorization: `cumulative` is the cap the client signed with its
// registered key over `spend_message(client, cumulative)` (the most it may ever be charged in total); `amount` is
// what the operator charges now (not signed by the client). A settlement charges exactly `amount`, and only while
// `charged_of(client) + amount <= cumulative`.
#[derive(Copy, Drop, Serde)]
struct SpendAuthorization {
    client: ContractAddress,
    cumulative: u128,
    amount: u128,
    r: felt252,
    s: felt252,
}

// The 9 fields of a receipt leaf (`merkle::receipt_leaf`) as the 12 felts it hashes, in the calldata order of
// the typed fields (a 256-bit digest travels low, high; job id u128, time u64 and price u128 as felts). They are not
// range-checked: a leaf counts only if it hashes into a root its worker signed, so its fields are the worker's.
#[derive(Copy, Drop, Serde)]
struct Leaf {
    job_id: felt252,
    body: LeafBody,
}

// A leaf's fields after its job id (11 felts).
#[derive(Copy, Drop, Serde)]
struct LeafBody {
    model_low: felt252,
    model_high: felt252,
    input_low: felt252,
    input_high: felt252,
    output_low: felt252,
    output_high: felt252,
    worker_key: felt252,
    level: felt252,
    timestamp_ms: felt252,
    price: felt252,
    client: felt252,
}

// A leaf at `index` under the root that `worker` signed for `batch_id`, with its Merkle path.
#[derive(Copy, Drop, Serde)]
struct LeafProof {
    batch_id: u64,
    worker: ContractAddress,
    leaf: Leaf,
    index: u64,
    path: Span<felt252>,
}

// One of the two leaves of an equivocation (whose worker and job id the dispute names once): where it lies,
// `batch_id * 2**64 + index` in one felt, its fields after the job id, and its Merkle path.
#[derive(Copy, Drop, Serde)]
struct LeafAt {
    position: u128,
    body: LeafBody,
    path: Span<felt252>,
}

// What the chain keeps of a settled batch, per (batch id, worker); settled_at == 0: none.
#[derive(Copy, Drop, Serde, starknet::Store)]
struct BatchRecord {
    root: felt252,
    count: u64,
    total: u128,
    settled_at: u64,
}

#[starknet::interface]
trait ICiroLedger<TContractState> {
    fn register_client_key(ref self: TContractState, public_key: felt252);
    fn deposit(ref self: TContractState, amount: u256);
    fn request_withdrawal(ref self: TContractState, amount: u256);
    fn withdraw(ref self: TContractState);
    fn settle_batch(
        ref self: TContractState,
        batch_id: u64,
        workers: Array<WorkerBatch>,
        clients: Array<SpendAuthorization>
    );
    fn dispute_equivocation(
        ref self: TContractState,
        worker: ContractAddress,
        job_id: felt252,
        first: LeafAt,
        second: LeafAt
    );
    fn dispute_quorum(
        ref self: TContractState, accused: LeafProof, f: u32, validators: Array<LeafProof>
    );
    fn job_in_batch(
        self: @TContractState,
        batch_id: u64,
        worker: ContractAddress,
        leaf: felt252,
        index: u64,
        path: Span<felt252>
    ) -> bool;
    fn batch(self: @TContractState, batch_id: u64, worker: ContractAddress) -> BatchRecord;
    fn balance_of(self: @TContractState, client: ContractAddress) -> u256;
    fn charged_of(self: @TContractState, client: ContractAddress) -> u256;
    fn pending_withdrawal(self: @TContractState, client: ContractAddress) -> (u256, u64);
    fn client_key(self: @TContractState, client: ContractAddress) -> felt252;
    fn spend_message(self: @TContractState, client: ContractAddress, cumulative: u128) -> felt252;
    fn disputed(self: @TContractState, job_id: u128, worker: ContractAddress) -> bool;
    fn operator(self: @TContractState) -> ContractAddress;
    fn token(self: @TContractState) -> ContractAddress;
    fn pool(self: @TContractState) -> ContractAddress;
    fn withdrawal_delay(self: @TContractState) -> u64;
    fn dispute_window(self: @TContractState) -> u64;
}

// CDCPool's entry point for the ledger's slashing right (governance sets it; the ledger then slashes like the
// JobManager).
#[starknet::interface]
trait IPoolLedger<TContractState> {
    fn set_ledger(ref self: TContractState, ledger: ContractAddress);
    fn ledger(self: @TContractState) -> ContractAddress;
}
