//! Which manager epoch wrote which events of a day log, as runs — pure functions.
//!
//! The manager's day store (`meta/app/epoch_runs`) and every replica (`replica_runs`) keep
//! the runs of their log: `[EpochRun { first_seq, epoch }]` in ascending `first_seq`, each run
//! reaching to the next one's `first_seq`. One epoch is one manager process, which writes one
//! sequence, so two logs holding the same seq written in the same epoch hold the same event
//! and the same events before it (Raft's log matching property). That is the evidence
//! recovery ranks and compares replicas by: the epoch of the last held event, then the seq;
//! two replicas whose runs give one seq two different known epochs hold divergent histories.
//! Epoch 0 means unknown (events written without `--cluster`, or before replica format 2)
//! and matches anything.

use super::messages::EpochRun;

/// The epoch `seq` was written in according to `runs` (0: unknown, or `seq` 0).
pub(crate) fn epoch_at(runs: &[EpochRun], seq: u64) -> u64 {
    if seq == 0 {
        return 0;
    }
    runs.iter().take_while(|r| r.first_seq <= seq).last().map_or(0, |r| r.epoch)
}

/// Records that the events from `first_seq` on are written in `epoch`: runs at or after
/// `first_seq` are dropped (nothing of them is held any more), and no run is added if the
/// run before already has this epoch. Returns whether `runs` changed.
pub(crate) fn push_run(runs: &mut Vec<EpochRun>, first_seq: u64, epoch: u64) -> bool {
    let before = runs.len();
    runs.retain(|r| r.first_seq < first_seq);
    let dropped = runs.len() != before;
    if epoch_at(runs, first_seq.saturating_sub(1)) == epoch {
        return dropped;
    }
    runs.push(EpochRun { first_seq, epoch });
    true
}

/// The runs of the events through `seq` (those after it dropped).
pub(crate) fn through(runs: &[EpochRun], seq: u64) -> Vec<EpochRun> {
    runs.iter().copied().filter(|r| r.first_seq <= seq && r.first_seq > 0).collect()
}

/// The first seq at which two logs (runs and last seq each) were written in two different
/// known epochs: they hold different events from there on. `None`: no evidence that they
/// differ (one may be a prefix of the other).
pub(crate) fn diverge_at(a: &[EpochRun], a_seq: u64, b: &[EpochRun], b_seq: u64) -> Option<u64> {
    let upto = a_seq.min(b_seq);
    let mut bounds: Vec<u64> = std::iter::once(1)
        .chain(a.iter().chain(b).map(|r| r.first_seq))
        .filter(|&s| s >= 1 && s <= upto)
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    bounds.into_iter().find(|&s| {
        let (ea, eb) = (epoch_at(a, s), epoch_at(b, s));
        ea != 0 && eb != 0 && ea != eb
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(r: &[(u64, u64)]) -> Vec<EpochRun> {
        r.iter().map(|&(first_seq, epoch)| EpochRun { first_seq, epoch }).collect()
    }

    #[test]
    fn the_epoch_of_a_seq_is_that_of_the_run_holding_it() {
        let r = runs(&[(1, 2), (901, 3)]);
        assert_eq!(epoch_at(&r, 0), 0);
        assert_eq!(epoch_at(&r, 1), 2);
        assert_eq!(epoch_at(&r, 900), 2);
        assert_eq!(epoch_at(&r, 901), 3);
        assert_eq!(epoch_at(&r, 5_000), 3);
        // Before the first run: unknown.
        assert_eq!(epoch_at(&runs(&[(50, 4)]), 49), 0);
        assert_eq!(epoch_at(&[], 7), 0);
    }

    #[test]
    fn a_run_is_added_only_when_the_epoch_changes_and_replaces_what_is_no_longer_held() {
        let mut r = Vec::new();
        assert!(push_run(&mut r, 1, 2));
        assert!(!push_run(&mut r, 40, 2), "the same epoch continues its run");
        assert!(push_run(&mut r, 901, 3));
        assert_eq!(r, runs(&[(1, 2), (901, 3)]));
        // A manager of epoch 4 that writes from 901 again (nothing of epoch 3 was kept).
        assert!(push_run(&mut r, 901, 4));
        assert_eq!(r, runs(&[(1, 2), (901, 4)]));
        // Unknown from the start needs no run; unknown after a known run does.
        let mut u = Vec::new();
        assert!(!push_run(&mut u, 1, 0));
        assert!(push_run(&mut u, 10, 5));
        assert!(push_run(&mut u, 20, 0));
        assert_eq!(u, runs(&[(10, 5), (20, 0)]));
        assert_eq!(through(&r, 900), runs(&[(1, 2)]));
    }

    #[test]
    fn logs_diverge_where_one_seq_has_two_known_epochs() {
        let a = runs(&[(1, 2)]);
        // A prefix of the same history.
        assert_eq!(diverge_at(&a, 900, &a, 150), None);
        assert_eq!(diverge_at(&a, 900, &runs(&[(1, 2), (901, 3)]), 1_000), None);
        // Recovered from a replica at 150 (epoch 4 wrote from 151): A's 151..900 differ.
        let c = runs(&[(1, 2), (151, 4)]);
        assert_eq!(diverge_at(&a, 900, &c, 300), Some(151));
        // Not if the shorter ends before the histories part.
        assert_eq!(diverge_at(&a, 150, &c, 300), None);
        // Unknown epochs are no evidence either way.
        assert_eq!(diverge_at(&[], 900, &c, 300), None);
        assert_eq!(diverge_at(&runs(&[(1, 0), (151, 4)]), 900, &c, 300), None);
        // Different from the first event.
        assert_eq!(diverge_at(&runs(&[(1, 5)]), 3, &runs(&[(1, 6)]), 3), Some(1));
    }
}
