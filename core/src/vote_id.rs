//! Vote IDs: the client's idempotency key, 128 bits, the same on every node.
//!
//! A UUID is taken as sent. Any other client key of 1 to [`CLIENT_KEY_BYTES_MAX`] bytes is
//! mapped to 128 bits by BLAKE3 in keyed mode with the cluster's [`VoteIdKey`], which every
//! node shares, so a retry to another region maps to the same ID. Clients do not know the key,
//! so they cannot aim collisions.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::CLIENT_KEY_BYTES_MAX;

/// A vote's idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VoteId(pub u128);

impl VoteId {
    /// The 16 bytes of the ID, big-endian (the UUID byte order).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The ID from 16 big-endian bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(bytes))
    }
}

impl fmt::Display for VoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_u128(self.0).hyphenated().fmt(f)
    }
}

/// The cluster-wide key that maps non-UUID client keys to vote IDs. Part of the cluster's
/// configuration: every node of a cluster must use the same one.
#[derive(Clone, PartialEq, Eq)]
pub struct VoteIdKey([u8; 32]);

impl VoteIdKey {
    /// A key from 32 bytes of configuration.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// What proves a node holds a given [`VoteIdKey`] without revealing it: BLAKE3's key
/// derivation from the key under a fixed context (a domain of its own, apart from the keyed
/// hashes that make vote IDs), truncated to 128 bits. Peers exchange it in their hello and
/// refuse each other when it differs (a retry to the other would not be recognised); an edge
/// that maps client keys to vote IDs checks its key against a node's the same way. Learning it
/// tells nothing of the key, nor of any vote ID the key makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteIdKeyProof(pub [u8; 16]);

/// The key-derivation context of [`VoteIdKey::proof`].
const KEY_PROOF_CONTEXT: &str = "tally 2026 vote_id_key proof v1";

/// The development key that maps non-UUID vote IDs to 128 bits (64 hex digits, spaces
/// allowed): every node and edge uses it unless configured otherwise. Production clusters
/// set their own `vote_id_key`, the same on every node and edge.
pub const DEV_VOTE_ID_KEY_HEX: &str =
    "7461 6c6c 792d 6465 762d 766f 7465 2d69 642d 6b65 792d 3230 3236 2d30 312d 3031";

impl VoteIdKey {
    /// Parses a key written as 64 hex digits (whitespace ignored), as `vote_id_key` is in a
    /// node's or an edge's configuration.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let hex: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if hex.len() != 64 {
            return Err(format!("must be 64 hex digits, got {}", hex.len()));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = hex
                .get(2 * i..2 * i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| "must be hex digits".to_string())?;
        }
        Ok(Self::new(key))
    }

    /// The proof that this key is held (see [`VoteIdKeyProof`]).
    pub fn proof(&self) -> VoteIdKeyProof {
        let derived = blake3::derive_key(KEY_PROOF_CONTEXT, &self.0);
        let mut proof = [0u8; 16];
        proof.copy_from_slice(&derived[..16]);
        VoteIdKeyProof(proof)
    }

    /// Whether `proof` was made with this key: `Err` says why not, in words an operator can
    /// act on.
    pub fn check_proof(&self, proof: &VoteIdKeyProof) -> Result<(), String> {
        if self.proof() == *proof {
            Ok(())
        } else {
            Err(
                "the peer's vote_id_key differs from this node's: a vote retried at the other \
                 node would count twice; set the same vote_id_key on every node of the cluster"
                    .into(),
            )
        }
    }
}

impl fmt::Debug for VoteIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VoteIdKey(..)")
    }
}

/// Why a client's vote ID was refused. Nothing was counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteIdError {
    /// The key was empty.
    #[error("vote ID is empty")]
    Empty,
    /// The key was longer than [`CLIENT_KEY_BYTES_MAX`] bytes.
    #[error("vote ID is {length} bytes long; at most {CLIENT_KEY_BYTES_MAX} are allowed")]
    TooLong {
        /// Length of the refused key in bytes.
        length: usize,
    },
}

impl VoteIdKey {
    /// Maps a client key to a vote ID: a UUID (any of its usual text forms) as sent, anything
    /// else through keyed BLAKE3, truncated to 128 bits.
    pub fn vote_id(&self, client_key: &str) -> Result<VoteId, VoteIdError> {
        if client_key.is_empty() {
            return Err(VoteIdError::Empty);
        }
        if client_key.len() > CLIENT_KEY_BYTES_MAX {
            return Err(VoteIdError::TooLong {
                length: client_key.len(),
            });
        }
        if let Ok(uuid) = uuid::Uuid::try_parse(client_key) {
            return Ok(VoteId(uuid.as_u128()));
        }
        let hash = blake3::keyed_hash(&self.0, client_key.as_bytes());
        let mut first_16 = [0u8; 16];
        first_16.copy_from_slice(&hash.as_bytes()[..16]);
        Ok(VoteId::from_bytes(first_16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_taken_as_sent_in_any_text_form() {
        // Goal: the same UUID typed in different forms is the same vote.
        let key = VoteIdKey::new([7; 32]);
        let hyphenated = key.vote_id("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let simple = key.vote_id("67E5504410B1426F9247BB680E5FE0C8").unwrap();
        assert_eq!(hyphenated, simple);
        assert_eq!(hyphenated.0, 0x67e5504410b1426f9247bb680e5fe0c8);
        assert_eq!(
            hyphenated.to_string(),
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        );
    }

    #[test]
    fn other_keys_hash_with_the_cluster_key() {
        // Goal: same key + same cluster key -> same ID on every node; another cluster key differs.
        let cluster = VoteIdKey::new([1; 32]);
        let same_cluster = VoteIdKey::new([1; 32]);
        let other = VoteIdKey::new([2; 32]);
        let id = cluster.vote_id("tap-12345").unwrap();
        assert_eq!(id, same_cluster.vote_id("tap-12345").unwrap());
        assert_ne!(id, other.vote_id("tap-12345").unwrap());
        assert_ne!(id, cluster.vote_id("tap-12346").unwrap());
    }

    #[test]
    fn a_key_proof_matches_only_the_same_key_and_is_not_the_key() {
        // Goal: two nodes learn whether they share a key, and nothing else.
        let key = VoteIdKey::new([1; 32]);
        let proof = key.proof();
        assert_eq!(VoteIdKey::new([1; 32]).check_proof(&proof), Ok(()));
        let other = VoteIdKey::new([2; 32]).check_proof(&proof).unwrap_err();
        assert!(other.contains("vote_id_key"), "{other}");
        assert_ne!(proof.0[..], key.0[..16]);
        // The proof is not the vote ID of any client key naming its context.
        assert_ne!(key.vote_id(KEY_PROOF_CONTEXT).unwrap().to_bytes(), proof.0);
    }

    #[test]
    fn empty_and_oversized_keys_are_refused() {
        let key = VoteIdKey::new([0; 32]);
        assert_eq!(key.vote_id(""), Err(VoteIdError::Empty));
        let long = "k".repeat(CLIENT_KEY_BYTES_MAX + 1);
        assert_eq!(
            key.vote_id(&long),
            Err(VoteIdError::TooLong {
                length: CLIENT_KEY_BYTES_MAX + 1
            })
        );
        assert!(key.vote_id(&"k".repeat(CLIENT_KEY_BYTES_MAX)).is_ok());
    }
}
