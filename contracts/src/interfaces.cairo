// Interfaces and shared types of the Ciro contracts. The contracts implement these traits in
// `#[external(v0)]` impls and call each other through the generated dispatchers.
use starknet::ContractAddress;

// ------------------------------------------------------------------------------------------------
// CiroToken (ERC20)
// ------------------------------------------------------------------------------------------------
#[starknet::interface]
trait ICiroToken<TContractState> {
    fn name(self: @TContractState) -> felt252;
    fn symbol(self: @TContractState) -> felt252;
    fn decimals(self: @TContractState) -> u8;
    fn total_supply(self: @TContractState) -> u256;
    fn balance_of(self: @TContractState, account: ContractAddress) -> u256;
    fn allowance(self: @TContractState, owner: ContractAddress, spender: ContractAddress) -> u256;
    fn owner(self: @TContractState) -> ContractAddress;
    fn transfer(ref self: TContractState, recipient: ContractAddress, amount: u256) -> bool;
    fn transfer_from(
        ref self: TContractState, sender: ContractAddress, recipient: ContractAddress, amount: u256
    ) -> bool;
    fn approve(ref self: TContractState, spender: ContractAddress, amount: u256) -> bool;
    fn mint(ref self: TContractState, recipient: ContractAddress, amount: u256);
    fn burn(ref self: TContractState, account: ContractAddress, amount: u256);
    fn transfer_ownership(ref self: TContractState, new_owner: ContractAddress);
}

// ------------------------------------------------------------------------------------------------
// CDCPool (staking, reputation, validators, slashing)
// ------------------------------------------------------------------------------------------------
#[starknet::interface]
trait ICDCPool<TContractState> {
    fn set_job_manager(ref self: TContractState, job_manager: ContractAddress);
    fn register_worker(ref self: TContractState, public_key: felt252);
    fn stake_for_worker(ref self: TContractState, worker: ContractAddress, amount: u256);
    fn request_unstake(ref self: TContractState, amount: u256);
    fn withdraw(ref self: TContractState);
    fn slash(ref self: TContractState, worker: ContractAddress, violation: u8, evidence: felt252);
    fn withdraw_slashed(ref self: TContractState, recipient: ContractAddress);
    fn slashed_balance(self: @TContractState) -> u256;
    fn add_validator(ref self: TContractState, worker: ContractAddress);
    fn remove_validator(ref self: TContractState, worker: ContractAddress);
    fn set_uptime(ref self: TContractState, worker: ContractAddress, uptime_bps: u16);
    fn worker_key(self: @TContractState, worker: ContractAddress) -> felt252;
    fn stake_of(self: @TContractState, worker: ContractAddress) -> u256;
    fn pending_unstake(self: @TContractState, worker: ContractAddress) -> (u256, u64);
    fn reputation_of(self: @TContractState, worker: ContractAddress) -> u16;
    fn banned_until(self: @TContractState, worker: ContractAddress) -> u64;
    fn uptime_of(self: @TContractState, worker: ContractAddress) -> u16;
    fn is_eligible(self: @TContractState, worker: ContractAddress) -> bool;
    fn is_validator(self: @TContractState, worker: ContractAddress) -> bool;
    fn validator_count(self: @TContractState) -> u32;
    fn min_stake(self: @TContractState) -> u256;
    fn job_manager(self: @TContractState) -> ContractAddress;
    fn governance(self: @TContractState) -> ContractAddress;
    fn security(self: @TContractState) -> u256;
}

// ------------------------------------------------------------------------------------------------
// JobManager (escrow and verification)
// ------------------------------------------------------------------------------------------------
#[derive(Copy, Drop, Serde, starknet::Store)]
struct Job {
    client: ContractAddress,
    model_hash: u256,
    input_commitment: u256,
    level: felt252,
    max_payment: u256,
    deadline: u64,
    worker: ContractAddress,
    output_commitment: u256,
    evidence_hash: felt252,
    status: u8,
    payment: u256,
}

// A worker's signature over one batch of its receipts: Stark ECDSA over
// merkle::batch_message(root, worker_key, count, total) with the worker's pool key.
#[derive(Copy, Drop, Serde)]
struct BatchSignature {
    worker: ContractAddress,
    root: felt252,
    count: u64,
    total: u128,
    r: felt252,
    s: felt252,
}

// One job of a signed batch (`batch`: its index in finalize_batch's `batches`): the leaf fields the job's
// on-chain record does not hold (the time and the price the worker signed), the leaf's index and its path.
#[derive(Copy, Drop, Serde)]
struct BatchItem {
    batch: u32,
    job_id: u128,
    timestamp_ms: u64,
    price: u128,
    leaf_index: u64,
    path: Span<felt252>,
}

// One worker's batched receipt for a quorum job (level 'quorum'), its leaf and the batch it is in.
#[derive(Copy, Drop, Serde)]
struct Attestation {
    batch: BatchSignature,
    timestamp_ms: u64,
    price: u128,
    leaf_index: u64,
    path: Span<felt252>,
}

#[starknet::interface]
trait IJobManager<TContractState> {
    fn register_model(
        ref self: TContractState, model_hash: u256, vk_hash: u256, allowed_levels: u8
    );
    fn submit_job(
        ref self: TContractState,
        job_id: u128,
        model_hash: u256,
        input_commitment: u256,
        level: felt252,
        max_payment: u256,
        deadline: u64
    );
    fn assign_job(ref self: TContractState, job_id: u128, worker: ContractAddress);
    fn submit_result(
        ref self: TContractState, job_id: u128, output_commitment: u256, evidence_hash: felt252
    );
    fn finalize_receipt(
        ref self: TContractState,
        job_id: u128,
        batch: BatchSignature,
        timestamp_ms: u64,
        price: u128,
        leaf_index: u64,
        path: Span<felt252>
    );
    fn finalize_quorum(
        ref self: TContractState, job_id: u128, f: u32, attestations: Array<Attestation>
    );
    fn finalize_batch(
        ref self: TContractState, batches: Array<BatchSignature>, items: Array<BatchItem>
    );
    fn refund(ref self: TContractState, job_id: u128);
    fn report_invalid_compute(
        ref self: TContractState, job_id: u128, output_commitment: u256, attestation: Attestation
    );
    fn get_job(self: @TContractState, job_id: u128) -> Job;
    fn get_model(self: @TContractState, model_hash: u256) -> (ContractAddress, u256, u8);
    fn token(self: @TContractState) -> ContractAddress;
    fn pool(self: @TContractState) -> ContractAddress;
    fn governance(self: @TContractState) -> ContractAddress;
}
