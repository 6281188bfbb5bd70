//! HTTP vote and batch bodies: the first byte picks the route and content type (single JSON
//! vote, JSON batch, postcard batch), the rest is the body; parsing returns instead of
//! panicking and what parses keeps the parser's promises (`tally_node::http::check_vote_body`).
//! The same check runs on stable over the committed corpus in `node/tests/fuzz_corpus.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = tally_node::http::check_vote_body(data) {
        panic!("{broken}");
    }
});
