// A small contract for the devnet's tests: storage, events, panics and block time.

#[starknet::interface]
trait ICounter<TContractState> {
    fn get(self: @TContractState) -> felt252;
    fn owner(self: @TContractState) -> starknet::ContractAddress;
    fn now(self: @TContractState) -> u64;
    fn increase(ref self: TContractState, amount: felt252);
    fn increase_not_before(ref self: TContractState, amount: felt252, not_before: u64);
}

#[starknet::contract]
mod Counter {
    use starknet::{ContractAddress, get_block_timestamp, get_caller_address};

    #[storage]
    struct Storage {
        value: felt252,
        owner: ContractAddress,
    }

    #[event]
    #[derive(Drop, starknet::Event)]
    enum Event {
        Increased: Increased, 
    }

    #[derive(Drop, starknet::Event)]
    struct Increased {
        #[key]
        caller: ContractAddress,
        amount: felt252,
        value: felt252,
    }

    #[constructor]
    fn constructor(ref self: ContractState, initial: felt252, owner: ContractAddress) {
        self.value.write(initial);
        self.owner.write(owner);
    }

    #[external(v0)]
    impl CounterImpl of super::ICounter<ContractState> {
        fn get(self: @ContractState) -> felt252 {
            self.value.read()
        }

        fn owner(self: @ContractState) -> ContractAddress {
            self.owner.read()
        }

        fn now(self: @ContractState) -> u64 {
            get_block_timestamp()
        }

        fn increase(ref self: ContractState, amount: felt252) {
            let value = self.value.read() + amount;
            // Written before the check: a revert must undo it.
            self.value.write(value);
            assert(amount != 0, 'Counter: amount is zero');
            self.emit(Event::Increased(Increased { caller: get_caller_address(), amount, value }));
        }

        fn increase_not_before(ref self: ContractState, amount: felt252, not_before: u64) {
            assert(get_block_timestamp() >= not_before, 'Counter: too early');
            CounterImpl::increase(ref self, amount);
        }
    }
}
