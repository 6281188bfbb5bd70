//! Vote-abuse controls, all off by default: token-bucket rate limits per client IP and per
//! voter, and signed vote tokens (the app's backend signs (poll, voter, expiry) with HMAC-SHA256
//! or Ed25519; nodes verify, and the voter becomes the vote ID, so one voter counts once per
//! poll cluster-wide through the ordinary exactly-once machinery).
//!
//! What it promises: a rate-limited or token-refused request is answered before the engine
//! sees it, so it never changes a counted vote; the limiter's memory is bounded by
//! [`RATE_LIMIT_KEYS_MAX`] keys per table, and when a table is full new keys share one overflow
//! bucket (a flood from many addresses is limited as one client, nobody already known is
//! affected). Time comes from the node's [`Clock`](crate::Clock).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tally_core::{PollId, UnixMillis, VoteId, VoteIdKey};

use super::ApiError;

/// Keys one rate-limit table tracks at most (per IP, per voter); at ~64 bytes each, 4 MiB.
pub const RATE_LIMIT_KEYS_MAX: usize = 65_536;
/// A full table is swept for idle keys at most this often, in milliseconds.
const RATE_LIMIT_SWEEP_INTERVAL_MS: u64 = 1_000;
/// Longest voter identity a token may carry, in bytes (the vote ID is a keyed hash of it).
pub const VOTER_BYTES_MAX: usize = 96;
/// Longest vote token accepted, in bytes (hex voter, expiry, hex Ed25519 signature).
pub const VOTE_TOKEN_BYTES_MAX: usize = 2 * VOTER_BYTES_MAX + 21 + 2 * 64 + 2;
/// The header that carries a vote token.
pub const VOTE_TOKEN_HEADER: &str = "x-vote-token";
/// What the vote ID of a token's voter is derived from: this prefix and the voter.
const VOTER_KEY_PREFIX: &str = "voter:";

const _: () =
    assert!(VOTER_KEY_PREFIX.len() + VOTER_BYTES_MAX <= tally_core::limits::CLIENT_KEY_BYTES_MAX);
const _: () = assert!(RATE_LIMIT_KEYS_MAX >= 1);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the table leaves buckets in a valid (if stale) state.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A rate: sustained requests per second and the burst allowed on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: u32,
    /// Bucket size: requests allowed at once after an idle spell.
    pub burst: u32,
}

/// Tokens are counted in thousandths so that refill needs no floating point.
const MILLI: u64 = 1_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    at_ms: u64,
}

impl Bucket {
    fn refill(&mut self, rate: Rate, now_ms: u64) {
        let elapsed_ms = now_ms.saturating_sub(self.at_ms);
        let capacity = u64::from(rate.burst) * MILLI;
        self.milli_tokens = capacity.min(
            self.milli_tokens
                .saturating_add(elapsed_ms.saturating_mul(u64::from(rate.per_second))),
        );
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Takes one token, or says how many whole seconds until one is there.
    fn take(&mut self, rate: Rate, now_ms: u64) -> Result<(), u32> {
        self.refill(rate, now_ms);
        if self.milli_tokens >= MILLI {
            self.milli_tokens -= MILLI;
            return Ok(());
        }
        let missing = MILLI - self.milli_tokens;
        let per_ms = u64::from(rate.per_second.max(1));
        let wait_ms = missing.div_ceil(per_ms);
        Err(u32::try_from(wait_ms.div_ceil(1_000).max(1)).unwrap_or(u32::MAX))
    }
}

struct Table<K> {
    buckets: HashMap<K, Bucket>,
    overflow: Bucket,
    swept_at_ms: u64,
}

/// A bounded table of token buckets, one per key.
pub struct RateLimiter<K> {
    rate: Rate,
    keys_max: usize,
    table: Mutex<Table<K>>,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// A limiter at `rate` tracking at most `keys_max` keys (then new keys share one bucket).
    pub fn new(rate: Rate, keys_max: usize) -> Self {
        assert!(
            rate.per_second > 0 && rate.burst > 0,
            "a rate limit of zero"
        );
        let full = Bucket {
            milli_tokens: u64::from(rate.burst) * MILLI,
            at_ms: 0,
        };
        Self {
            rate,
            keys_max: keys_max.max(1),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                overflow: full,
                swept_at_ms: 0,
            }),
        }
    }

    /// Takes a token for `key` at `now`; `Err(seconds)` to wait when its bucket is empty.
    pub fn check(&self, key: K, now: UnixMillis) -> Result<(), u32> {
        let now_ms = now.0;
        let rate = self.rate;
        let mut table = lock(&self.table);
        let table = &mut *table;
        if let Some(bucket) = table.buckets.get_mut(&key) {
            return bucket.take(rate, now_ms);
        }
        if table.buckets.len() >= self.keys_max
            && now_ms.saturating_sub(table.swept_at_ms) >= RATE_LIMIT_SWEEP_INTERVAL_MS
        {
            // Keys whose bucket has refilled carry no information: forget them.
            table.swept_at_ms = now_ms;
            table.buckets.retain(|_, bucket| {
                bucket.refill(rate, now_ms);
                bucket.milli_tokens < u64::from(rate.burst) * MILLI
            });
        }
        if table.buckets.len() >= self.keys_max {
            return table.overflow.take(rate, now_ms);
        }
        let mut bucket = Bucket {
            milli_tokens: u64::from(rate.burst) * MILLI,
            at_ms: now_ms,
        };
        let taken = bucket.take(rate, now_ms);
        table.buckets.insert(key, bucket);
        taken
    }

    /// Keys tracked now (for tests and metrics).
    pub fn keys(&self) -> usize {
        lock(&self.table).buckets.len()
    }
}

/// How vote tokens are verified.
pub enum TokenVerifier {
    /// HMAC-SHA256 with a secret shared with the app's backend.
    Hmac(ring::hmac::Key),
    /// Ed25519: the backend holds the private key, nodes the 32-byte public key.
    Ed25519(Vec<u8>),
}

/// The bytes a vote token signs.
fn signed_message(poll: &PollId, voter: &str, expires_ms: u64) -> String {
    format!("tally-vote-token-v1\n{poll}\n{voter}\n{expires_ms}")
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lowercase or uppercase hex; `None` if it is not hex.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// Makes an HMAC vote token, as the app's backend would: `hex(voter).expires_ms.hex(tag)`.
pub fn sign_hmac_token(key: &[u8], poll: &PollId, voter: &str, expires_ms: u64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, signed_message(poll, voter, expires_ms).as_bytes());
    format!(
        "{}.{expires_ms}.{}",
        to_hex(voter.as_bytes()),
        to_hex(tag.as_ref())
    )
}

/// Makes an Ed25519 vote token from a PKCS#8 private key (tests and backends in Rust).
pub fn sign_ed25519_token(
    key_pair: &ring::signature::Ed25519KeyPair,
    poll: &PollId,
    voter: &str,
    expires_ms: u64,
) -> String {
    let signature = key_pair.sign(signed_message(poll, voter, expires_ms).as_bytes());
    format!(
        "{}.{expires_ms}.{}",
        to_hex(voter.as_bytes()),
        to_hex(signature.as_ref())
    )
}

impl TokenVerifier {
    /// Checks `token` for `poll` at `now` and returns the voter it names. Changes nothing.
    pub fn verify(&self, poll: &PollId, token: &str, now: UnixMillis) -> Result<String, ApiError> {
        let bad = |why: &str| ApiError::BadVoteToken(why.to_owned());
        if token.len() > VOTE_TOKEN_BYTES_MAX {
            return Err(bad("the token is too long"));
        }
        let mut parts = token.split('.');
        let (Some(voter), Some(expires), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("a token is hex(voter).expires_ms.hex(signature)"));
        };
        let voter = from_hex(voter)
            .and_then(|v| String::from_utf8(v).ok())
            .filter(|v| !v.is_empty() && v.len() <= VOTER_BYTES_MAX)
            .ok_or_else(|| bad("the voter is not 1 to 96 bytes of hex-encoded UTF-8"))?;
        let expires_ms: u64 = expires
            .parse()
            .map_err(|_| bad("the expiry is not a number"))?;
        let signature = from_hex(signature).ok_or_else(|| bad("the signature is not hex"))?;
        let message = signed_message(poll, &voter, expires_ms);
        let verified = match self {
            Self::Hmac(key) => ring::hmac::verify(key, message.as_bytes(), &signature).is_ok(),
            Self::Ed25519(public_key) => {
                ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
                    .verify(message.as_bytes(), &signature)
                    .is_ok()
            }
        };
        if !verified {
            return Err(bad(
                "the signature does not match (wrong key, poll or voter)",
            ));
        }
        if now.0 >= expires_ms {
            return Err(bad("the token has expired"));
        }
        Ok(voter)
    }
}

/// The vote ID of a token's voter: a keyed hash with the cluster's vote-ID key, the same on
/// every node, so a voter's retries and second attempts anywhere are one vote ID.
pub fn voter_vote_id(key: &VoteIdKey, voter: &str) -> Result<VoteId, ApiError> {
    key.vote_id(&format!("{VOTER_KEY_PREFIX}{voter}"))
        .map_err(|e| ApiError::BadVoteToken(e.to_string()))
}

/// Every abuse control of a node; `None` is off.
#[derive(Default)]
pub struct AbuseControls {
    /// Limit per client IP (vote and batch routes).
    pub per_ip: Option<RateLimiter<IpAddr>>,
    /// Limit per token-verified voter (needs `tokens`).
    pub per_voter: Option<RateLimiter<VoteId>>,
    /// Require and verify vote tokens on the single-vote route.
    pub tokens: Option<TokenVerifier>,
}

impl std::fmt::Debug for AbuseControls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbuseControls")
            .field("per_ip", &self.per_ip.is_some())
            .field("per_voter", &self.per_voter.is_some())
            .field("tokens", &self.tokens.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the limiter refuses past the burst, refills at its rate, and stays bounded.
    //! Method: drive it with explicit times.

    use super::*;

    #[test]
    fn a_bucket_allows_the_burst_then_refuses_until_it_refills() {
        let limiter = RateLimiter::new(
            Rate {
                per_second: 2,
                burst: 3,
            },
            10,
        );
        for _ in 0..3 {
            assert_eq!(limiter.check(1u32, UnixMillis(1_000)), Ok(()));
        }
        assert_eq!(limiter.check(1u32, UnixMillis(1_000)), Err(1));
        assert_eq!(
            limiter.check(2u32, UnixMillis(1_000)),
            Ok(()),
            "other keys unaffected"
        );
        assert_eq!(limiter.check(1u32, UnixMillis(1_500)), Ok(()));
        assert_eq!(limiter.check(1u32, UnixMillis(1_500)), Err(1));
    }

    #[test]
    fn a_full_table_sends_new_keys_to_one_shared_bucket_and_forgets_idle_keys() {
        let limiter = RateLimiter::new(
            Rate {
                per_second: 1,
                burst: 1,
            },
            4,
        );
        for key in 0..4u32 {
            assert_eq!(limiter.check(key, UnixMillis(10_000)), Ok(()));
        }
        assert_eq!(
            limiter.check(100u32, UnixMillis(10_000)),
            Ok(()),
            "overflow bucket"
        );
        assert!(
            limiter.check(101u32, UnixMillis(10_000)).is_err(),
            "shared with 100"
        );
        assert_eq!(limiter.keys(), 4);
        // Two seconds later every bucket is full again: the sweep forgets them.
        assert_eq!(limiter.check(102u32, UnixMillis(12_000)), Ok(()));
        assert_eq!(limiter.keys(), 1);
    }

    #[test]
    fn an_hmac_token_verifies_only_for_its_poll_before_its_expiry() {
        let poll = PollId::new("superbowl").unwrap_or_else(|_| unreachable!());
        let other = PollId::new("halftime").unwrap_or_else(|_| unreachable!());
        let verifier = TokenVerifier::Hmac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k"));
        let token = sign_hmac_token(b"k", &poll, "user-42", 5_000);
        assert_eq!(
            verifier.verify(&poll, &token, UnixMillis(4_999)),
            Ok("user-42".into())
        );
        assert!(
            verifier.verify(&poll, &token, UnixMillis(5_000)).is_err(),
            "expired"
        );
        assert!(
            verifier.verify(&other, &token, UnixMillis(1)).is_err(),
            "other poll"
        );
        let forged = sign_hmac_token(b"not-k", &poll, "user-42", 5_000);
        assert!(
            verifier.verify(&poll, &forged, UnixMillis(1)).is_err(),
            "other key"
        );
        assert!(
            verifier.verify(&poll, "zz.1.00", UnixMillis(1)).is_err(),
            "garbage"
        );
    }

    #[test]
    fn an_ed25519_token_verifies_with_the_public_key() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .unwrap_or_else(|_| unreachable!());
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .unwrap_or_else(|_| unreachable!());
        use ring::signature::KeyPair;
        let verifier = TokenVerifier::Ed25519(pair.public_key().as_ref().to_vec());
        let poll = PollId::new("superbowl").unwrap_or_else(|_| unreachable!());
        let token = sign_ed25519_token(&pair, &poll, "user-7", 9_000);
        assert_eq!(
            verifier.verify(&poll, &token, UnixMillis(1)),
            Ok("user-7".into())
        );
        let tampered = token.replacen("757365722d37", "757365722d38", 1);
        assert!(verifier.verify(&poll, &tampered, UnixMillis(1)).is_err());
    }
}
