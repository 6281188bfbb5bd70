//! Vote-abuse controls, all off by default: token-bucket rate limits per client IP and per
//! voter, and signed vote tokens (the app's backend signs (poll, voter, expiry) with HMAC-SHA256
//! or Ed25519; nodes verify, and the voter becomes the vote ID, so one voter counts once per
//! poll cluster-wide through the ordinary exactly-once machinery).
//!
//! Nodes and edges both enforce them (an edge is no way around them), so they live here, in
//! the core: pure logic, time passed in as an argument. [`TrustedProxies`] says which address
//! a request comes from when a proxy (a load balancer in front of the edges) forwards it.
//!
//! What it promises: a rate-limited or token-refused request is answered before the engine
//! sees it, so it never changes a counted vote; the limiter's memory is bounded by
//! [`RATE_LIMIT_KEYS_MAX`] keys per table, and when a table is full new keys share one overflow
//! bucket (a flood from many addresses is limited as one client, nobody already known is
//! affected). Tables are ordered maps: no hash seed to draw, nothing for a client to aim at.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::{PollId, UnixMillis, VoteId, VoteIdKey};

/// Why a vote token was refused: for people (the API answers `bad_vote_token` with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

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
    assert!(VOTER_KEY_PREFIX.len() + VOTER_BYTES_MAX <= crate::limits::CLIENT_KEY_BYTES_MAX);
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
    buckets: BTreeMap<K, Bucket>,
    overflow: Bucket,
    swept_at_ms: u64,
}

/// A bounded table of token buckets, one per key.
pub struct RateLimiter<K> {
    rate: Rate,
    keys_max: usize,
    table: Mutex<Table<K>>,
}

impl<K: Ord + Copy> RateLimiter<K> {
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
                buckets: BTreeMap::new(),
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
    pub fn verify(
        &self,
        poll: &PollId,
        token: &str,
        now: UnixMillis,
    ) -> Result<String, TokenError> {
        let bad = |why: &str| TokenError(why.to_owned());
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
pub fn voter_vote_id(key: &VoteIdKey, voter: &str) -> Result<VoteId, TokenError> {
    key.vote_id(&format!("{VOTER_KEY_PREFIX}{voter}"))
        .map_err(|e| TokenError(e.to_string()))
}

/// Every abuse control of a node or edge; `None` is off.
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

/// Why an abuse setting was refused: the setting's key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct SettingError {
    /// The configuration key.
    pub setting: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// The abuse settings as a node's or an edge's configuration spells them (keys of the same
/// names); [`AbuseSettings::controls`] builds the controls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AbuseSettings {
    /// Votes per second per client IP (0: no limit).
    pub per_ip_per_second: u32,
    /// Burst per client IP.
    pub per_ip_burst: u32,
    /// Votes per second per token-verified voter (0: no limit; needs tokens).
    pub per_voter_per_second: u32,
    /// Burst per voter.
    pub per_voter_burst: u32,
    /// Hex HMAC-SHA256 key of vote tokens (empty: none).
    pub hmac_key_hex: String,
    /// Hex Ed25519 public key of vote tokens (empty: none).
    pub ed25519_public_key_hex: String,
}

impl AbuseSettings {
    /// The rate limits and vote-token verifier these settings ask for.
    pub fn controls(&self) -> Result<AbuseControls, SettingError> {
        let invalid = |setting, message: &str| SettingError {
            setting,
            message: message.to_owned(),
        };
        let hmac = self.hmac_key_hex.replace(' ', "");
        let ed25519 = self.ed25519_public_key_hex.replace(' ', "");
        let tokens = match (hmac.is_empty(), ed25519.is_empty()) {
            (true, true) => None,
            (false, false) => {
                return Err(invalid(
                    "vote_token_hmac_key",
                    "set vote_token_hmac_key or vote_token_ed25519_public_key, not both",
                ));
            }
            (false, true) => {
                let key = from_hex(&hmac).filter(|k| k.len() >= 16).ok_or_else(|| {
                    invalid("vote_token_hmac_key", "must be at least 32 hex digits")
                })?;
                Some(TokenVerifier::Hmac(ring::hmac::Key::new(
                    ring::hmac::HMAC_SHA256,
                    &key,
                )))
            }
            (true, false) => {
                let key = from_hex(&ed25519)
                    .filter(|k| k.len() == 32)
                    .ok_or_else(|| {
                        invalid("vote_token_ed25519_public_key", "must be 64 hex digits")
                    })?;
                Some(TokenVerifier::Ed25519(key))
            }
        };
        let per_voter = limiter(
            self.per_voter_per_second,
            self.per_voter_burst,
            "rate_limit_per_voter_burst",
        )?;
        if per_voter.is_some() && tokens.is_none() {
            return Err(invalid(
                "rate_limit_per_voter_per_second",
                "a per-voter limit needs vote tokens (the voter comes from the token)",
            ));
        }
        Ok(AbuseControls {
            per_ip: limiter(
                self.per_ip_per_second,
                self.per_ip_burst,
                "rate_limit_per_ip_burst",
            )?,
            per_voter,
            tokens,
        })
    }
}

/// A rate limiter if `per_second` is set; `burst` must then be at least 1.
fn limiter<K: Ord + Copy>(
    per_second: u32,
    burst: u32,
    setting: &'static str,
) -> Result<Option<RateLimiter<K>>, SettingError> {
    match (per_second, burst) {
        (0, _) => Ok(None),
        (_, 0) => Err(SettingError {
            setting,
            message: "a burst of at least 1 is needed with a rate".into(),
        }),
        (per_second, burst) => Ok(Some(RateLimiter::new(
            Rate { per_second, burst },
            RATE_LIMIT_KEYS_MAX,
        ))),
    }
}

/// Most trusted proxy ranges a configuration may list.
pub const TRUSTED_PROXIES_MAX: usize = 64;

/// Most `X-Forwarded-For` entries read, from the right (a longer header is cut there: the
/// entries further left were written by the client or proxies nobody trusts).
pub const FORWARDED_HOPS_MAX: usize = 16;

/// One range of addresses, `IP/prefix` (or a bare IP: one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Parses `10.0.0.0/8`, `fd00::/8` or `192.0.2.7`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or IP/prefix range"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {bits}"))?,
        };
        Ok(Self { network, prefix })
    }

    /// Whether `address` is in the range.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed. A request from anyone else is from its
/// socket's address, whatever it claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpRange>);

impl TrustedProxies {
    /// Parses a list of ranges (at most [`TRUSTED_PROXIES_MAX`]).
    pub fn parse(ranges: &[String]) -> Result<Self, String> {
        if ranges.len() > TRUSTED_PROXIES_MAX {
            return Err(format!(
                "{} trusted proxy ranges are listed; at most {TRUSTED_PROXIES_MAX}",
                ranges.len()
            ));
        }
        ranges
            .iter()
            .map(|r| IpRange::parse(r))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(address))
    }

    /// The client's address: the socket's `peer`, unless it is a trusted proxy; then the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy (each proxy appends the
    /// address it heard from, so entries right of the first untrusted one are proxies' own,
    /// and left of it the client may have written anything). A malformed entry where the
    /// client address should be leaves the last trusted hop as the client.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let entries = forwarded_for
            .iter()
            .rev()
            .flat_map(|header| header.rsplit(','))
            .take(FORWARDED_HOPS_MAX);
        for entry in entries {
            match entry.trim().parse::<IpAddr>() {
                Ok(address) => {
                    client = address;
                    if !self.trusts(address) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
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
    fn forwarded_for_is_believed_only_from_trusted_proxies_and_only_to_the_first_stranger() {
        // Goal: a client cannot pick its rate-limit key by writing X-Forwarded-For. Method:
        // requests from a trusted and an untrusted peer, with honest and forged headers.
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "fd00::/8".into()]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // From a stranger: its socket address, whatever it claims.
        assert_eq!(
            proxies.client_ip(ip("203.0.113.9"), &["1.2.3.4"]),
            ip("203.0.113.9")
        );
        // Through one trusted proxy: the address it heard from.
        assert_eq!(
            proxies.client_ip(ip("10.1.2.3"), &["198.51.100.7"]),
            ip("198.51.100.7")
        );
        // A forged entry left of the real one is not believed.
        assert_eq!(
            proxies.client_ip(ip("10.1.2.3"), &["6.6.6.6, 198.51.100.7, 10.9.9.9"]),
            ip("198.51.100.7")
        );
        // Entries over two headers, read from the right.
        assert_eq!(
            proxies.client_ip(ip("10.1.2.3"), &["198.51.100.7", "10.2.2.2"]),
            ip("198.51.100.7")
        );
        // No header, or garbage where the client should be: the last trusted hop.
        assert_eq!(proxies.client_ip(ip("10.1.2.3"), &[]), ip("10.1.2.3"));
        assert_eq!(proxies.client_ip(ip("10.1.2.3"), &["junk"]), ip("10.1.2.3"));
        assert_eq!(
            proxies.client_ip(ip("fd00::1"), &["2001:db8::5"]),
            ip("2001:db8::5")
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["nope".into()]).is_err());
        assert!(IpRange::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(!IpRange::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
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
