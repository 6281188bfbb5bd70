//! Identifiers and small value types: who voted for what, where and when.
//!
//! Every ID is a newtype so a poll name can never be passed where a node name is expected.
//! Names that come from outside (poll IDs, node IDs) are validated on construction, so a
//! value of these types is always well formed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::{NAME_BYTES_MAX, OPTIONS_MAX};

/// Why a name (poll ID, node ID, option name) was refused. Nothing was created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty.
    #[error("name is empty")]
    Empty,
    /// The name was longer than [`NAME_BYTES_MAX`] bytes.
    #[error("name is {length} bytes long; at most {NAME_BYTES_MAX} are allowed")]
    TooLong {
        /// Length of the refused name in bytes.
        length: usize,
    },
    /// The name held a character outside `A-Z a-z 0-9 - _ .`.
    #[error("name {name:?} may only hold letters, digits, '-', '_' and '.'")]
    BadCharacter {
        /// The refused name.
        name: String,
    },
}

fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(NameError::TooLong { length: name.len() });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(allowed) {
        return Err(NameError::BadCharacter {
            name: name.to_owned(),
        });
    }
    Ok(())
}

macro_rules! validated_name {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `name` and wraps it.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                validate_name(&name)?;
                Ok(Self(name))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        // Decoding validates too, so a peer or a file cannot smuggle in a bad name.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                Self::new(name).map_err(serde::de::Error::custom)
            }
        }
    };
}

validated_name!(
    /// The name of a poll, such as `superbowl`.
    PollId
);
validated_name!(
    /// The name of a node, such as `us-east-1`. A certificate names its node.
    NodeId
);
validated_name!(
    /// The name of one option of a poll, such as `green`.
    OptionName
);

/// One node incarnation: the node's name plus a number drawn when the node started with an
/// empty data directory. A new incarnation never reuses an old one's counters or sequence
/// numbers. Ordered by (node, incarnation); that order breaks ties in the winner rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActorId {
    /// The node this actor runs on.
    pub node: NodeId,
    /// Which life of that node.
    pub incarnation: u64,
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ActorText(&self.node, self.incarnation).fmt(f)
    }
}

/// An actor's text, `node#incarnation` (16 hex digits), as [`ActorId`] displays it, from its
/// parts: for writers that have the node's name and the incarnation but no `ActorId` (which
/// would cost a copy of the name).
#[derive(Debug, Clone, Copy)]
pub struct ActorText<'a>(pub &'a NodeId, pub u64);

impl fmt::Display for ActorText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:016x}", self.0, self.1)
    }
}

/// The position of an option within its poll's option list, `0..options.len()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OptionIndex(pub u8);

impl OptionIndex {
    /// The index as a `usize`, for indexing arrays.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

const _: () = assert!(OPTIONS_MAX <= u8::MAX as usize + 1);

/// A sequence number in one actor's log. The first record of an actor has seq 1; 0 means
/// "nothing held" in a version vector.
pub type Seq = u64;

/// Seconds since a poll opened: the bucket of the per-second time series.
pub type Second = u32;

/// Milliseconds since the Unix epoch. Core never reads a clock: callers pass this in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixMillis(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_on_construction_and_decoding() {
        // Goal: no ill-formed name can exist, whether built in code or decoded from bytes.
        assert!(PollId::new("superbowl-2026_q1.final").is_ok());
        assert_eq!(PollId::new(""), Err(NameError::Empty));
        assert!(matches!(
            PollId::new("a b"),
            Err(NameError::BadCharacter { .. })
        ));
        assert!(matches!(
            NodeId::new("x".repeat(NAME_BYTES_MAX + 1)),
            Err(NameError::TooLong { .. })
        ));
        let bytes = postcard::to_allocvec(&"bad name").unwrap();
        assert!(postcard::from_bytes::<PollId>(&bytes).is_err());
    }

    #[test]
    fn actors_order_by_node_then_incarnation() {
        // Goal: the winner rule's tie-break is a total order independent of the local node.
        let a = |node: &str, incarnation| ActorId {
            node: NodeId::new(node).unwrap(),
            incarnation,
        };
        assert!(a("a", 9) < a("b", 1));
        assert!(a("b", 1) < a("b", 2));
    }
}
