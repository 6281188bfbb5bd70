//! Write-ahead-log recovery from arbitrary bytes: a valid log replaced, extended or
//! overwritten as the input says, then recovered (`tally_node::wal::fuzzing::check_recovery`):
//! no panic, a refusal changes no file, a recovery leaves a log that reopens cleanly. The same
//! check runs on stable over the committed corpus in `node/tests/fuzz_corpus.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = tally_node::wal::fuzzing::check_recovery(data) {
        panic!("{broken}");
    }
});
