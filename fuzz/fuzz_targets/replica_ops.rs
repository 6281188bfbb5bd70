//! The replica fed arbitrary operation sequences (local votes, the durability handshake,
//! remote records with overlaps, record sync and counter merges between two replicas) and
//! checked step by step against a reference model (`tally_core::fuzzing::check_replica_ops`).
//! The same check runs on stable over the committed corpus and as a proptest.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = tally_core::fuzzing::check_replica_ops(data) {
        panic!("{broken}");
    }
});
