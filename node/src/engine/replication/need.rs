//! What a reply waits for under replicated acks ([`Need`]), and whether an ack peer's
//! confirmations cover it: confirmations are kept per poll and incarnation of this node, so a
//! confirmation of one incarnation's records never answers a reply that waits for another's.

use std::collections::BTreeMap;

use tally_core::{MovedRecords, PollId, Seq};

/// The records of this node a reply waits for an ack peer to confirm, in the reply's poll:
/// per incarnation of this node, the highest seq (an ack peer's answer is contiguous, so
/// confirming a seq confirms every one below it). Almost always the current incarnation
/// alone; a duplicate of a record a retired incarnation made durable names that one.
/// Bounded by the incarnations a poll holds records of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Need {
    first: Option<(u64, Seq)>,
    more: Vec<(u64, Seq)>,
}

impl Need {
    /// Seq `seq` of incarnation `incarnation` (nothing for seq 0).
    pub(crate) fn on(incarnation: u64, seq: Seq) -> Self {
        let mut need = Self::default();
        need.add(incarnation, seq);
        need
    }

    fn add(&mut self, incarnation: u64, seq: Seq) {
        if seq == 0 {
            return;
        }
        let entry = match &mut self.first {
            None => return self.first = Some((incarnation, seq)),
            Some(first) if first.0 == incarnation => first,
            Some(_) => match self.more.iter_mut().find(|e| e.0 == incarnation) {
                Some(entry) => entry,
                None => return self.more.push((incarnation, seq)),
            },
        };
        entry.1 = entry.1.max(seq);
    }

    /// Adds what `other` needs.
    pub(crate) fn merge(&mut self, other: &Need) {
        for (incarnation, seq) in other.entries() {
            self.add(incarnation, seq);
        }
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = (u64, Seq)> + '_ {
        self.first.iter().chain(&self.more).copied()
    }

    /// After a move from incarnation `retired` to `incarnation`: a seq whose record moved
    /// (it was in flight) becomes the new one's, and the retired records below the moved
    /// ones stay needed (conservatively: the reply may hold a duplicate of one of them).
    pub(crate) fn move_to(&mut self, retired: u64, incarnation: u64, moved: &[&MovedRecords]) {
        let mut next = Need::default();
        for (of, seq) in self.entries() {
            let renumbered = moved.iter().find_map(|m| Some((m, m.new_seq(seq)?)));
            match renumbered {
                Some((m, new_seq)) if of == retired => {
                    next.add(incarnation, new_seq);
                    next.add(retired, m.old_first_seq - 1);
                }
                _ => next.add(of, seq),
            }
        }
        *self = next;
    }
}

/// The highest seq of `incarnation` in `poll` an ack peer confirmed.
pub(super) fn confirmed_in(
    confirmed: &BTreeMap<PollId, BTreeMap<u64, Seq>>,
    poll: &PollId,
    incarnation: u64,
) -> Seq {
    confirmed
        .get(poll)
        .and_then(|c| c.get(&incarnation))
        .copied()
        .unwrap_or(0)
}

/// Whether `confirmed` covers everything `need` names in `poll`.
pub(super) fn covers(
    confirmed: &BTreeMap<PollId, BTreeMap<u64, Seq>>,
    poll: &PollId,
    need: &Need,
) -> bool {
    need.entries()
        .all(|(incarnation, seq)| confirmed_in(confirmed, poll, incarnation) >= seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(old_first_seq: Seq, new_first_seq: Seq, count: usize) -> MovedRecords {
        MovedRecords {
            poll: PollId::new("p").unwrap(),
            old_first_seq,
            new_first_seq,
            count,
        }
    }

    #[test]
    fn a_need_keeps_the_highest_seq_of_each_incarnation() {
        // Goal: a batch's need is one entry per incarnation, the highest seq, and seq 0 is no
        // need. Method: add seqs of two incarnations in any order.
        let mut need = Need::on(7, 3);
        need.merge(&Need::on(7, 9));
        need.merge(&Need::on(7, 5));
        need.merge(&Need::on(4, 2));
        need.merge(&Need::on(4, 0));
        assert_eq!(need.entries().collect::<Vec<_>>(), vec![(7, 9), (4, 2)]);
        assert_eq!(Need::on(7, 0), Need::default());
    }

    #[test]
    fn a_move_to_a_new_incarnation_renumbers_moved_seqs_and_keeps_the_retired_ones_below() {
        // Goal: after a move, a need of a record in flight names its new seq, and the
        // retired incarnation's records below the moved ones stay needed; a record made
        // durable before the move stays the retired incarnation's. Method: three needs.
        let moved = moved(11, 1, 5);
        let mut in_flight = Need::on(7, 13);
        in_flight.move_to(7, 8, &[&moved]);
        assert_eq!(
            in_flight.entries().collect::<Vec<_>>(),
            vec![(8, 3), (7, 10)]
        );
        let mut durable = Need::on(7, 10);
        durable.move_to(7, 8, &[&moved]);
        assert_eq!(durable, Need::on(7, 10));
        let mut other = Need::on(5, 12);
        other.move_to(7, 8, &[&moved]);
        assert_eq!(other, Need::on(5, 12));
    }

    #[test]
    fn a_need_is_covered_only_by_confirmations_of_its_own_incarnation() {
        // Goal: a confirmation of the current incarnation's seqs never answers a reply that
        // waits for a retired incarnation's record with a lower seq (the confusion a single
        // confirmed seq per poll allowed). Method: confirmations per incarnation.
        let poll = PollId::new("p").unwrap();
        let mut confirmed = BTreeMap::new();
        confirmed.insert(poll.clone(), BTreeMap::from([(8, 100)]));
        assert!(!covers(&confirmed, &poll, &Need::on(7, 10)));
        assert!(covers(&confirmed, &poll, &Need::on(8, 100)));
        assert!(covers(&confirmed, &poll, &Need::default()));
        confirmed.get_mut(&poll).unwrap().insert(7, 10);
        let mut both = Need::on(8, 50);
        both.merge(&Need::on(7, 10));
        assert!(covers(&confirmed, &poll, &both));
        assert!(!covers(&confirmed, &PollId::new("q").unwrap(), &both));
    }
}
