//! Poll definitions: 2–16 named options and an open/close window.
//!
//! A poll is open from `opens_at` (inclusive) until `closes_at` (exclusive). The "second" of a
//! vote is counted from `opens_at`. Windows merge by taking the earliest time on each side, so
//! an "open" or "close" issued on any node wins everywhere once it has replicated.

use serde::{Deserialize, Serialize};

use crate::ids::{OptionIndex, OptionName, PollId, Second, UnixMillis};
use crate::limits::{OPTIONS_MAX, OPTIONS_MIN, POLL_SECONDS_MAX};
use crate::merge::Merge;

/// When a poll takes votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PollWindow {
    /// When the poll opened, or `None` while it is a draft.
    pub opens_at: Option<UnixMillis>,
    /// When the poll closed, or `None` while it has no end.
    pub closes_at: Option<UnixMillis>,
}

/// Where a poll stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PollStatus {
    /// Not open yet (a draft, or opening in the future).
    NotOpen,
    /// Taking votes.
    Open,
    /// No longer taking votes.
    Closed,
}

impl PollWindow {
    /// A window open from `opens_at` with no end.
    pub fn open_from(opens_at: UnixMillis) -> Self {
        Self {
            opens_at: Some(opens_at),
            closes_at: None,
        }
    }

    /// Where the poll stands at `now`.
    pub fn status(&self, now: UnixMillis) -> PollStatus {
        match (self.opens_at, self.closes_at) {
            (_, Some(closes_at)) if now >= closes_at => PollStatus::Closed,
            (Some(opens_at), _) if now >= opens_at => PollStatus::Open,
            _ => PollStatus::NotOpen,
        }
    }

    /// The poll-relative second of `now`, or `None` if the poll has not opened or `now` is past
    /// [`POLL_SECONDS_MAX`].
    pub fn second_at(&self, now: UnixMillis) -> Option<Second> {
        let opens_at = self.opens_at?;
        let elapsed_ms = now.0.checked_sub(opens_at.0)?;
        let second = Second::try_from(elapsed_ms / 1000).ok()?;
        (second <= POLL_SECONDS_MAX).then_some(second)
    }
}

fn earliest(a: Option<UnixMillis>, b: Option<UnixMillis>) -> Option<UnixMillis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Merge for PollWindow {
    fn merge(&mut self, other: &Self) -> bool {
        let merged = Self {
            opens_at: earliest(self.opens_at, other.opens_at),
            closes_at: earliest(self.closes_at, other.closes_at),
        };
        let changed = merged != *self;
        *self = merged;
        changed
    }
}

/// Why a poll definition was refused. Nothing was created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollSpecError {
    /// Fewer than [`OPTIONS_MIN`] or more than [`OPTIONS_MAX`] options.
    #[error("a poll needs {OPTIONS_MIN} to {OPTIONS_MAX} options; {count} were given")]
    OptionCount {
        /// How many options were given.
        count: usize,
    },
    /// The same option name twice.
    #[error("option {name:?} is listed twice")]
    DuplicateOption {
        /// The repeated name.
        name: String,
    },
    /// `closes_at` before `opens_at`.
    #[error("the poll closes before it opens")]
    ClosesBeforeOpening,
}

/// The decoded form of a [`PollSpec`], validated before use.
#[derive(Deserialize)]
struct RawPollSpec {
    id: PollId,
    options: Vec<OptionName>,
    window: PollWindow,
}

impl TryFrom<RawPollSpec> for PollSpec {
    type Error = PollSpecError;
    fn try_from(raw: RawPollSpec) -> Result<Self, PollSpecError> {
        PollSpec::new(raw.id, raw.options, raw.window)
    }
}

/// A poll: its name, its options in order, and its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPollSpec")]
pub struct PollSpec {
    id: PollId,
    options: Vec<OptionName>,
    /// When the poll takes votes.
    pub window: PollWindow,
}

impl PollSpec {
    /// Validates and builds a poll definition.
    pub fn new(
        id: PollId,
        options: Vec<OptionName>,
        window: PollWindow,
    ) -> Result<Self, PollSpecError> {
        if !(OPTIONS_MIN..=OPTIONS_MAX).contains(&options.len()) {
            return Err(PollSpecError::OptionCount {
                count: options.len(),
            });
        }
        for (position, name) in options.iter().enumerate() {
            if options[..position].contains(name) {
                return Err(PollSpecError::DuplicateOption {
                    name: name.to_string(),
                });
            }
        }
        if let (Some(opens_at), Some(closes_at)) = (window.opens_at, window.closes_at) {
            if closes_at < opens_at {
                return Err(PollSpecError::ClosesBeforeOpening);
            }
        }
        Ok(Self {
            id,
            options,
            window,
        })
    }

    /// The poll's name.
    pub fn id(&self) -> &PollId {
        &self.id
    }

    /// The option names, in index order.
    pub fn options(&self) -> &[OptionName] {
        &self.options
    }

    /// The digest of this definition: its ID and its options in order (see
    /// [`crate::DefinitionDigest`]); replicas exchange records of a poll only when theirs agree.
    pub fn definition(&self) -> crate::definition::DefinitionDigest {
        crate::definition::DefinitionDigest::of(&self.id, &self.options)
    }

    /// The index of the option called `name`, if there is one.
    pub fn option_index(&self, name: &str) -> Option<OptionIndex> {
        let position = self.options.iter().position(|o| o.as_str() == name)?;
        // Infallible: at most OPTIONS_MAX (16) options, checked in `new`.
        u8::try_from(position).ok().map(OptionIndex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::check_merge_laws;

    fn names(list: &[&str]) -> Vec<OptionName> {
        list.iter().map(|n| OptionName::new(*n).unwrap()).collect()
    }

    #[test]
    fn spec_validates_option_count_and_uniqueness() {
        let id = PollId::new("p").unwrap();
        let window = PollWindow::default();
        assert!(PollSpec::new(id.clone(), names(&["green", "blue"]), window).is_ok());
        assert_eq!(
            PollSpec::new(id.clone(), names(&["green"]), window),
            Err(PollSpecError::OptionCount { count: 1 })
        );
        let seventeen: Vec<String> = (0..17).map(|i| format!("o{i}")).collect();
        let seventeen: Vec<&str> = seventeen.iter().map(String::as_str).collect();
        assert!(PollSpec::new(id.clone(), names(&seventeen), window).is_err());
        assert!(matches!(
            PollSpec::new(id, names(&["a", "a"]), window),
            Err(PollSpecError::DuplicateOption { .. })
        ));
    }

    #[test]
    fn window_status_and_seconds_follow_the_clock_passed_in() {
        let window = PollWindow {
            opens_at: Some(UnixMillis(10_000)),
            closes_at: Some(UnixMillis(40_000)),
        };
        assert_eq!(window.status(UnixMillis(9_999)), PollStatus::NotOpen);
        assert_eq!(window.status(UnixMillis(10_000)), PollStatus::Open);
        assert_eq!(window.status(UnixMillis(40_000)), PollStatus::Closed);
        assert_eq!(window.second_at(UnixMillis(9_999)), None);
        assert_eq!(window.second_at(UnixMillis(10_999)), Some(0));
        assert_eq!(window.second_at(UnixMillis(25_000)), Some(15));
        assert_eq!(
            PollWindow::default().status(UnixMillis(5)),
            PollStatus::NotOpen
        );
    }

    #[test]
    fn window_merge_obeys_the_laws() {
        let times = [None, Some(UnixMillis(1)), Some(UnixMillis(5))];
        for a in times {
            for b in times {
                for c in times {
                    let w = |o, cl| PollWindow {
                        opens_at: o,
                        closes_at: cl,
                    };
                    check_merge_laws(&w(a, b), &w(b, c), &w(c, a)).unwrap();
                }
            }
        }
    }
}
