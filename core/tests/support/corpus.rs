//! Replays a committed fuzz corpus (`fuzz/corpus/TARGET`) through the check its libFuzzer
//! target runs; shared by `core/tests/fuzz_corpus.rs` and `node/tests/fuzz_corpus.rs`.

use std::path::PathBuf;

/// The corpus directory of `target`.
pub(crate) fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Feeds every file of `target`'s corpus to `check`; panics naming the first input it
/// refuses, or if the corpus holds fewer than `at_least` inputs.
pub(crate) fn replay(target: &str, at_least: usize, check: impl Fn(&[u8]) -> Result<(), String>) {
    let directory = corpus(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&directory).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(broken) = check(&data) {
            panic!("{}: {broken}", path.display());
        }
        inputs += 1;
    }
    assert!(
        inputs >= at_least.max(1),
        "the corpus in {} is missing",
        directory.display()
    );
}
