// CDCPool: worker registration (Stark public keys), staking in CiroToken, unstaking with a
// cooldown, reputation, uptime, the validator set and slashing.
//
// Slashing matrix (percentages apply to the active stake AND the pending unstake; a ban never shortens an
// existing one). Slashed tokens stay in the pool, counted in `slashed_balance` (no token call in a slash, which
// keeps a dispute cheap); only governance moves them out, with `withdraw_slashed`:
//   1 double signing       30%   reputation -50   banned 90 days
//   2 downtime (> 6 h)      5%   reputation -10   banned 30 days
//   3 invalid compute      50%   reputation -75   banned 180 days
//   4 coordinated attack  100%   reputation = 0   banned forever (banned_until = 2**64 - 1)
#[starknet::contract]
mod CDCPool {
    use starknet::{
        ContractAddress, get_caller_address, get_contract_address, get_block_timestamp, get_execution_info
    };
    use box::BoxTrait;
    use integer::{u128_safe_divmod, u128_as_non_zero};
    use zeroable::Zeroable;
    use traits::Into;
    use ciro::interfaces::{ICiroTokenDispatcher, ICiroTokenDispatcherTrait};

    const REPUTATION_START: u16 = 500;
    const MAX_BPS: u16 = 10000;
    const BANNED_FOREVER: u64 = 0xffffffffffffffff;
    const DAY: u64 = 86400;

    #[storage]
    struct Storage {
        governance_addr: ContractAddress,
        token_addr: ContractAddress,
        job_manager_addr: ContractAddress,
        // CiroLedger (settlement v2), which slashes on proven disputes; zero until governance sets it.
        ledger_addr: ContractAddress,
        min_stake_amount: u256,
        unstake_cooldown: u64,
        // Stark public key of each registered worker (0 = unregistered).
        keys: LegacyMap<ContractAddress, felt252>,
        stakes: LegacyMap<ContractAddress, u256>,
        pending_amount: LegacyMap<ContractAddress, u256>,
        pending_ready_at: LegacyMap<ContractAddress, u64>,
        reputation: LegacyMap<ContractAddress, u16>,
        ban_until: LegacyMap<ContractAddress, u64>,
        // 10000 - uptime, so that an unset entry reads as 100% uptime.
        downtime_bps: LegacyMap<ContractAddress, u16>,
        // The validator set: a dense list plus each member's index + 1 (0 = not a validator).
        validator_at: LegacyMap<u32, ContractAddress>,
        validator_pos: LegacyMap<ContractAddress, u32>,
        n_validators: u32,
        // Slashed tokens held for governance (part of this pool's token balance, owed to no worker).
        slashed: u256,
    }

    #[event]
    #[derive(Drop, starknet::Event)]
    enum Event {
        WorkerRegistered: WorkerRegistered,
        Staked: Staked,
        UnstakeRequested: UnstakeRequested,
        Withdrawn: Withdrawn,
        Slashed: Slashed,
        SlashedWithdrawn: SlashedWithdrawn,
        ValidatorAdded: ValidatorAdded,
        ValidatorRemoved: ValidatorRemoved,
        JobManagerSet: JobManagerSet,
        LedgerSet: LedgerSet,
        UptimeSet: UptimeSet,
    }

    #[derive(Drop, starknet::Event)]
    struct WorkerRegistered {
        #[key]
        worker: ContractAddress,
        public_key: felt252,
    }

    #[derive(Drop, starknet::Event)]
    struct Staked {
        #[key]
        worker: ContractAddress,
        #[key]
        provider: ContractAddress,
        amount: u256,
        total: u256,
    }

    #[derive(Drop, starknet::Event)]
    struct UnstakeRequested {
        #[key]
        worker: ContractAddress,
        amount: u256,
        pending: u256,
        ready_at: u64,
    }

    #[derive(Drop, starknet::Event)]
    struct Withdrawn {
        #[key]
        worker: ContractAddress,
        amount: u256,
    }

    #[derive(Drop, starknet::Event)]
    struct Slashed {
        #[key]
        worker: ContractAddress,
        violation: u8,
        amount: u256,
        evidence: felt252,
    }

    #[derive(Drop, starknet::Event)]
    struct SlashedWithdrawn {
        #[key]
        recipient: ContractAddress,
        amount: u256,
    }

    #[derive(Drop, starknet::Event)]
    struct ValidatorAdded {
        #[key]
        worker: ContractAddress,
    }

    #[derive(Drop, starknet::Event)]
    struct ValidatorRemoved {
        #[key]
        worker: ContractAddress,
    }

    #[derive(Drop, starknet::Event)]
    struct JobManagerSet {
        job_manager: ContractAddress,
    }

    #[derive(Drop, starknet::Event)]
    struct LedgerSet {
        ledger: ContractAddress,
    }

    #[derive(Drop, starknet::Event)]
    struct UptimeSet {
        #[key]
        worker: ContractAddress,
        uptime_bps: u16,
    }

    #[constructor]
    fn constructor(
        ref self: ContractState,
        governance: ContractAddress,
        token: ContractAddress,
        min_stake: u256,
        unstake_cooldown: u64
    ) {
        assert(!governance.is_zero(), 'POOL: governance is zero');
        assert(!token.is_zero(), 'POOL: token is zero');
        self.governance_addr.write(governance);
        self.token_addr.write(token);
        self.min_stake_amount.write(min_stake);
        self.unstake_cooldown.write(unstake_cooldown);
    }

    #[external(v0)]
    impl CDCPoolImpl of ciro::interfaces::ICDCPool<ContractState> {
        fn set_job_manager(ref self: ContractState, job_manager: ContractAddress) {
            self._only_governance();
            self.job_manager_addr.write(job_manager);
            self.emit(Event::JobManagerSet(JobManagerSet { job_manager }));
        }

        fn register_worker(ref self: ContractState, public_key: felt252) {
            let worker = get_caller_address();
            assert(public_key != 0, 'POOL: zero key');
            assert(self.keys.read(worker) == 0, 'POOL: already registered');
            self.keys.write(worker, public_key);
            self.reputation.write(worker, REPUTATION_START);
            self.emit(Event::WorkerRegistered(WorkerRegistered { worker, public_key }));
        }

        fn stake_for_worker(ref self: ContractState, worker: ContractAddress, amount: u256) {
            assert(self.keys.read(worker) != 0, 'POOL: not registered');
            assert(amount != 0, 'POOL: zero amount');
            let provider = get_caller_address();
            // Effects first; the transfer reverts the whole call if the provider cannot pay.
            let total = self.stakes.read(worker) + amount;
            self.stakes.write(worker, total);
            self.emit(Event::Staked(Staked { worker, provider, amount, total }));
            let ok = self._token().transfer_from(provider, get_contract_address(), amount);
            assert(ok, 'POOL: transfer failed');
        }

        fn request_unstake(ref self: ContractState, amount: u256) {
            let worker = get_caller_address();
            assert(amount != 0, 'POOL: zero amount');
            let stake = self.stakes.read(worker);
            assert(amount <= stake, 'POOL: insufficient stake');
            self.stakes.write(worker, stake - amount);
            let pending = self.pending_amount.read(worker) + amount;
            self.pending_amount.write(worker, pending);
            let ready_at = get_block_timestamp() + self.unstake_cooldown.read();
            self.pending_ready_at.write(worker, ready_at);
            self.emit(Event::UnstakeRequested(UnstakeRequested { worker, amount, pending, ready_at }));
        }

        fn withdraw(ref self: ContractState) {
            let worker = get_caller_address();
            let amount = self.pending_amount.read(worker);
            assert(amount != 0, 'POOL: nothing to withdraw');
            assert(get_block_timestamp() >= self.pending_ready_at.read(worker), 'POOL: cooldown');
            self.pending_amount.write(worker, 0);
            self.pending_ready_at.write(worker, 0);
            self.emit(Event::Withdrawn(Withdrawn { worker, amount }));
            let ok = self._token().transfer(worker, amount);
            assert(ok, 'POOL: transfer failed');
        }

        fn slash(ref self: ContractState, worker: ContractAddress, violation: u8, evidence: felt252) {
            // One execution-info syscall for the caller and the block time.
            let info = get_execution_info().unbox();
            self._only_slasher(info.caller_address);
            assert(self.keys.read(worker) != 0, 'POOL: not registered');
            let (pct, reputation_loss, ban_seconds) = penalty(violation);

            // A slot whose cut is 0 is left as it is (no write).
            let stake = self.stakes.read(worker);
            let stake_cut = percent_of(stake, pct);
            if stake_cut != 0 {
                self.stakes.write(worker, stake - stake_cut);
            }
            let pending = self.pending_amount.read(worker);
            let pending_cut = percent_of(pending, pct);
            if pending_cut != 0 {
                self.pending_amount.write(worker, pending - pending_cut);
            }

            let reputation = self.reputation.read(worker);
            if reputation > reputation_loss {
                self.reputation.write(worker, reputation - reputation_loss);
            } else if reputation != 0 {
                self.reputation.write(worker, 0);
            }

            let until = if ban_seconds == BANNED_FOREVER {
                BANNED_FOREVER
            } else {
                info.block_info.unbox().block_timestamp + ban_seconds
            };
            if until > self.ban_until.read(worker) {
                self.ban_until.write(worker, until);
            }

            let amount = stake_cut + pending_cut;
            if amount != 0 {
                self.slashed.write(self.slashed.read() + amount);
            }
            self.emit(Event::Slashed(Slashed { worker, violation, amount, evidence }));
        }

        // Governance moves every slashed token held so far to `recipient`.
        fn withdraw_slashed(ref self: ContractState, recipient: ContractAddress) {
            self._only_governance();
            assert(!recipient.is_zero(), 'POOL: recipient is zero');
            let amount = self.slashed.read();
            assert(amount != 0, 'POOL: nothing slashed');
            self.slashed.write(0);
            self.emit(Event::SlashedWithdrawn(SlashedWithdrawn { recipient, amount }));
            let ok = self._token().transfer(recipient, amount);
            assert(ok, 'POOL: transfer failed');
        }

        fn slashed_balance(self: @ContractState) -> u256 {
            self.slashed.read()
        }

        fn add_validator(ref self: ContractState, worker: ContractAddress) {
            self._only_governance();
            assert(self.keys.read(worker) != 0, 'POOL: not registered');
            assert(self.validator_pos.read(worker) == 0, 'POOL: already validator');
            let count = self.n_validators.read();
            self.validator_at.write(count, worker);
            self.validator_pos.write(worker, count + 1);
            self.n_validators.write(count + 1);
            self.emit(Event::ValidatorAdded(ValidatorAdded { worker }));
        }

        fn remove_validator(ref self: ContractState, worker: ContractAddress) {
            self._only_governance();
            let pos = self.validator_pos.read(worker);
            assert(pos != 0, 'POOL: not validator');
            let last = self.n_validators.read() - 1;
            let index = pos - 1;
            if index != last {
                // Swap-remove: the last member takes the freed slot.
                let moved = self.validator_at.read(last);
                self.validator_at.write(index, moved);
                self.validator_pos.write(moved, pos);
            }
            self.validator_at.write(last, Zeroable::zero());
            self.validator_pos.write(worker, 0);
            self.n_validators.write(last);
            self.emit(Event::ValidatorRemoved(ValidatorRemoved { worker }));
        }

        fn set_uptime(ref self: ContractState, worker: ContractAddress, uptime_bps: u16) {
            self._only_slasher(get_caller_address());
            assert(uptime_bps <= MAX_BPS, 'POOL: uptime above 10000');
            self.downtime_bps.write(worker, MAX_BPS - uptime_bps);
            self.emit(Event::UptimeSet(UptimeSet { worker, uptime_bps }));
        }

        fn worker_key(self: @ContractState, worker: ContractAddress) -> felt252 {
            self.keys.read(worker)
        }

        fn stake_of(self: @ContractState, worker: ContractAddress) -> u256 {
            self.stakes.read(worker)
        }

        fn pending_unstake(self: @ContractState, worker: ContractAddress) -> (u256, u64) {
            (self.pending_amount.read(worker), self.pending_ready_at.read(worker))
        }

        fn reputation_of(self: @ContractState, worker: ContractAddress) -> u16 {
            self.reputation.read(worker)
        }

        fn banned_until(self: @ContractState, worker: ContractAddress) -> u64 {
            self.ban_until.read(worker)
        }

        fn uptime_of(self: @ContractState, worker: ContractAddress) -> u16 {
            MAX_BPS - self.downtime_bps.read(worker)
        }

        fn is_eligible(self: @ContractState, worker: ContractAddress) -> bool {
            if self.keys.read(worker) == 0 {
                return false;
            }
            if self.stakes.read(worker) < self.min_stake_amount.read() {
                return false;
            }
            get_block_timestamp() >= self.ban_until.read(worker)
        }

        fn is_validator(self: @ContractState, worker: ContractAddress) -> bool {
            self.validator_pos.read(worker) != 0
        }

        fn validator_count(self: @ContractState) -> u32 {
            self.n_validators.read()
        }

        fn min_stake(self: @ContractState) -> u256 {
            self.min_stake_amount.read()
        }

        fn job_manager(self: @ContractState) -> ContractAddress {
            self.job_manager_addr.read()
        }

        fn governance(self: @ContractState) -> ContractAddress {
            self.governance_addr.read()
        }

        // Sum over the current validators of stake * reputation * uptime_bps.
        fn security(self: @ContractState) -> u256 {
            let count = self.n_validators.read();
            let mut total: u256 = 0;
            let mut i: u32 = 0;
            loop {
                if i == count {
                    break;
                }
                let worker = self.validator_at.read(i);
                let reputation: u256 = self.reputation.read(worker).into();
                let uptime: u256 = (MAX_BPS - self.downtime_bps.read(worker)).into();
                total += self.stakes.read(worker) * reputation * uptime;
                i += 1;
            };
            total
        }
    }

    // The ledger's slashing right: a separate interface so that ICDCPool stays as the JobManager uses it.
    #[external(v0)]
    impl CDCPoolLedgerImpl of ciro::ledger_api::IPoolLedger<ContractState> {
        fn set_ledger(ref self: ContractState, ledger: ContractAddress) {
            self._only_governance();
            self.ledger_addr.write(ledger);
            self.emit(Event::LedgerSet(LedgerSet { ledger }));
        }

        fn ledger(self: @ContractState) -> ContractAddress {
            self.ledger_addr.read()
        }
    }

    // (percent of the stake, reputation loss, ban in seconds or BANNED_FOREVER) of a violation.
    fn penalty(violation: u8) -> (u128, u16, u64) {
        if violation == 1 {
            (30, 50, 90 * DAY) // double signing
        } else if violation == 2 {
            (5, 10, 30 * DAY) // downtime over 6 h
        } else if violation == 3 {
            (50, 75, 180 * DAY) // invalid compute
        } else if violation == 4 {
            (100, MAX_BPS, BANNED_FOREVER) // coordinated attack: everything, reputation to 0
        } else {
            panic_with_felt252('POOL: unknown violation')
        }
    }

    // floor(amount * pct / 100) for pct <= 100, without the intermediate product (which could overflow): in u128
    // arithmetic (one divmod) when the amount fits 128 bits, as every real stake does.
    fn percent_of(amount: u256, pct: u128) -> u256 {
        if amount.high == 0 {
            let (q, r) = u128_safe_divmod(amount.low, u128_as_non_zero(100));
            return u256 { low: q * pct + r * pct / 100, high: 0 };
        }
        let p: u256 = pct.into();
        amount / 100 * p + (amount % 100) * p / 100
    }

    #[generate_trait]
    impl InternalImpl of InternalTrait {
        fn _token(self: @ContractState) -> ICiroTokenDispatcher {
            ICiroTokenDispatcher { contract_address: self.token_addr.read() }
        }

        fn _only_governance(self: @ContractState) {
            assert(get_caller_address() == self.governance_addr.read(), 'POOL: not governance');
        }

        // The ledger (once set) or the job manager (once set) or governance; the ledger, which slashes on
        // disputes anyone sends, is checked first (one storage read).
        fn _only_slasher(self: @ContractState, caller: ContractAddress) {
            let ledger = self.ledger_addr.read();
            if !ledger.is_zero() && caller == ledger {
                return;
            }
            let job_manager = self.job_manager_addr.read();
            if !job_manager.is_zero() && caller == job_manager {
                return;
            }
            assert(caller == self.governance_addr.read(), 'POOL: not authorized');
        }
    }
}
