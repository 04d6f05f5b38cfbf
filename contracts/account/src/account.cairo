// CiroAccount: a minimal SRC-6 account (one Stark key, ECDSA over the transaction hash), the account class
// the Ciro devnet predeploys. Cairo 2.1 syntax.

use starknet::account::Call;

#[starknet::interface]
trait IAccount<TContractState> {
    fn __validate__(ref self: TContractState, calls: Array<Call>) -> felt252;
    fn __execute__(ref self: TContractState, calls: Array<Call>) -> Array<Span<felt252>>;
    fn __validate_declare__(self: @TContractState, class_hash: felt252) -> felt252;
    fn __validate_deploy__(
        self: @TContractState, class_hash: felt252, contract_address_salt: felt252, public_key: felt252
    ) -> felt252;
    fn is_valid_signature(self: @TContractState, hash: felt252, signature: Array<felt252>) -> felt252;
    fn get_public_key(self: @TContractState) -> felt252;
    fn supports_interface(self: @TContractState, interface_id: felt252) -> bool;
}

#[starknet::contract]
mod CiroAccount {
    use array::{ArrayTrait, SpanTrait};
    use box::BoxTrait;
    use ecdsa::check_ecdsa_signature;
    use option::OptionTrait;
    use starknet::account::Call;
    use starknet::{get_caller_address, get_tx_info, call_contract_syscall};
    use zeroable::Zeroable;

    const VALIDATED: felt252 = 'VALID';
    const ISRC5_ID: felt252 = 0x3f918d17e5ee77373b56385708f855659a07f75997f365cf87748628532a055;
    const ISRC6_ID: felt252 = 0x2ceccef7f994940b3962a6c67e0ba4fcd37df7d131417c604f91e03caecc1cd;

    #[storage]
    struct Storage {
        public_key: felt252, 
    }

    #[constructor]
    fn constructor(ref self: ContractState, public_key: felt252) {
        self.public_key.write(public_key);
    }

    #[external(v0)]
    impl AccountImpl of super::IAccount<ContractState> {
        fn __validate__(ref self: ContractState, calls: Array<Call>) -> felt252 {
            self.validate_transaction()
        }

        fn __execute__(ref self: ContractState, mut calls: Array<Call>) -> Array<Span<felt252>> {
            assert(get_caller_address().is_zero(), 'Account: invalid caller');
            let mut results = ArrayTrait::new();
            loop {
                match calls.pop_front() {
                    Option::Some(call) => {
                        let Call{to, selector, calldata } = call;
                        let retdata = call_contract_syscall(to, selector, calldata.span())
                            .unwrap_syscall();
                        results.append(retdata);
                    },
                    Option::None(_) => {
                        break;
                    },
                };
            };
            results
        }

        fn __validate_declare__(self: @ContractState, class_hash: felt252) -> felt252 {
            self.validate_transaction()
        }

        fn __validate_deploy__(
            self: @ContractState,
            class_hash: felt252,
            contract_address_salt: felt252,
            public_key: felt252
        ) -> felt252 {
            self.validate_transaction()
        }

        fn is_valid_signature(
            self: @ContractState, hash: felt252, signature: Array<felt252>
        ) -> felt252 {
            if self.check_signature(hash, signature.span()) {
                VALIDATED
            } else {
                0
            }
        }

        fn get_public_key(self: @ContractState) -> felt252 {
            self.public_key.read()
        }

        fn supports_interface(self: @ContractState, interface_id: felt252) -> bool {
            interface_id == ISRC5_ID || interface_id == ISRC6_ID
        }
    }

    #[generate_trait]
    impl InternalImpl of InternalTrait {
        fn validate_transaction(self: @ContractState) -> felt252 {
            let tx_info = get_tx_info().unbox();
            assert(
                self.check_signature(tx_info.transaction_hash, tx_info.signature),
                'Account: invalid signature'
            );
            VALIDATED
        }

        fn check_signature(self: @ContractState, hash: felt252, signature: Span<felt252>) -> bool {
            if signature.len() != 2 {
                return false;
            }
            check_ecdsa_signature(hash, self.public_key.read(), *signature.at(0), *signature.at(1))
        }
    }
}
