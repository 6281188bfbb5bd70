//! What the benches share: a deterministic stream of random-looking vote IDs, and a replica
//! filled with them through the same path a node takes (accept, hand out for logging, mark
//! durable every [`GROUP_COMMIT_VOTES`] votes, as group commit does).
//!
//! Vote ID `i` is a pure function of `i` (splitmix64 over a counter), so a bench can draw
//! "an ID already held" by drawing an index below the fill count, without storing the IDs.

use std::ops::Range;

use tally_core::{
    ActorId, LocalVote, NodeId, OptionIndex, OptionName, PollId, PollSpec, PollWindow, Replica,
    Second, UnixMillis, VoteId,
};

/// Votes accepted between two `mark_durable` calls: one group commit.
pub(crate) const GROUP_COMMIT_VOTES: u64 = 4096;

/// Votes stamped with the same second: 1M votes span 30 seconds, as in a 30-second burst.
/// Seconds are run-length encoded, so how often they change matters to the figures.
pub(crate) const VOTES_PER_SECOND: u64 = 33_000;

/// The fixed seed of every ID stream: runs are repeatable.
const SEED: u64 = 0x7a11_7a11_5eed_0002;

/// The splitmix64 finalizer: a bijection on `u64` that looks random.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `i`-th value of the splitmix64 stream seeded with `seed`.
pub(crate) fn random_u64(seed: u64, i: u64) -> u64 {
    mix(seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// Vote ID number `i`: random-looking, and distinct for distinct `i` (its high half is a
/// bijection of `i`).
pub(crate) fn vote_id(i: u64) -> VoteId {
    let high = random_u64(SEED, 2 * i);
    let low = random_u64(SEED, 2 * i + 1);
    VoteId((u128::from(high) << 64) | u128::from(low))
}

/// The option vote `i` chose: one of two, at random.
pub(crate) fn option_of(i: u64) -> OptionIndex {
    OptionIndex((random_u64(!SEED, i) & 1) as u8)
}

/// The poll-relative second of vote `i` in the burst.
pub(crate) fn second_of(i: u64) -> Second {
    (i / VOTES_PER_SECOND) as Second
}

/// The poll every bench votes in.
pub(crate) fn poll_id() -> PollId {
    PollId::new("superbowl").expect("valid poll name")
}

/// An actor named `node`, first incarnation.
pub(crate) fn actor(node: &str) -> ActorId {
    ActorId {
        node: NodeId::new(node).expect("valid node name"),
        incarnation: 1,
    }
}

/// An empty replica of actor "bench" holding the two-option poll [`poll_id`], open from 0.
pub(crate) fn new_replica() -> Replica {
    let mut replica = Replica::new(actor("bench"), [1, 2, 3, 4]);
    let options = vec![
        OptionName::new("green").expect("valid option name"),
        OptionName::new("blue").expect("valid option name"),
    ];
    let spec = PollSpec::new(poll_id(), options, PollWindow::open_from(UnixMillis(0)))
        .expect("valid poll");
    replica.upsert_poll(spec).expect("new poll");
    replica
}

/// Hands every accepted vote out for logging and marks it durable: one group commit.
pub(crate) fn group_commit(replica: &mut Replica) {
    for batch in replica.take_unlogged() {
        replica.mark_durable(batch.poll(), batch.last_seq());
    }
}

/// Accepts votes `ids` (vote `i` at the millisecond of its second), with a group commit after
/// every [`GROUP_COMMIT_VOTES`] votes of the range and one at the end. Returns how many were
/// counted as new.
pub(crate) fn accept_range(replica: &mut Replica, poll: &PollId, ids: Range<u64>) -> u64 {
    let mut counted = 0;
    let start = ids.start;
    for i in ids {
        let now = UnixMillis(u64::from(second_of(i)) * 1000);
        match replica.accept_local(poll, option_of(i), vote_id(i), now) {
            Ok(LocalVote::Counted { .. }) => counted += 1,
            Ok(LocalVote::Duplicate { .. }) => {}
            Err(error) => panic!("vote {i} refused: {error}"),
        }
        if (i - start + 1) % GROUP_COMMIT_VOTES == 0 {
            group_commit(replica);
        }
    }
    group_commit(replica);
    counted
}
