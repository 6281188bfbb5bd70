//! The one `Merge` trait every replicated type implements, and the one checker of its laws.
//!
//! A merge must be commutative, associative and idempotent (a join-semilattice), so replicas
//! that exchange state in any order, any number of times, end up equal. The checker is public
//! so every crate's property tests use the same definition of "lawful".

use std::fmt::Debug;

/// A join: fold `other` into `self`.
pub trait Merge {
    /// Merges `other` into `self`; returns whether `self` changed.
    fn merge(&mut self, other: &Self) -> bool;
}

fn merged<T: Merge + Clone>(a: &T, b: &T) -> T {
    let mut out = a.clone();
    out.merge(b);
    out
}

/// Checks commutativity, associativity and idempotence on three values, and that `merge`
/// reports a change exactly when the value changed. Returns which law failed.
pub fn check_merge_laws<T>(a: &T, b: &T, c: &T) -> Result<(), String>
where
    T: Merge + Clone + PartialEq + Debug,
{
    if merged(a, b) != merged(b, a) {
        return Err(format!("not commutative:\n a = {a:?}\n b = {b:?}"));
    }
    let left = merged(&merged(a, b), c);
    let right = merged(a, &merged(b, c));
    if left != right {
        return Err(format!(
            "not associative:\n a = {a:?}\n b = {b:?}\n c = {c:?}"
        ));
    }
    let mut twice = a.clone();
    if twice.merge(a) || twice != *a {
        return Err(format!("not idempotent:\n a = {a:?}"));
    }
    let mut reported = a.clone();
    let changed = reported.merge(b);
    if changed != (reported != *a) {
        return Err(format!(
            "merge reported changed = {changed} wrongly:\n a = {a:?}\n b = {b:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deliberately broken merge (last writer wins without order), to prove the checker fails.
    #[derive(Debug, Clone, PartialEq)]
    struct Overwrite(u8);

    impl Merge for Overwrite {
        fn merge(&mut self, other: &Self) -> bool {
            let changed = self.0 != other.0;
            self.0 = other.0;
            changed
        }
    }

    #[test]
    fn checker_catches_a_non_commutative_merge() {
        // Goal: the law checker is itself able to fail.
        let error = check_merge_laws(&Overwrite(1), &Overwrite(2), &Overwrite(3)).unwrap_err();
        assert!(error.starts_with("not commutative"), "{error}");
    }
}
