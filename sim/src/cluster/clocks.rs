//! The checker's clock invariants (issue 27), judged against the true simulated time the
//! nodes' skewed clocks hide:
//!
//! 1. **No vote stamped by a node outside the offset bound**: every single vote answered
//!    `counted` carries the poll second its node stamped; that second must be one a clock
//!    within [`stamp_bound_ms`] of true time could have read between the attempt's sending
//!    and its answer. One exception, the rule's own limit: a region back from a lost disk
//!    while cut off from every peer opens the start-up poll at its own restart (it knows no
//!    earlier window) and counts from there until it meets a peer.
//! 2. **No healthy node refuses votes because of another node's clock**: a 503 for a clock
//!    hold may come only from the region whose clock a [`FaultKind::ClockSkew`] stepped (until
//!    [`CLOCK_GRACE_MS`] after it stepped back: its peers must confirm the new reading), from a
//!    node starting up (unchecked until a peer answers), or from a region a network fault
//!    touched (cut off from the majority, a node keeps its last verdict, and a tie between two
//!    nodes goes to the longer-stable clock: DESIGN.md's rule, not a fault).
//! 3. **The window was not moved by a clock**: the poll's converged `opens_at` is within the
//!    bound of the true time the nodes started.

use super::Violation;
use super::ledger::{Ledger, Stamp};
use super::scenario::{FaultKind, SIM_MAX_CLOCK_OFFSET_MS};
use super::{EPOCH_UNIX_MS, Fault};

/// How long after a fault's end (or a node's start) a clock hold is still the fault's
/// doing: the peers' samples stay evidence for 5 s (`CLOCK_SAMPLE_TTL_MS_MIN`), plus a
/// second for the next round.
pub const CLOCK_GRACE_MS: u64 = 6_000;

/// The nodes' `catch_up_timeout_ms` in the simulation (`run_node` sets it).
pub const SIM_CATCH_UP_TIMEOUT_MS: u64 = 5_000;

/// How far from true time a healthy node's clock may be: the bound, plus the constant
/// offsets every host gets in a run with clock faults (a quarter of the bound).
pub fn stamp_bound_ms() -> u64 {
    SIM_MAX_CLOCK_OFFSET_MS + SIM_MAX_CLOCK_OFFSET_MS / 4
}

/// Runs the three checks; `opens_at_ms` is the poll's converged opening.
pub fn check_clocks(ledger: &Ledger, opens_at_ms: u64) -> Result<(), Violation> {
    check_window(opens_at_ms)?;
    check_stamps(ledger, opens_at_ms)?;
    check_refusals(ledger)
}

fn check_window(opens_at_ms: u64) -> Result<(), Violation> {
    let bound = stamp_bound_ms();
    let earliest = EPOCH_UNIX_MS - bound;
    let latest = EPOCH_UNIX_MS + SIM_CATCH_UP_TIMEOUT_MS + bound;
    if !(earliest..=latest).contains(&opens_at_ms) {
        return Err(format!(
            "windows one clock cannot move: the poll opened at {opens_at_ms} ms, but the \
             nodes started at {EPOCH_UNIX_MS} ms (a start-up open is proposed at a checked \
             clock, within {bound} ms of true time, within {SIM_CATCH_UP_TIMEOUT_MS} ms)"
        ));
    }
    Ok(())
}

fn check_stamps(ledger: &Ledger, opens_at_ms: u64) -> Result<(), Violation> {
    let bound = stamp_bound_ms();
    let second_at = |ms: u64| ms.saturating_sub(opens_at_ms) / 1000;
    for stamp in &ledger.stamps {
        let earliest = second_at(stamp.sent_ms.saturating_sub(bound));
        let latest = second_at(stamp.answered_ms + bound);
        if !(earliest..=latest).contains(&stamp.second)
            && !opened_alone_after_a_lost_disk(ledger, stamp, bound)
        {
            return Err(format!(
                "no vote stamped by a node outside the offset bound: region #{} stamped a \
                 vote with second {}, but between its sending ({} ms) and its answer ({} ms) \
                 a clock within {bound} ms of true time read seconds {earliest} to {latest}",
                stamp.region, stamp.second, stamp.sent_ms, stamp.answered_ms
            ));
        }
    }
    Ok(())
}

/// A node back from a lost disk while cut off from every peer knows no window: after
/// `catch_up_timeout_ms` it trusts its own clock and opens the start-up poll at it (a region
/// cut off must serve; OPERATIONS.md: give an event's poll its `opens_at`), so until it meets
/// a peer and takes the cluster's earlier window its seconds count from its own opening. Such
/// a stamp is excused when a window opened after that restart explains it: the region lost
/// its disk, a partition kept it alone from before its restart until after the answer (plus
/// a sync round), and the second is one its own opening could give.
fn opened_alone_after_a_lost_disk(ledger: &Ledger, stamp: &Stamp, bound: u64) -> bool {
    let region = stamp.region;
    let alone = |fault: &Fault| {
        matches!(fault.kind, FaultKind::Partition | FaultKind::LongPartition)
            && (fault.a == [region] || fault.b == [region])
    };
    ledger.faults.iter().any(|lost| {
        if lost.kind != FaultKind::DiskLoss || !lost.a.contains(&region) {
            return false;
        }
        let restarted = EPOCH_UNIX_MS + lost.end_ms();
        let own_latest = stamp.answered_ms.saturating_sub(restarted) / 1000 + bound / 1000 + 1;
        stamp.second <= own_latest
            && ledger.faults.iter().any(|cut| {
                alone(cut)
                    && EPOCH_UNIX_MS + cut.at_ms <= restarted
                    && stamp.sent_ms <= EPOCH_UNIX_MS + cut.end_ms() + CLOCK_GRACE_MS
            })
    })
}

fn check_refusals(ledger: &Ledger) -> Result<(), Violation> {
    for &(region, at_ms) in &ledger.clock_refusals {
        if !ledger.faults.iter().any(|f| excuses(f, region, at_ms)) {
            return Err(format!(
                "no healthy node refuses votes because of another node's clock: region #{region} \
                 refused votes for its clock at {at_ms} ms, with a true clock, running, and \
                 no network fault on it"
            ));
        }
    }
    Ok(())
}

/// Whether `fault` explains a clock hold of `region` at `at_ms` (simulated Unix ms).
fn excuses(fault: &Fault, region: usize, at_ms: u64) -> bool {
    let start = EPOCH_UNIX_MS + fault.at_ms;
    let end = EPOCH_UNIX_MS + fault.end_ms();
    let touches = fault.a.contains(&region) || fault.b.contains(&region);
    match fault.kind {
        FaultKind::ClockSkew => touches && (start..=end + CLOCK_GRACE_MS).contains(&at_ms),
        FaultKind::Crash | FaultKind::DiskLoss | FaultKind::Restart | FaultKind::DiskCorruption => {
            let started = end;
            let unchecked = SIM_CATCH_UP_TIMEOUT_MS + CLOCK_GRACE_MS;
            touches && (started..=started + unchecked).contains(&at_ms)
        }
        FaultKind::Partition
        | FaultKind::OneWayPartition
        | FaultKind::Hold
        | FaultKind::PacketLoss
        | FaultKind::LatencySpike
        | FaultKind::LongPartition
        | FaultKind::LostAnswers => touches && (start..=end + CLOCK_GRACE_MS).contains(&at_ms),
        // A refused second process never serves; the running node is not touched. A
        // mismatched definition refuses the poll's votes for itself (503 `poll_disputed`),
        // never for the clock. An unreserved index only grows step by step.
        FaultKind::SecondProcess | FaultKind::MismatchedDefinition | FaultKind::UnreservedIndex => {
            false
        }
        // Edges' faults touch no node's clock or peer links: a slow node's links to the
        // edges are slow, not its links to its peers.
        FaultKind::EdgeCrash | FaultKind::EdgeCutOff | FaultKind::SlowNode => false,
        // A failed log ends the node (after handing its records over) and its supervisor
        // starts it again: a start, unchecked until its first sync round.
        FaultKind::DiskFull | FaultKind::FailedFsync => {
            let hand_over = tally_node::engine::LOG_FAILED_HAND_OVER_MAX.as_millis() as u64;
            let restarted = end + hand_over + crate::cluster::SUPERVISOR_RESTART_MS;
            let unchecked = SIM_CATCH_UP_TIMEOUT_MS + CLOCK_GRACE_MS;
            touches && (start..=restarted + unchecked).contains(&at_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        Ledger::new(Vec::new())
    }

    #[test]
    fn a_stamp_an_hour_off_fails_and_one_within_the_bound_passes() {
        // Goal: the stamp check can fail. Method: one stamp read by a true clock, one by a
        // clock an hour behind.
        let opens = EPOCH_UNIX_MS + 100;
        let mut ledger = ledger();
        let stamp = |second| Stamp {
            region: 1,
            second,
            sent_ms: opens + 15_200,
            answered_ms: opens + 15_210,
        };
        ledger.stamps.push(stamp(15));
        assert!(check_stamps(&ledger, opens).is_ok());
        ledger.stamps.push(stamp(0));
        let error = check_stamps(&ledger, opens).unwrap_err();
        assert!(error.contains("outside the offset bound"), "{error}");
    }

    #[test]
    fn a_clock_refusal_is_excused_only_by_the_skewed_region_a_start_or_a_network_fault() {
        // Goal: the refusal check can fail, and its exceptions are the ones the rule makes.
        // Method: refusals against a clock step on region 2 and a crash of region 0.
        let mut ledger = ledger();
        let fault = |kind, a: Vec<usize>, at_ms, for_ms| Fault {
            kind,
            a,
            b: Vec::new(),
            at_ms,
            for_ms,
            room_bytes: 0,
        };
        ledger.faults = vec![
            fault(FaultKind::ClockSkew, vec![2], 5_000, 3_000),
            fault(FaultKind::Crash, vec![0], 10_000, 1_000),
        ];
        let at = |ms| EPOCH_UNIX_MS + ms;
        ledger.clock_refusals = vec![(2, at(6_000)), (2, at(12_000)), (0, at(13_000))];
        assert!(check_refusals(&ledger).is_ok());
        ledger.clock_refusals.push((1, at(6_000)));
        let error = check_refusals(&ledger).unwrap_err();
        assert!(error.contains("region #1"), "{error}");
        ledger.clock_refusals = vec![(2, at(20_000))];
        assert!(check_refusals(&ledger).is_err(), "long after the step back");
    }

    #[test]
    fn a_region_alone_after_losing_its_disk_may_count_from_its_own_opening_and_no_other() {
        // Goal: the one excuse for an early second is narrow (seeds 1028 and 1044 of the CI
        // range at 1,000 votes met it). Method: region 3 cut off from 7.7 s for 36 s, its disk
        // lost at 8 s and back at 14 s; a vote it stamps second 0 at 19.4 s is excused, the
        // same stamp is not without the partition, from another region, or with a second its
        // own opening could not give.
        let opens = EPOCH_UNIX_MS;
        let cut = Fault {
            kind: FaultKind::LongPartition,
            a: vec![3],
            b: vec![0, 1, 2, 4],
            at_ms: 7_700,
            for_ms: 36_000,
            room_bytes: 0,
        };
        let lost = Fault {
            kind: FaultKind::DiskLoss,
            a: vec![3],
            b: Vec::new(),
            at_ms: 8_000,
            for_ms: 6_000,
            room_bytes: 0,
        };
        let stamp = |region, second| Stamp {
            region,
            second,
            sent_ms: opens + 19_400,
            answered_ms: opens + 19_410,
        };
        let judge = |faults: Vec<Fault>, stamp: Stamp| {
            let mut ledger = ledger();
            ledger.faults = faults;
            ledger.stamps.push(stamp);
            check_stamps(&ledger, opens)
        };
        assert!(judge(vec![cut.clone(), lost.clone()], stamp(3, 0)).is_ok());
        assert!(judge(vec![lost.clone()], stamp(3, 0)).is_err(), "not alone");
        assert!(
            judge(vec![cut.clone()], stamp(3, 0)).is_err(),
            "its disk was kept"
        );
        assert!(
            judge(vec![cut.clone(), lost.clone()], stamp(2, 0)).is_err(),
            "another region"
        );
        assert!(
            judge(vec![cut, lost], stamp(3, 12)).is_err(),
            "later than its own opening"
        );
    }

    #[test]
    fn a_window_opened_an_hour_early_fails() {
        assert!(check_window(EPOCH_UNIX_MS + 40).is_ok());
        assert!(check_window(EPOCH_UNIX_MS - 3_600_000).is_err());
    }
}
