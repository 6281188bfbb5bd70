//! Write-ahead-log recovery from arbitrary bytes: a valid log replaced, extended or
//! overwritten as the input says, then recovered (`tally_node::wal::fuzzing::check_recovery`):
//! no panic, reading changes no file, a refusal changes no file, damage is never taken for a
//! torn tail (every frame the input left intact replays, and no cut starts before one), and a
//! recovery leaves a log that reopens with no tail to cut. The same check runs on stable over
//! the committed corpus in `node/tests/fuzz_corpus.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = tally_node::wal::fuzzing::check_recovery(data) {
        panic!("{broken}");
    }
});
