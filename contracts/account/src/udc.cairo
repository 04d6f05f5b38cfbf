// UniversalDeployer: deploys declared classes for any caller, with the interface and address rules that
// starknet-py's Deployer expects (`deployContract(classHash, salt, unique, calldata)`; with `unique`, the salt is
// pedersen(caller, salt) and the deployer address is this contract's; without, the address is computed from
// zero). Cairo 2.1 syntax.

use starknet::ContractAddress;

#[starknet::interface]
trait IUniversalDeployer<TContractState> {
    fn deployContract(
        ref self: TContractState, classHash: felt252, salt: felt252, unique: bool, calldata: Array<felt252>
    ) -> ContractAddress;
}

#[starknet::contract]
mod UniversalDeployer {
    use array::{ArrayTrait, SpanTrait};
    use hash::pedersen;
    use option::OptionTrait;
    use starknet::{ClassHash, ContractAddress, get_caller_address, deploy_syscall};
    use traits::{Into, TryInto};

    #[storage]
    struct Storage {}

    #[event]
    #[derive(Drop, starknet::Event)]
    enum Event {
        ContractDeployed: ContractDeployed, 
    }

    #[derive(Drop, starknet::Event)]
    struct ContractDeployed {
        address: ContractAddress,
        deployer: ContractAddress,
        unique: bool,
        classHash: felt252,
        calldata: Span<felt252>,
        salt: felt252,
    }

    #[external(v0)]
    impl UniversalDeployerImpl of super::IUniversalDeployer<ContractState> {
        fn deployContract(
            ref self: ContractState,
            classHash: felt252,
            salt: felt252,
            unique: bool,
            calldata: Array<felt252>
        ) -> ContractAddress {
            let deployer = get_caller_address();
            let class_hash: ClassHash = classHash.try_into().expect('UDC: invalid class hash');
            let deploy_salt = if unique {
                pedersen(deployer.into(), salt)
            } else {
                salt
            };
            let (address, _) = deploy_syscall(class_hash, deploy_salt, calldata.span(), !unique)
                .unwrap_syscall();
            self
                .emit(
                    Event::ContractDeployed(
                        ContractDeployed {
                            address, deployer, unique, classHash, calldata: calldata.span(), salt
                        }
                    )
                );
            address
        }
    }
}
