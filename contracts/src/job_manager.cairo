// JobManager: job escrow in CiroToken and on-chain verification of the evidence that settles a
// job (a worker-signed receipt, a quorum of validator receipts), refunds after the deadline and
// slashing of workers caught signing a wrong output.
//
// Job status: 0 none, 1 submitted, 2 assigned, 3 result submitted, 4 finalized, 5 refunded.
// Levels (short strings): 'receipt', 'quorum', 'zk'; a model's allowed_levels is a bitmask of
// 1 receipt, 2 quorum, 4 zk.
//
// Only the worker governance assigned (assign_job) acts on a job: it submits the output commitment,
// and only its batched receipt settles the job. A receipt is a leaf of a Poseidon Merkle tree over a
// batch of the worker's jobs (merkle::receipt_leaf, 13 felts), and the worker signs the batch once
// (merkle::batch_message: root, key, count, total). A finalization rebuilds each job's leaf from the
// job's record (id, model, input commitment, output commitment, level, client) and the worker's key,
// plus the time and price the receipt states, checks its path to the batch root, one signature per
// batch in the transaction, and pays the worker EXACTLY the signed price (which must not exceed the
// escrow: 'JM: price above escrow'), refunding the rest to the client. No caller chooses an amount.
#[starknet::contract]
mod JobManager {
    use array::{ArrayTrait, SpanTrait};
    use box::BoxTrait;
    use dict::Felt252DictTrait;
    use option::OptionTrait;
    use starknet::{ContractAddress, get_caller_address, get_contract_address, get_block_timestamp};
    use traits::{Default, Into};
    use zeroable::Zeroable;
    use ciro::signature::{KeyPoint, key_point, verify};
    use ciro::merkle::{batch_message, receipt_leaf, root_from_path, tree_depth};
    use ciro::interfaces::{
        Attestation, BatchItem, BatchSignature, Job, ICiroTokenDispatcher, ICiroTokenDispatcherTrait,
        ICDCPoolDispatcher, ICDCPoolDispatcherTrait
    };

    const STATUS_NONE: u8 = 0;
    const STATUS_SUBMITTED: u8 = 1;
    const STATUS_ASSIGNED: u8 = 2;
    const STATUS_RESULT: u8 = 3;
    const STATUS_FINALIZED: u8 = 4;
    const STATUS_REFUNDED: u8 = 5;

    const LEVEL_RECEIPT: felt252 = 'receipt';
    const LEVEL_QUORUM: felt252 = 'quorum';
    const LEVEL_ZK: felt252 = 'zk';
    const INVALID_COMPUTE: u8 = 3;

    #[storage]
    struct Storage {
        governance_addr: ContractAddress,
        token_addr: ContractAddress,
        pool_addr: ContractAddress,
        model_owner: LegacyMap<u256, ContractAddress>,
        model_vk: LegacyMap<u256, u256>,
        model_levels: LegacyMap<u256, u8>,
        // One map per Job field, so that each step reads and writes only what it needs.
        job_client: LegacyMap<u128, ContractAddress>,
        job_model: LegacyMap<u128, u256>,
        job_input: LegacyMap<u128, u256>,
        job_level: LegacyMap<u128, felt252>,
        job_max_payment: LegacyMap<u128, u256>,
        job_deadline: LegacyMap<u128, u64>,
        job_worker: LegacyMap<u128, ContractAddress>,
        job_output: LegacyMap<u128, u256>,
        job_evidence: LegacyMap<u128, felt252>,
        job_status: LegacyMap<u128, u8>,
        job_payment: LegacyMap<u128, u256>,
        // The pool's worker keys as curve points (a pool key never changes once registered).
        key_cache: LegacyMap<ContractAddress, KeyPoint>,
        reported: LegacyMap<(u128, ContractAddress), bool>,
    }

    #[event]
    #[derive(Drop, starknet::Event)]
    enum Event {
        ModelRegistered: ModelRegistered,
        JobSubmitted: JobSubmitted,
        JobAssigned: JobAssigned,
        ResultSubmitted: ResultSubmitted,
        JobFinalized: JobFinalized,
        JobRefunded: JobRefunded,
        InvalidComputeReported: InvalidComputeReported,
    }

    #[derive(Drop, starknet::Event)]
    struct ModelRegistered {
        #[key]
        model_hash: u256,
        owner: ContractAddress,
        vk_hash: u256,
        allowed_levels: u8,
    }

    #[derive(Drop, starknet::Event)]
    struct JobSubmitted {
        #[key]
        job_id: u128,
        client: ContractAddress,
        model_hash: u256,
        input_commitment: u256,
        level: felt252,
        max_payment: u256,
        deadline: u64,
    }

    #[derive(Drop, starknet::Event)]
    struct JobAssigned {
        #[key]
        job_id: u128,
        worker: ContractAddress,
    }

    #[derive(Drop, starknet::Event)]
    struct ResultSubmitted {
        #[key]
        job_id: u128,
        worker: ContractAddress,
        output_commitment: u256,
        evidence_hash: felt252,
    }

    #[derive(Drop, starknet::Event)]
    struct JobFinalized {
        #[key]
        job_id: u128,
        worker: ContractAddress,
        payment: u256,
        refund: u256,
    }

    #[derive(Drop, starknet::Event)]
    struct JobRefunded {
        #[key]
        job_id: u128,
        client: ContractAddress,
        amount: u256,
    }

    #[derive(Drop, starknet::Event)]
    struct InvalidComputeReported {
        #[key]
        job_id: u128,
        #[key]
        worker: ContractAddress,
        output_commitment: u256,
        reporter: ContractAddress,
    }

    #[constructor]
    fn constructor(
        ref self: ContractState,
        governance: ContractAddress,
        token: ContractAddress,
        pool: ContractAddress
    ) {
        assert(!governance.is_zero(), 'JM: governance is zero');
        assert(!token.is_zero(), 'JM: token is zero');
        assert(!pool.is_zero(), 'JM: pool is zero');
        self.governance_addr.write(governance);
        self.token_addr.write(token);
        self.pool_addr.write(pool);
    }

    #[external(v0)]
    impl JobManagerImpl of ciro::interfaces::IJobManager<ContractState> {
        fn register_model(
            ref self: ContractState, model_hash: u256, vk_hash: u256, allowed_levels: u8
        ) {
            let caller = get_caller_address();
            assert(allowed_levels != 0 && allowed_levels <= 7, 'JM: bad allowed levels');
            let owner = self.model_owner.read(model_hash);
            assert(owner.is_zero() || owner == caller, 'JM: not model owner');
            self.model_owner.write(model_hash, caller);
            self.model_vk.write(model_hash, vk_hash);
            self.model_levels.write(model_hash, allowed_levels);
            self
                .emit(
                    Event::ModelRegistered(
                        ModelRegistered { model_hash, owner: caller, vk_hash, allowed_levels }
                    )
                );
        }

        fn submit_job(
            ref self: ContractState,
            job_id: u128,
            model_hash: u256,
            input_commitment: u256,
            level: felt252,
            max_payment: u256,
            deadline: u64
        ) {
            let client = get_caller_address();
            assert(!self.model_owner.read(model_hash).is_zero(), 'JM: unknown model');
            let bit = level_bit(level);
            assert(bit != 0, 'JM: unknown level');
            assert(self.model_levels.read(model_hash) & bit != 0, 'JM: level not allowed');
            assert(self.job_status.read(job_id) == STATUS_NONE, 'JM: job exists');
            assert(deadline > get_block_timestamp(), 'JM: deadline passed');

            self.job_client.write(job_id, client);
            self.job_model.write(job_id, model_hash);
            self.job_input.write(job_id, input_commitment);
            self.job_level.write(job_id, level);
            self.job_max_payment.write(job_id, max_payment);
            self.job_deadline.write(job_id, deadline);
            self.job_status.write(job_id, STATUS_SUBMITTED);
            self
                .emit(
                    Event::JobSubmitted(
                        JobSubmitted {
                            job_id, client, model_hash, input_commitment, level, max_payment, deadline
                        }
                    )
                );
            if max_payment != 0 {
                let ok = self._token().transfer_from(client, get_contract_address(), max_payment);
                assert(ok, 'JM: escrow transfer failed');
            }
        }

        fn assign_job(ref self: ContractState, job_id: u128, worker: ContractAddress) {
            assert(get_caller_address() == self.governance_addr.read(), 'JM: not governance');
            self._assign(job_id, worker);
        }

        fn submit_result(
            ref self: ContractState, job_id: u128, output_commitment: u256, evidence_hash: felt252
        ) {
            assert(self.job_status.read(job_id) == STATUS_ASSIGNED, 'JM: job not assigned');
            let worker = self.job_worker.read(job_id);
            assert(get_caller_address() == worker, 'JM: not assigned worker');
            let key = self._key(worker); // cached here for the finalization
            assert(key.x != 0, 'JM: worker not registered');
            self.job_output.write(job_id, output_commitment);
            self.job_evidence.write(job_id, evidence_hash);
            self.job_status.write(job_id, STATUS_RESULT);
            self
                .emit(
                    Event::ResultSubmitted(
                        ResultSubmitted { job_id, worker, output_commitment, evidence_hash }
                    )
                );
        }

        fn finalize_receipt(
            ref self: ContractState,
            job_id: u128,
            batch: BatchSignature,
            timestamp_ms: u64,
            price: u128,
            leaf_index: u64,
            path: Span<felt252>
        ) {
            let key = self._batch_key(batch);
            let (worker, client, payment, refund) = self
                ._settle_leaf(job_id, batch, key, timestamp_ms, price, leaf_index, path);
            self._pay(worker, payment);
            self._pay(client, refund);
        }

        fn finalize_quorum(
            ref self: ContractState, job_id: u128, f: u32, attestations: Array<Attestation>
        ) {
            assert(self.job_status.read(job_id) == STATUS_RESULT, 'JM: no result to finalize');
            assert(f >= 1, 'JM: f must be >= 1');
            let pool = self._pool();
            let f64: u64 = f.into();
            let validators: u64 = pool.validator_count().into();
            assert(validators >= 3 * f64 + 1, 'JM: too few validators');
            let needed: u32 = 2 * f + 1;
            let worker = self.job_worker.read(job_id);
            let output_commitment = self.job_output.read(job_id);

            // Signers whose attestation verified; a signer counts once. The assigned worker's own
            // attestation states the price it is paid; 2f + 1 validators must attest the output.
            let mut accepted: Array<ContractAddress> = ArrayTrait::new();
            let mut count: u32 = 0;
            let mut price: u128 = 0;
            let mut priced = false;
            let mut items = attestations.span();
            loop {
                if count == needed && priced {
                    break;
                }
                let attestation = match items.pop_front() {
                    Option::Some(a) => *a,
                    Option::None => {
                        break;
                    },
                };
                let signer = attestation.batch.worker;
                if contains(accepted.span(), signer) {
                    continue;
                }
                let is_worker = signer == worker;
                let is_validator = pool.is_validator(signer);
                if !is_worker && !is_validator {
                    continue;
                }
                if self._attested(job_id, output_commitment, attestation) == 0 {
                    continue;
                }
                accepted.append(signer);
                if is_worker {
                    price = attestation.price;
                    priced = true;
                }
                if is_validator && count < needed {
                    count += 1;
                };
            };
            assert(count == needed, 'JM: no quorum');
            assert(priced, 'JM: no receipt of the worker');
            let (client, payment, refund) = self._settle(job_id, worker, price);
            self._pay(worker, payment);
            self._pay(client, refund);
        }

        fn finalize_batch(
            ref self: ContractState, batches: Array<BatchSignature>, items: Array<BatchItem>
        ) {
            // One signature check per batch; then each job's leaf is checked against its batch's
            // root and the job settled. The payments and refunds are paid with one transfer per
            // recipient: consecutive jobs of one worker (or one client) are summed in a run, runs
            // in a dictionary. Each summand is below 2**128 (larger amounts are paid on the spot), so the
            // felt252 sums cannot wrap.
            let batches = batches.span();
            let mut keys: Array<felt252> = ArrayTrait::new();
            let mut spent: Felt252Dict<felt252> = Default::default();
            let mut i: usize = 0;
            loop {
                if i == batches.len() {
                    break;
                }
                keys.append(self._batch_key(*batches.at(i)));
                i += 1;
            };
            let mut owed: Felt252Dict<felt252> = Default::default();
            let mut recipients: Array<ContractAddress> = ArrayTrait::new();
            let mut worker_run = Run { to: Zeroable::zero(), amount: 0 };
            let mut client_run = Run { to: Zeroable::zero(), amount: 0 };
            let mut items = items.span();
            loop {
                let item = match items.pop_front() {
                    Option::Some(item) => *item,
                    Option::None => {
                        break;
                    },
                };
                assert(item.batch < batches.len(), 'JM: no such batch');
                let batch = *batches.at(item.batch);
                // The prices of a batch's jobs settled here stay within the total its worker signed.
                let sum = spent.get(item.batch.into()) + item.price.into();
                let sum_u256: u256 = sum.into();
                assert(sum_u256 <= batch.total.into(), 'JM: above batch total');
                spent.insert(item.batch.into(), sum);
                let (worker, client, payment, refund) = self
                    ._settle_leaf(
                        item.job_id,
                        batch,
                        *keys.at(item.batch),
                        item.timestamp_ms,
                        item.price,
                        item.leaf_index,
                        item.path
                    );
                worker_run = self._owe(ref owed, ref recipients, worker_run, worker, payment);
                client_run = self._owe(ref owed, ref recipients, client_run, client, refund);
            };
            add_run(ref owed, ref recipients, worker_run);
            add_run(ref owed, ref recipients, client_run);
            let token = self._token();
            let mut to_pay = recipients.span();
            loop {
                let recipient = match to_pay.pop_front() {
                    Option::Some(recipient) => *recipient,
                    Option::None => {
                        break;
                    },
                };
                let amount: u256 = owed.get(recipient.into()).into();
                let ok = token.transfer(recipient, amount);
                assert(ok, 'JM: payout failed');
            };
            owed.squash();
            spent.squash();
        }

        fn refund(ref self: ContractState, job_id: u128) {
            let status = self.job_status.read(job_id);
            assert(
                status == STATUS_SUBMITTED || status == STATUS_ASSIGNED || status == STATUS_RESULT,
                'JM: not refundable'
            );
            assert(get_block_timestamp() > self.job_deadline.read(job_id), 'JM: deadline not passed');
            let client = self.job_client.read(job_id);
            let amount = self.job_max_payment.read(job_id);
            self.job_status.write(job_id, STATUS_REFUNDED);
            self.emit(Event::JobRefunded(JobRefunded { job_id, client, amount }));
            self._pay(client, amount);
        }

        fn report_invalid_compute(
            ref self: ContractState, job_id: u128, output_commitment: u256, attestation: Attestation
        ) {
            let worker = attestation.batch.worker;
            assert(self.job_status.read(job_id) == STATUS_FINALIZED, 'JM: job not finalized');
            assert(!self.reported.read((job_id, worker)), 'JM: already reported');
            assert(output_commitment != self.job_output.read(job_id), 'JM: output matches');
            assert(self._key(worker).x != 0, 'JM: worker not registered');
            let leaf = self._attested(job_id, output_commitment, attestation);
            assert(leaf != 0, 'JM: bad report signature');
            self.reported.write((job_id, worker), true);
            self
                .emit(
                    Event::InvalidComputeReported(
                        InvalidComputeReported {
                            job_id, worker, output_commitment, reporter: get_caller_address()
                        }
                    )
                );
            self._pool().slash(worker, INVALID_COMPUTE, leaf);
        }

        fn get_job(self: @ContractState, job_id: u128) -> Job {
            Job {
                client: self.job_client.read(job_id),
                model_hash: self.job_model.read(job_id),
                input_commitment: self.job_input.read(job_id),
                level: self.job_level.read(job_id),
                max_payment: self.job_max_payment.read(job_id),
                deadline: self.job_deadline.read(job_id),
                worker: self.job_worker.read(job_id),
                output_commitment: self.job_output.read(job_id),
                evidence_hash: self.job_evidence.read(job_id),
                status: self.job_status.read(job_id),
                payment: self.job_payment.read(job_id),
            }
        }

        fn get_model(self: @ContractState, model_hash: u256) -> (ContractAddress, u256, u8) {
            (
                self.model_owner.read(model_hash),
                self.model_vk.read(model_hash),
                self.model_levels.read(model_hash)
            )
        }

        fn token(self: @ContractState) -> ContractAddress {
            self.token_addr.read()
        }

        fn pool(self: @ContractState) -> ContractAddress {
            self.pool_addr.read()
        }

        fn governance(self: @ContractState) -> ContractAddress {
            self.governance_addr.read()
        }
    }

    // The bit of a level in a model's allowed_levels (0 for an unknown level).
    fn level_bit(level: felt252) -> u8 {
        if level == LEVEL_RECEIPT {
            1
        } else if level == LEVEL_QUORUM {
            2
        } else if level == LEVEL_ZK {
            4
        } else {
            0
        }
    }

    fn contains(mut items: Span<ContractAddress>, needle: ContractAddress) -> bool {
        loop {
            match items.pop_front() {
                Option::Some(item) => {
                    if *item == needle {
                        break true;
                    }
                },
                Option::None => {
                    break false;
                },
            };
        }
    }

    // Consecutive amounts owed to one address in finalize_batch.
    #[derive(Copy, Drop)]
    struct Run {
        to: ContractAddress,
        amount: felt252,
    }

    fn add_run(ref owed: Felt252Dict<felt252>, ref recipients: Array<ContractAddress>, run: Run) {
        if run.amount == 0 {
            return;
        }
        let key: felt252 = run.to.into();
        let before = owed.get(key);
        if before == 0 {
            recipients.append(run.to);
        }
        owed.insert(key, before + run.amount);
    }

    #[generate_trait]
    impl InternalImpl of InternalTrait {
        fn _token(self: @ContractState) -> ICiroTokenDispatcher {
            ICiroTokenDispatcher { contract_address: self.token_addr.read() }
        }

        fn _pool(self: @ContractState) -> ICDCPoolDispatcher {
            ICDCPoolDispatcher { contract_address: self.pool_addr.read() }
        }

        fn _assign(ref self: ContractState, job_id: u128, worker: ContractAddress) {
            assert(self.job_status.read(job_id) == STATUS_SUBMITTED, 'JM: job not open');
            assert(self._pool().is_eligible(worker), 'JM: worker not eligible');
            self.job_worker.write(job_id, worker);
            self.job_status.write(job_id, STATUS_ASSIGNED);
            self.emit(Event::JobAssigned(JobAssigned { job_id, worker }));
        }

        // The pool key of a worker as a curve point (x == 0 if unregistered), cached here after
        // the first look-up.
        fn _key(ref self: ContractState, worker: ContractAddress) -> KeyPoint {
            let cached = self.key_cache.read(worker);
            if cached.x != 0 {
                return cached;
            }
            let x = self._pool().worker_key(worker);
            if x == 0 {
                return KeyPoint { x: 0, y: 0 };
            }
            let key = key_point(x);
            self.key_cache.write(worker, key);
            key
        }

        // Checks a Stark signature by `signer` (whose cached key is `key`); remembers the sign of
        // the signer's y coordinate so that its next check takes the short path.
        fn _check_signature(
            ref self: ContractState,
            signer: ContractAddress,
            key: KeyPoint,
            message: felt252,
            r: felt252,
            s: felt252
        ) -> bool {
            let (valid, flipped) = verify(message, key, r, s);
            if flipped {
                self.key_cache.write(signer, KeyPoint { x: key.x, y: -key.y });
            }
            valid
        }

        // The pool key of a batch's signer after checking its signature over the batch (reverts
        // on an unregistered signer or a bad signature).
        fn _batch_key(ref self: ContractState, batch: BatchSignature) -> felt252 {
            let key = self._key(batch.worker);
            assert(key.x != 0, 'JM: worker not registered');
            let message = batch_message(batch.root, key.x, batch.count, batch.total);
            assert(
                self._check_signature(batch.worker, key, message, batch.r, batch.s),
                'JM: bad batch signature'
            );
            key.x
        }

        // The leaf of `job_id` as worker key `key` signed it, rebuilt from the job's record and
        // the receipt's time and price, if it lies at `leaf_index` of the batch under `root`
        // (the path as long as the batch's tree is deep); 0 otherwise.
        fn _leaf_in(
            self: @ContractState,
            job_id: u128,
            output_commitment: u256,
            level: felt252,
            key: felt252,
            root: felt252,
            count: u64,
            timestamp_ms: u64,
            price: u128,
            leaf_index: u64,
            path: Span<felt252>
        ) -> felt252 {
            if leaf_index >= count || path.len() != tree_depth(count) {
                return 0;
            }
            let client: felt252 = self.job_client.read(job_id).into();
            let leaf = receipt_leaf(
                job_id,
                self.job_model.read(job_id),
                self.job_input.read(job_id),
                output_commitment,
                key,
                level,
                timestamp_ms,
                price,
                client
            );
            if root_from_path(leaf, leaf_index, path) == root {
                leaf
            } else {
                0
            }
        }

        // The leaf of a worker's quorum attestation of `output_commitment` for `job_id` if its
        // leaf is in its batch and the batch's signature is valid; 0 otherwise.
        fn _attested(
            ref self: ContractState, job_id: u128, output_commitment: u256, attestation: Attestation
        ) -> felt252 {
            let batch = attestation.batch;
            let key = self._key(batch.worker);
            if key.x == 0 {
                return 0;
            }
            let leaf = self
                ._leaf_in(
                    job_id,
                    output_commitment,
                    LEVEL_QUORUM,
                    key.x,
                    batch.root,
                    batch.count,
                    attestation.timestamp_ms,
                    attestation.price,
                    attestation.leaf_index,
                    attestation.path
                );
            if leaf == 0 {
                return 0;
            }
            let message = batch_message(batch.root, key.x, batch.count, batch.total);
            if self._check_signature(batch.worker, key, message, batch.r, batch.s) {
                leaf
            } else {
                0
            }
        }

        // Checks that a receipt/zk job's leaf, by its assigned worker, is in `batch` (whose
        // signature by key `key` the caller checked) and settles the job's state (no transfer).
        // Returns (worker, client, payment, refund).
        fn _settle_leaf(
            ref self: ContractState,
            job_id: u128,
            batch: BatchSignature,
            key: felt252,
            timestamp_ms: u64,
            price: u128,
            leaf_index: u64,
            path: Span<felt252>
        ) -> (ContractAddress, ContractAddress, u256, u256) {
            assert(self.job_status.read(job_id) == STATUS_RESULT, 'JM: no result to finalize');
            let level = self.job_level.read(job_id);
            // A quorum job needs its quorum: one worker's receipt cannot settle it.
            assert(level != LEVEL_QUORUM, 'JM: quorum job');
            let worker = self.job_worker.read(job_id);
            assert(batch.worker == worker, 'JM: not assigned worker');
            assert(leaf_index < batch.count, 'JM: leaf index outside batch');
            let leaf = self
                ._leaf_in(
                    job_id,
                    self.job_output.read(job_id),
                    level,
                    key,
                    batch.root,
                    batch.count,
                    timestamp_ms,
                    price,
                    leaf_index,
                    path
                );
            assert(leaf != 0, 'JM: leaf not in batch');
            let (client, payment, refund) = self._settle(job_id, worker, price);
            (worker, client, payment, refund)
        }

        // Marks a job with a submitted result finalized, paying the worker-signed `price`
        // (<= the escrow), and emits JobFinalized. Returns (client, payment, refund); the caller
        // pays worker and client afterwards.
        fn _settle(
            ref self: ContractState, job_id: u128, worker: ContractAddress, price: u128
        ) -> (ContractAddress, u256, u256) {
            let max_payment = self.job_max_payment.read(job_id);
            let payment: u256 = price.into();
            assert(payment <= max_payment, 'JM: price above escrow');
            let refund = max_payment - payment;
            let client = self.job_client.read(job_id);
            self.job_status.write(job_id, STATUS_FINALIZED);
            self.job_payment.write(job_id, payment);
            self.emit(Event::JobFinalized(JobFinalized { job_id, worker, payment, refund }));
            (client, payment, refund)
        }

        fn _pay(ref self: ContractState, recipient: ContractAddress, amount: u256) {
            if amount != 0 {
                let ok = self._token().transfer(recipient, amount);
                assert(ok, 'JM: payout failed');
            }
        }

        // Adds `amount` to what a batch owes `recipient`, in `run` while the recipient stays the
        // same. Amounts of 2**128 or more are paid at once. Returns the current run.
        fn _owe(
            ref self: ContractState,
            ref owed: Felt252Dict<felt252>,
            ref recipients: Array<ContractAddress>,
            run: Run,
            recipient: ContractAddress,
            amount: u256
        ) -> Run {
            if amount.high != 0 {
                self._pay(recipient, amount);
                return run;
            }
            let amount: felt252 = amount.low.into();
            if recipient == run.to {
                return Run { to: run.to, amount: run.amount + amount };
            }
            add_run(ref owed, ref recipients, run);
            Run { to: recipient, amount }
        }
    }
}
