//! Sizing a poll's dedupe index for the votes it expects (`expected_votes`, from the
//! configuration, the admin API or a peer's reservation): start-up, log replay and the engine
//! all reserve through here.

use tally_core::{PollError, PollId, Replica};

use crate::config::PollConfig;

/// Sizes a configured poll's dedupe index for its `expected_votes`, if it is not that large
/// yet. Replay calls it as soon as the log names the poll, before the poll's records, so a
/// restart fills the index without growing it (each growth rehashes every ID held).
pub(crate) fn reserve_index(replica: &mut Replica, poll: &PollConfig) {
    let Some(expected) = poll.expected_votes else {
        return;
    };
    let Ok(id) = PollId::new(poll.id.clone()) else {
        return;
    };
    let _ = reserve_vote_ids(replica, &id, expected, None);
}

/// Sizes `poll`'s dedupe index for `expected` vote IDs if it holds fewer, and logs it when it
/// grew. `Ok(true)`: it grew. Start-up, replay and the admin API all reserve through this.
pub(crate) fn reserve_vote_ids(
    replica: &mut Replica,
    poll: &PollId,
    expected: u64,
    prepared: Option<tally_core::ReservedIndex>,
) -> Result<bool, PollError> {
    let wanted = usize::try_from(expected).unwrap_or(usize::MAX);
    let before = replica.state(poll).map(|s| s.vote_id_capacity());
    replica.reserve_vote_ids_with(poll, wanted, prepared)?;
    let capacity = replica.state(poll).map_or(0, |s| s.vote_id_capacity());
    let grew = before != Some(capacity);
    if grew {
        tracing::info!(%poll, expected, capacity, "dedupe index reserved");
    }
    Ok(grew)
}
