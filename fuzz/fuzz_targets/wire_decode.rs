//! Peer frames: any byte string decodes to `Ok` or `Err` without panicking, and whatever
//! decodes re-encodes to a frame that decodes to the same message. The same check runs on
//! stable over the committed corpus in `core/tests/fuzz_corpus.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = tally_core::wire::check_frame(data) {
        panic!("{broken}");
    }
});
