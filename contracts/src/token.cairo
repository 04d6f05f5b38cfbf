// CiroToken: the ERC20 that jobs are paid in and workers stake. The owner (governance) may mint,
// burn and hand over ownership.
#[starknet::contract]
mod CiroToken {
    use starknet::{ContractAddress, get_caller_address};
    use zeroable::Zeroable;
    use integer::BoundedInt;

    #[storage]
    struct Storage {
        token_name: felt252,
        token_symbol: felt252,
        token_decimals: u8,
        supply: u256,
        balances: LegacyMap<ContractAddress, u256>,
        allowances: LegacyMap<(ContractAddress, ContractAddress), u256>,
        owner_addr: ContractAddress,
    }

    #[event]
    #[derive(Drop, starknet::Event)]
    enum Event {
        Transfer: Transfer,
        Approval: Approval,
        OwnershipTransferred: OwnershipTransferred,
    }

    #[derive(Drop, starknet::Event)]
    struct Transfer {
        #[key]
        from: ContractAddress,
        #[key]
        to: ContractAddress,
        value: u256,
    }

    #[derive(Drop, starknet::Event)]
    struct Approval {
        #[key]
        owner: ContractAddress,
        #[key]
        spender: ContractAddress,
        value: u256,
    }

    #[derive(Drop, starknet::Event)]
    struct OwnershipTransferred {
        #[key]
        previous_owner: ContractAddress,
        #[key]
        new_owner: ContractAddress,
    }

    #[constructor]
    fn constructor(
        ref self: ContractState,
        name: felt252,
        symbol: felt252,
        decimals: u8,
        initial_supply: u256,
        recipient: ContractAddress,
        owner: ContractAddress
    ) {
        assert(!owner.is_zero(), 'ERC20: owner is zero');
        self.token_name.write(name);
        self.token_symbol.write(symbol);
        self.token_decimals.write(decimals);
        self.owner_addr.write(owner);
        if initial_supply != 0 {
            self._mint(recipient, initial_supply);
        }
    }

    #[external(v0)]
    impl CiroTokenImpl of ciro::interfaces::ICiroToken<ContractState> {
        fn name(self: @ContractState) -> felt252 {
            self.token_name.read()
        }

        fn symbol(self: @ContractState) -> felt252 {
            self.token_symbol.read()
        }

        fn decimals(self: @ContractState) -> u8 {
            self.token_decimals.read()
        }

        fn total_supply(self: @ContractState) -> u256 {
            self.supply.read()
        }

        fn balance_of(self: @ContractState, account: ContractAddress) -> u256 {
            self.balances.read(account)
        }

        fn allowance(
            self: @ContractState, owner: ContractAddress, spender: ContractAddress
        ) -> u256 {
            self.allowances.read((owner, spender))
        }

        fn owner(self: @ContractState) -> ContractAddress {
            self.owner_addr.read()
        }

        fn transfer(ref self: ContractState, recipient: ContractAddress, amount: u256) -> bool {
            self._transfer(get_caller_address(), recipient, amount);
            true
        }

        fn transfer_from(
            ref self: ContractState, sender: ContractAddress, recipient: ContractAddress, amount: u256
        ) -> bool {
            let spender = get_caller_address();
            let allowed = self.allowances.read((sender, spender));
            // An allowance of 2**256 - 1 is unlimited and is not decreased.
            if allowed != BoundedInt::max() {
                assert(allowed >= amount, 'ERC20: insufficient allowance');
                self.allowances.write((sender, spender), allowed - amount);
            }
            self._transfer(sender, recipient, amount);
            true
        }

        fn approve(ref self: ContractState, spender: ContractAddress, amount: u256) -> bool {
            let owner = get_caller_address();
            assert(!spender.is_zero(), 'ERC20: approve to zero');
            self.allowances.write((owner, spender), amount);
            self.emit(Event::Approval(Approval { owner, spender, value: amount }));
            true
        }

        fn mint(ref self: ContractState, recipient: ContractAddress, amount: u256) {
            self._only_owner();
            self._mint(recipient, amount);
        }

        fn burn(ref self: ContractState, account: ContractAddress, amount: u256) {
            self._only_owner();
            let balance = self.balances.read(account);
            assert(balance >= amount, 'ERC20: insufficient balance');
            self.balances.write(account, balance - amount);
            self.supply.write(self.supply.read() - amount);
            self
                .emit(
                    Event::Transfer(
                        Transfer { from: account, to: Zeroable::zero(), value: amount }
                    )
                );
        }

        fn transfer_ownership(ref self: ContractState, new_owner: ContractAddress) {
            self._only_owner();
            assert(!new_owner.is_zero(), 'ERC20: owner is zero');
            let previous_owner = self.owner_addr.read();
            self.owner_addr.write(new_owner);
            self
                .emit(
                    Event::OwnershipTransferred(OwnershipTransferred { previous_owner, new_owner })
                );
        }
    }

    #[generate_trait]
    impl InternalImpl of InternalTrait {
        fn _only_owner(self: @ContractState) {
            assert(get_caller_address() == self.owner_addr.read(), 'ERC20: not owner');
        }

        fn _transfer(
            ref self: ContractState, sender: ContractAddress, recipient: ContractAddress, amount: u256
        ) {
            assert(!recipient.is_zero(), 'ERC20: transfer to zero');
            let sender_balance = self.balances.read(sender);
            assert(sender_balance >= amount, 'ERC20: insufficient balance');
            if sender != recipient {
                self.balances.write(sender, sender_balance - amount);
                // Cannot overflow: the sum of all balances is the total supply, a u256.
                self.balances.write(recipient, self.balances.read(recipient) + amount);
            }
            self.emit(Event::Transfer(Transfer { from: sender, to: recipient, value: amount }));
        }

        fn _mint(ref self: ContractState, recipient: ContractAddress, amount: u256) {
            assert(!recipient.is_zero(), 'ERC20: mint to zero');
            // Overflow of the supply panics (u256 addition is checked), so balances cannot wrap.
            self.supply.write(self.supply.read() + amount);
            self.balances.write(recipient, self.balances.read(recipient) + amount);
            self
                .emit(
                    Event::Transfer(Transfer { from: Zeroable::zero(), to: recipient, value: amount })
                );
        }
    }
}
