// Ciro settlement contracts (Cairo 2.1).
//   token:       CiroToken, the ERC20 jobs are paid in and workers stake.
//   pool:        CDCPool, worker registration, staking, reputation, validators, slashing.
//   job_manager: JobManager, job escrow and on-chain verification of receipts / quorums.
//   signature:   Stark ECDSA verification with a cached public key point (used by JobManager).
//   merkle:      Poseidon Merkle paths over receipt leaves (one signature a batch).
//   ledger_api:  CiroLedger's interface and types (and CDCPool's set_ledger).
//   ledger:      CiroLedger, settlement v2: deposits, signed spend authorizations, per-batch roots, disputes.
mod interfaces;
mod signature;
mod merkle;
mod token;
mod pool;
mod job_manager;
mod ledger_api;
mod ledger;
