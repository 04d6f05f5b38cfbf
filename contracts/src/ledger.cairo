// CiroLedger: settlement v2. Clients deposit CIRO and register a Stark key; each request they send carries a signed
// cumulative spend authorization, a cap on what it may ever be charged in total; the operator settles a batch in
// one transaction: per worker, the Merkle root of its receipt leaves with its signature over (root, key, count,
// total); per client, an authorization and the amount to charge now. The chain charges each client exactly that
// amount while its total charged stays within the signed cap (never more than signed), pays each worker
// exactly its signed total, and requires the two sums to be equal. One event per batch; roots are kept per
// (batch id, worker) so any job is provable later by its leaf and path. Within `dispute_window` of a settlement
// anyone can show a worker's equivocation (two leaves of one job with different outputs) or a quorum job whose
// leaf contradicts 2f + 1 validators: the worker is slashed through CDCPool (violations 1 and 3; CDCPool's Slashed
// event, evidence = the job id, is the record) and `disputed(job, worker)` turns true. A wrong dispute
// reverts (no bond).
#[starknet::contract]
mod CiroLedger {
    use array::{ArrayTrait, SpanTrait};
    use box::BoxTrait;
    use option::OptionTrait;
    use poseidon::poseidon_hash_span;
    use starknet::{
        ContractAddress, get_caller_address, get_contract_address, get_block_timestamp, get_tx_info
    };
    use traits::Into;
    use zeroable::Zeroable;
    use ciro::interfaces::{
        ICiroTokenDispatcher, ICiroTokenDispatcherTrait, ICDCPoolDispatcher, ICDCPoolDispatcherTrait
    };
    use ciro::ledger_api::{
        WorkerBatch, SpendAuthorization, Leaf, LeafBody, LeafAt, LeafProof, BatchRecord
    };
    use integer::{u128_safe_divmod, u128_as_non_zero};
    use traits::TryInto;
    use ciro::merkle::{batch_message, receipt_leaf_felts, root_from_path};
    use ciro::signature::{KeyPoint, key_point, verify};

    const SPEND_DOMAIN: felt252 = 'CIRO_SPEND_V1';
    const DOUBLE_SIGNING: u8 = 1;
    const INVALID_COMPUTE: u8 = 3;

    #[storage]
    struct Storage {
        operator_addr: ContractAddress,
        token_addr: ContractAddress,
        pool_addr: ContractAddress,
        delay: u64,
        window: u64,
        balances: LegacyMap<ContractAddress, u256>,
        charged: LegacyMap<ContractAddress, u256>,
        pending_amount: LegacyMap<ContractAddress, u256>,
        pending_ready_at: LegacyMap<ContractAddress, u64>,
        client_keys: LegacyMap<ContractAddress, KeyPoint>,
        // CDCPool keys never change once registered: cached with the sign of y that verified last.
        worker_keys: LegacyMap<ContractAddress, KeyPoint>,
        // A settled batch per (batch id, worker): its root, its count and total, and the end of its dispute window
        // keyed by (batch id, worker, root), so that a dispute reads one slot a leaf (0: no such settled root).
        batch_roots: LegacyMap<(u64, ContractAddress), felt252>,
        batch_sizes: LegacyMap<(u64, ContractAddress), (u64, u128)>,
        dispute_ends: LegacyMap<(u64, ContractAddress, felt252), u64>,
        // Batch messages already paid: a worker's signed batch is paid once, whatever the batch id.
        settled_messages: LegacyMap<felt252, bool>,
        disputes: LegacyMap<(felt252, ContractAddress), bool>,
    }

    #[event]
    #[derive(Drop, starknet::Event)]
    enum Event {
        ClientKeySet: ClientKeySet,
        Deposited: Deposited,
        WithdrawalRequested: WithdrawalRequested,
        Withdrawn: Withdrawn,
        BatchSettled: BatchSettled,
    }

    #[derive(Drop, starknet::Event)]
    struct ClientKeySet {
        #[key]
        client: ContractAddress,
        public_key: felt252,
    }

    #[derive(Drop, starknet::Event)]
    struct Deposited {
        #[key]
        client: ContractAddress,
        amount: u256,
        balance: u256,
    }

    #[derive(Drop, starknet::Event)]
    struct WithdrawalRequested {
        #[key]
        client: ContractAddress,
        amount: u256,
        ready_at: u64,
    }

    #[derive(Drop, starknet::Event)]
    struct Withdrawn {
        #[key]
        client: ContractAddress,
        amount: u256,
    }

    #[derive(Drop, starknet::Event)]
    struct BatchSettled {
        #[key]
        batch_id: u64,
        workers: u32,
        clients: u32,
        jobs: u64,
        amount: u256,
    }

    #[constructor]
    fn constructor(
        ref self: ContractState,
        operator: ContractAddress,
        token: ContractAddress,
        pool: ContractAddress,
        withdrawal_delay: u64,
        dispute_window: u64
    ) {
        assert(!operator.is_zero(), 'LEDGER: operator is zero');
        assert(!token.is_zero(), 'LEDGER: token is zero');
        assert(!pool.is_zero(), 'LEDGER: pool is zero');
        self.operator_addr.write(operator);
        self.token_addr.write(token);
        self.pool_addr.write(pool);
        self.delay.write(withdrawal_delay);
        self.window.write(dispute_window);
    }

    #[external(v0)]
    impl CiroLedgerImpl of ciro::ledger_api::ICiroLedger<ContractState> {
        fn register_client_key(ref self: ContractState, public_key: felt252) {
            let client = get_caller_address();
            let point = key_point(public_key);
            assert(point.y != 0, 'LEDGER: not a Stark key');
            self.client_keys.write(client, point);
            self.emit(Event::ClientKeySet(ClientKeySet { client, public_key }));
        }

        fn deposit(ref self: ContractState, amount: u256) {
            let client = get_caller_address();
            assert(amount != 0, 'LEDGER: zero amount');
            let balance = self.balances.read(client) + amount;
            self.balances.write(client, balance);
            self.emit(Event::Deposited(Deposited { client, amount, balance }));
            let ok = self._token().transfer_from(client, get_contract_address(), amount);
            assert(ok, 'LEDGER: transfer failed');
        }

        // Replaces any earlier request and restarts the delay; until `withdraw`, the whole balance stays
        // chargeable by authorizations the client signed.
        fn request_withdrawal(ref self: ContractState, amount: u256) {
            let client = get_caller_address();
            assert(amount != 0, 'LEDGER: zero amount');
            assert(amount <= self.balances.read(client), 'LEDGER: insufficient deposit');
            let ready_at = get_block_timestamp() + self.delay.read();
            self.pending_amount.write(client, amount);
            self.pending_ready_at.write(client, ready_at);
            self.emit(Event::WithdrawalRequested(WithdrawalRequested { client, amount, ready_at }));
        }

        // Pays the requested amount, or the balance if settlements charged it below that meanwhile.
        fn withdraw(ref self: ContractState) {
            let client = get_caller_address();
            let requested = self.pending_amount.read(client);
            assert(requested != 0, 'LEDGER: nothing to withdraw');
            assert(get_block_timestamp() >= self.pending_ready_at.read(client), 'LEDGER: withdrawal delay');
            let balance = self.balances.read(client);
            let amount = if requested < balance {
                requested
            } else {
                balance
            };
            self.balances.write(client, balance - amount);
            self.pending_amount.write(client, 0);
            self.pending_ready_at.write(client, 0);
            self.emit(Event::Withdrawn(Withdrawn { client, amount }));
            if amount != 0 {
                let ok = self._token().transfer(client, amount);
                assert(ok, 'LEDGER: transfer failed');
            }
        }

        fn settle_batch(
            ref self: ContractState,
            batch_id: u64,
            workers: Array<WorkerBatch>,
            clients: Array<SpendAuthorization>
        ) {
            assert(get_caller_address() == self.operator_addr.read(), 'LEDGER: not operator');
            assert(workers.len() != 0, 'LEDGER: no worker batch');
            let ends = get_block_timestamp() + self.window.read();
            let pool = self._pool();
            let mut paid: u256 = 0;
            let mut jobs: u64 = 0;
            let mut ws = workers.span();
            loop {
                let wb = match ws.pop_front() {
                    Option::Some(item) => *item,
                    Option::None(()) => {
                        break;
                    },
                };
                self._settle_worker(batch_id, wb, ends, pool);
                paid += wb.total.into();
                jobs += wb.count;
            };

            let mut charged: u256 = 0;
            let mut cs = clients.span();
            loop {
                let auth = match cs.pop_front() {
                    Option::Some(item) => *item,
                    Option::None(()) => {
                        break;
                    },
                };
                let charge = self._charge(auth);
                charged += charge;
            };
            assert(charged == paid, 'LEDGER: charges != payments');
            self
                .emit(
                    Event::BatchSettled(
                        BatchSettled {
                            batch_id,
                            workers: workers.len(),
                            clients: clients.len(),
                            jobs,
                            amount: paid
                        }
                    )
                );

            let token = self._token();
            let mut ws = workers.span();
            loop {
                let wb = match ws.pop_front() {
                    Option::Some(item) => *item,
                    Option::None(()) => {
                        break;
                    },
                };
                if wb.total != 0 {
                    let ok = token.transfer(wb.worker, wb.total.into());
                    assert(ok, 'LEDGER: transfer failed');
                };
            };
        }

        // Two leaves of one job with different outputs under roots the same worker signed: double signing. The
        // worker and the job id are given once, so both leaves are of that worker and that job by construction.
        fn dispute_equivocation(
            ref self: ContractState,
            worker: ContractAddress,
            job_id: felt252,
            first: LeafAt,
            second: LeafAt
        ) {
            assert(
                first.body.output_low != second.body.output_low
                    || first.body.output_high != second.body.output_high,
                'LEDGER: same output'
            );
            let e1 = self._prove_at(worker, job_id, first);
            let e2 = self._prove_at(worker, job_id, second);
            let latest = if e1 > e2 {
                e1
            } else {
                e2
            };
            self._punish(worker, job_id, latest, DOUBLE_SIGNING);
        }

        // A 'quorum' job whose leaf from `accused` has another output than the leaves of at least 2f + 1 distinct
        // validators (all the same output) for the same job, model and input: invalid compute.
        fn dispute_quorum(
            ref self: ContractState, accused: LeafProof, f: u32, validators: Array<LeafProof>
        ) {
            let pool = self._pool();
            assert(pool.validator_count() >= 3 * f + 1, 'LEDGER: too few validators');
            assert(validators.len() >= 2 * f + 1, 'LEDGER: no quorum');
            let job = accused.leaf;
            assert(job.body.level == 'quorum', 'LEDGER: not a quorum job');
            let ends = self._prove(accused);
            let mut seen: Array<ContractAddress> = ArrayTrait::new();
            let mut agreed: (felt252, felt252) = (0, 0);
            let mut vs = validators.span();
            loop {
                let v = match vs.pop_front() {
                    Option::Some(item) => *item,
                    Option::None(()) => {
                        break;
                    },
                };
                assert(v.worker != accused.worker, 'LEDGER: accused attests');
                assert(pool.is_validator(v.worker), 'LEDGER: not a validator');
                assert(!contains(seen.span(), v.worker), 'LEDGER: duplicate validator');
                seen.append(v.worker);
                let mine = v.leaf.body;
                let theirs = job.body;
                assert(v.leaf.job_id == job.job_id, 'LEDGER: not the same job');
                assert(mine.level == 'quorum', 'LEDGER: not a quorum job');
                assert(
                    mine.model_low == theirs.model_low && mine.model_high == theirs.model_high,
                    'LEDGER: other model'
                );
                assert(
                    mine.input_low == theirs.input_low && mine.input_high == theirs.input_high,
                    'LEDGER: other input'
                );
                let output = (mine.output_low, mine.output_high);
                if seen.len() == 1 {
                    agreed = output;
                    assert(
                        output != (theirs.output_low, theirs.output_high), 'LEDGER: same output'
                    );
                } else {
                    assert(output == agreed, 'LEDGER: validators disagree');
                }
                self._prove(v);
            };
            self._punish(accused.worker, job.job_id, ends, INVALID_COMPUTE);
        }

        fn job_in_batch(
            self: @ContractState,
            batch_id: u64,
            worker: ContractAddress,
            leaf: felt252,
            index: u64,
            path: Span<felt252>
        ) -> bool {
            let record = self._record(batch_id, worker);
            if record.root == 0 || index >= record.count {
                return false;
            }
            if index >= pow2(path.len()) {
                return false;
            }
            root_from_path(leaf, index, path) == record.root
        }

        fn batch(self: @ContractState, batch_id: u64, worker: ContractAddress) -> BatchRecord {
            self._record(batch_id, worker)
        }

        fn balance_of(self: @ContractState, client: ContractAddress) -> u256 {
            self.balances.read(client)
        }

        fn charged_of(self: @ContractState, client: ContractAddress) -> u256 {
            self.charged.read(client)
        }

        fn pending_withdrawal(self: @ContractState, client: ContractAddress) -> (u256, u64) {
            (self.pending_amount.read(client), self.pending_ready_at.read(client))
        }

        fn client_key(self: @ContractState, client: ContractAddress) -> felt252 {
            self.client_keys.read(client).x
        }

        fn spend_message(self: @ContractState, client: ContractAddress, cumulative: u128) -> felt252 {
            self._spend_message(client, cumulative)
        }

        fn disputed(self: @ContractState, job_id: u128, worker: ContractAddress) -> bool {
            self.disputes.read((job_id.into(), worker))
        }

        fn operator(self: @ContractState) -> ContractAddress {
            self.operator_addr.read()
        }

        fn token(self: @ContractState) -> ContractAddress {
            self.token_addr.read()
        }

        fn pool(self: @ContractState) -> ContractAddress {
            self.pool_addr.read()
        }

        fn withdrawal_delay(self: @ContractState) -> u64 {
            self.delay.read()
        }

        fn dispute_window(self: @ContractState) -> u64 {
            self.window.read()
        }
    }

    fn contains(mut items: Span<ContractAddress>, item: ContractAddress) -> bool {
        loop {
            match items.pop_front() {
                Option::Some(x) => {
                    if *x == item {
                        break true;
                    }
                },
                Option::None(()) => {
                    break false;
                },
            };
        }
    }

    fn pow2(n: u32) -> u64 {
        if n >= 64 {
            return 0xffffffffffffffff;
        }
        let mut out: u64 = 1;
        let mut i: u32 = 0;
        loop {
            if i == n {
                break;
            }
            out *= 2;
            i += 1;
        };
        out
    }

    fn leaf_hash(job_id: felt252, leaf: LeafBody) -> felt252 {
        receipt_leaf_felts(
            job_id,
            leaf.model_high,
            leaf.model_low,
            leaf.input_high,
            leaf.input_low,
            leaf.output_high,
            leaf.output_low,
            leaf.worker_key,
            leaf.level,
            leaf.timestamp_ms,
            leaf.price,
            leaf.client
        )
    }

    #[generate_trait]
    impl InternalImpl of InternalTrait {
        fn _token(self: @ContractState) -> ICiroTokenDispatcher {
            ICiroTokenDispatcher { contract_address: self.token_addr.read() }
        }

        fn _pool(self: @ContractState) -> ICDCPoolDispatcher {
            ICDCPoolDispatcher { contract_address: self.pool_addr.read() }
        }

        fn _settle_worker(
            ref self: ContractState, batch_id: u64, wb: WorkerBatch, ends: u64, pool: ICDCPoolDispatcher
        ) {
            assert(wb.count != 0, 'LEDGER: empty batch');
            assert(wb.root != 0, 'LEDGER: zero root');
            assert(self.batch_roots.read((batch_id, wb.worker)) == 0, 'LEDGER: batch exists');
            assert(pool.is_eligible(wb.worker), 'LEDGER: worker not eligible');
            let key = self._worker_key(wb.worker);
            let message = batch_message(wb.root, key.x, wb.count, wb.total);
            assert(!self.settled_messages.read(message), 'LEDGER: batch already paid');
            let (valid, flipped) = verify(message, key, wb.r, wb.s);
            assert(valid, 'LEDGER: bad batch signature');
            if flipped {
                self.worker_keys.write(wb.worker, KeyPoint { x: key.x, y: -key.y });
            }
            self.settled_messages.write(message, true);
            self.batch_roots.write((batch_id, wb.worker), wb.root);
            self.dispute_ends.write((batch_id, wb.worker, wb.root), ends);
            self.batch_sizes.write((batch_id, wb.worker), (wb.count, wb.total));
        }

        fn _charge(ref self: ContractState, auth: SpendAuthorization) -> u256 {
            let key = self.client_keys.read(auth.client);
            assert(key.x != 0, 'LEDGER: client has no key');
            let message = self._spend_message(auth.client, auth.cumulative);
            let (valid, flipped) = verify(message, key, auth.r, auth.s);
            assert(valid, 'LEDGER: bad spend signature');
            if flipped {
                self.client_keys.write(auth.client, KeyPoint { x: key.x, y: -key.y });
            }
            assert(auth.amount != 0, 'LEDGER: zero charge');
            let charge: u256 = auth.amount.into();
            let cap: u256 = auth.cumulative.into();
            let after = self.charged.read(auth.client) + charge;
            assert(after <= cap, 'LEDGER: over authorization');
            let balance = self.balances.read(auth.client);
            assert(charge <= balance, 'LEDGER: insufficient deposit');
            self.balances.write(auth.client, balance - charge);
            self.charged.write(auth.client, after);
            charge
        }

        // poseidon('CIRO_SPEND_V1', chain id, this ledger, client, cumulative).
        fn _spend_message(self: @ContractState, client: ContractAddress, cumulative: u128) -> felt252 {
            let mut felts: Array<felt252> = ArrayTrait::new();
            felts.append(SPEND_DOMAIN);
            felts.append(get_tx_info().unbox().chain_id);
            felts.append(get_contract_address().into());
            felts.append(client.into());
            felts.append(cumulative.into());
            poseidon_hash_span(felts.span())
        }

        fn _worker_key(ref self: ContractState, worker: ContractAddress) -> KeyPoint {
            let cached = self.worker_keys.read(worker);
            if cached.x != 0 {
                return cached;
            }
            let x = self._pool().worker_key(worker);
            assert(x != 0, 'LEDGER: worker not registered');
            let point = key_point(x);
            self.worker_keys.write(worker, point);
            point
        }

        fn _record(self: @ContractState, batch_id: u64, worker: ContractAddress) -> BatchRecord {
            let (count, total) = self.batch_sizes.read((batch_id, worker));
            let root = self.batch_roots.read((batch_id, worker));
            let settled_at = if root == 0 {
                0
            } else {
                self.dispute_ends.read((batch_id, worker, root)) - self.window.read()
            };
            BatchRecord { root, count, total, settled_at }
        }

        // Checks that the leaf is in the root its worker signed for that batch (a padding leaf is 0, which no
        // Poseidon leaf hash is in practice): one storage read, the end of that root's dispute window, which only a
        // settled (batch, worker, root) has; returns it.
        fn _prove(ref self: ContractState, proof: LeafProof) -> u64 {
            let leaf = leaf_hash(proof.leaf.job_id, proof.leaf.body);
            self._ends(proof.batch_id, proof.worker, leaf, proof.index, proof.path)
        }

        fn _prove_at(
            ref self: ContractState, worker: ContractAddress, job_id: felt252, at: LeafAt
        ) -> u64 {
            let (batch_id, index) = u128_safe_divmod(at.position, u128_as_non_zero(0x10000000000000000));
            self
                ._ends(
                    batch_id.try_into().unwrap(),
                    worker,
                    leaf_hash(job_id, at.body),
                    index.try_into().unwrap(),
                    at.path
                )
        }

        fn _ends(
            ref self: ContractState,
            batch_id: u64,
            worker: ContractAddress,
            leaf: felt252,
            index: u64,
            path: Span<felt252>
        ) -> u64 {
            let root = root_from_path(leaf, index, path);
            let ends = self.dispute_ends.read((batch_id, worker, root));
            if ends == 0 {
                // The failure path only: say which check failed.
                assert(self.batch_roots.read((batch_id, worker)) != 0, 'LEDGER: unknown batch');
                panic_with_felt252('LEDGER: leaf not in batch');
            }
            ends
        }

        fn _punish(
            ref self: ContractState,
            worker: ContractAddress,
            job_id: felt252,
            ends: u64,
            violation: u8
        ) {
            assert(get_block_timestamp() <= ends, 'LEDGER: dispute window over');
            assert(!self.disputes.read((job_id, worker)), 'LEDGER: already disputed');
            self.disputes.write((job_id, worker), true);
            self._pool().slash(worker, violation, job_id);
        }
    }
}
