//! Pure fire planning: which runs one firing of a task creates and where its `next_fire_at` moves, including the
//! misfire policies. No I/O, no clock: `now` is passed in, so it is unit-tested exhaustively.

use std::collections::VecDeque;

use chrono::{DateTime, TimeDelta, Utc};
use rota_spec::{CompiledSchedule, MisfirePolicy, Schedule, Trigger};
use rota_store::{TriggerKind, truncate_millis};

/// How many fire instants a misfire computation walks at most for schedules whose count cannot be computed
/// arithmetically (cron). Beyond it, the count is reported as "more than".
pub(crate) const WALK_CAP: u64 = 100_000;

/// The first fire instant strictly after `after`, at the store's millisecond precision.
///
/// The store keeps milliseconds; an instant with a sub-millisecond part would come back truncated, and
/// `next_after(truncated)` would return the same instant again, firing it forever. Truncating here and requiring
/// the truncated instant to be strictly later rules that out.
pub(crate) fn next_fire(schedule: &CompiledSchedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut t = after;
    for _ in 0..10_000 {
        let n = schedule.next_after(t)?;
        let tn = truncate_millis(n);
        if tn > after {
            return Some(tn);
        }
        t = n;
    }
    None
}

/// The fire instants missed in `[first, now]` (`first` is the stored `next_fire_at`, itself missed).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Missed {
    /// How many (at least 1). When `exact` is false, more than this many.
    pub count: u64,
    pub exact: bool,
    /// The most recent missed instants, oldest first, at most `keep` of them; the last is the latest missed.
    pub recent: Vec<DateTime<Utc>>,
}

/// Computes the missed instants, keeping the `keep` (≥ 1) most recent. Bounded work whatever the outage length:
/// arithmetic for `every`, a walk capped at [`WALK_CAP`] plus a backwards window search for cron.
pub(crate) fn missed_fires(
    schedule: &CompiledSchedule,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
    keep: usize,
) -> Missed {
    let keep = keep.max(1);
    if now <= first {
        return Missed { count: 1, exact: true, recent: vec![first] };
    }
    if let Trigger::Every { period, anchor } = schedule.trigger()
        && let Some(m) = missed_every(*anchor, period.as_std(), first, now, keep)
    {
        return m;
    }
    // Walk forward from `first`, remembering the last `keep` instants.
    let mut ring: VecDeque<DateTime<Utc>> = VecDeque::with_capacity(keep.min(1024));
    let mut count = 0u64;
    let mut t = first;
    loop {
        count += 1;
        if ring.len() == keep {
            ring.pop_front();
        }
        ring.push_back(t);
        match next_fire(schedule, t) {
            Some(n) if n <= now => {
                if count >= WALK_CAP {
                    break;
                }
                t = n;
            }
            _ => return Missed { count, exact: true, recent: ring.into() },
        }
    }
    // Saturated: find the most recent `keep` instants with a window that doubles backwards from `now`. Cron fires
    // are at least a second apart, so a window of `keep` seconds is the smallest that can hold them.
    let mut window = TimeDelta::seconds(keep as i64 + 1);
    loop {
        let from = (now - window).max(first);
        let mut ring: VecDeque<DateTime<Utc>> = VecDeque::with_capacity(keep.min(1024));
        let mut t = from;
        let mut walked = 0u64;
        while let Some(n) = next_fire(schedule, t).filter(|n| *n <= now) {
            if ring.len() == keep {
                ring.pop_front();
            }
            ring.push_back(n);
            t = n;
            walked += 1;
            if walked > 10 * WALK_CAP {
                break;
            }
        }
        if ring.len() >= keep || from == first || window > TimeDelta::days(365 * 100) {
            return Missed { count: WALK_CAP, exact: false, recent: ring.into() };
        }
        window = window * 2;
    }
}

fn missed_every(
    anchor: DateTime<Utc>,
    period: std::time::Duration,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
    keep: usize,
) -> Option<Missed> {
    let p = i128::try_from(period.as_nanos()).ok().filter(|p| *p >= 1_000_000)?; // sub-ms periods: walk instead
    let nanos = |t: DateTime<Utc>| -> i128 {
        (t.timestamp() as i128 - anchor.timestamp() as i128) * 1_000_000_000
            + (t.timestamp_subsec_nanos() as i128 - anchor.timestamp_subsec_nanos() as i128)
    };
    let idx_now = nanos(now).div_euclid(p);
    let idx_first = nanos(first).div_euclid(p);
    // Grid points in (first, now]: indices idx_first+1 ..= idx_now.
    let after_first = (idx_now - idx_first).max(0);
    let count = u64::try_from(after_first + 1).ok()?;
    let at = |k: i128| -> Option<DateTime<Utc>> {
        let total = k.checked_mul(p)?;
        let secs = i64::try_from(total.div_euclid(1_000_000_000)).ok()?;
        let sub = total.rem_euclid(1_000_000_000) as i64;
        anchor.checked_add_signed(TimeDelta::try_seconds(secs)? + TimeDelta::nanoseconds(sub))
    };
    let take = (keep as i128).min(after_first);
    let mut recent = Vec::with_capacity(keep.min(1024));
    if take < keep as i128 {
        recent.push(first);
    }
    for k in (idx_now - take + 1)..=idx_now {
        recent.push(truncate_millis(at(k)?));
    }
    Some(Missed { count, exact: true, recent })
}

/// One run a firing creates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedRun {
    pub at: DateTime<Utc>,
    pub trigger: TriggerKind,
    /// `Some`: the run is recorded as `skipped` with this reason.
    pub skip_reason: Option<String>,
}

/// What one firing does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FirePlan {
    /// Oldest first.
    pub runs: Vec<PlannedRun>,
    pub new_next_fire_at: Option<DateTime<Utc>>,
    /// Set when the fire came later than the misfire threshold.
    pub misfire: Option<MisfireInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MisfireInfo {
    pub missed: u64,
    pub exact: bool,
    pub policy: MisfirePolicy,
}

pub(crate) fn policy_name(p: MisfirePolicy) -> &'static str {
    match p {
        MisfirePolicy::Skip => "skip",
        MisfirePolicy::RunOnce => "run_once",
        MisfirePolicy::RunAll => "run_all",
    }
}

/// Plans the firing of the instant `expected` (the task's stored `next_fire_at`) at `now`.
///
/// * On time (`now - expected <= threshold`): one run for `expected`; the next fire is the first instant after it.
/// * Late: the misfire policy of `spec` decides (`skip`: one `skipped` run for the latest missed instant, with the
///   number of missed fires in its reason; `run_once`: one catch-up run for the latest missed instant; `run_all`:
///   one catch-up run per missed instant, at most `catchUpLimit`, the most recent ones); the next fire is the first
///   instant after `now`, so nothing is replayed twice.
pub(crate) fn plan_fire(
    schedule: &CompiledSchedule,
    spec: &Schedule,
    expected: DateTime<Utc>,
    now: DateTime<Utc>,
    threshold: std::time::Duration,
) -> FirePlan {
    let threshold = TimeDelta::from_std(threshold).unwrap_or(TimeDelta::MAX);
    if now - expected <= threshold {
        return FirePlan {
            runs: vec![PlannedRun { at: expected, trigger: TriggerKind::Schedule, skip_reason: None }],
            new_next_fire_at: next_fire(schedule, expected),
            misfire: None,
        };
    }
    let policy = spec.misfire;
    let keep = match policy {
        MisfirePolicy::Skip | MisfirePolicy::RunOnce => 1,
        MisfirePolicy::RunAll => spec.catch_up_limit.max(1) as usize,
    };
    let missed = missed_fires(schedule, expected, now, keep);
    let latest = *missed.recent.last().unwrap_or(&expected);
    let runs = match policy {
        MisfirePolicy::Skip => {
            let n = if missed.exact { missed.count.to_string() } else { format!("more than {}", missed.count) };
            let plural = if missed.count == 1 && missed.exact { "" } else { "s" };
            vec![PlannedRun {
                at: latest,
                trigger: TriggerKind::Schedule,
                skip_reason: Some(format!("misfire: skipped {n} fire{plural}")),
            }]
        }
        MisfirePolicy::RunOnce => vec![PlannedRun { at: latest, trigger: TriggerKind::CatchUp, skip_reason: None }],
        MisfirePolicy::RunAll => missed
            .recent
            .iter()
            .map(|at| PlannedRun { at: *at, trigger: TriggerKind::CatchUp, skip_reason: None })
            .collect(),
    };
    FirePlan {
        runs,
        new_next_fire_at: next_fire(schedule, now.max(latest)),
        misfire: Some(MisfireInfo { missed: missed.count, exact: missed.exact, policy }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn every(secs: u64) -> (CompiledSchedule, Schedule) {
        let s = Schedule::every(rota_spec::Duration::from_secs(secs));
        (s.compile().unwrap(), s)
    }

    fn cron(expr: &str) -> (CompiledSchedule, Schedule) {
        let s = Schedule::cron(expr);
        (s.compile().unwrap(), s)
    }

    #[test]
    fn on_time_fire_is_one_run_and_advances_from_the_instant() {
        let (c, s) = every(10);
        let p = plan_fire(&c, &s, t(0), t(3), Duration::from_secs(5));
        assert_eq!(p.runs, vec![PlannedRun { at: t(0), trigger: TriggerKind::Schedule, skip_reason: None }]);
        assert_eq!(p.new_next_fire_at, Some(t(10)));
        assert_eq!(p.misfire, None);
    }

    #[test]
    fn misfire_skip_records_one_skipped_run_for_the_latest() {
        for (c, mut s) in [every(10), cron("*/10 * * * * *")] {
            s.misfire = MisfirePolicy::Skip;
            // Missed: 0, 10, …, 100 → 11 fires.
            let p = plan_fire(&c, &s, t(0), t(105), Duration::from_secs(5));
            assert_eq!(p.runs.len(), 1);
            assert_eq!(p.runs[0].at, t(100));
            assert_eq!(p.runs[0].skip_reason.as_deref(), Some("misfire: skipped 11 fires"));
            assert_eq!(p.new_next_fire_at, Some(t(110)));
            assert_eq!(p.misfire, Some(MisfireInfo { missed: 11, exact: true, policy: MisfirePolicy::Skip }));
        }
    }

    #[test]
    fn misfire_run_once_and_run_all() {
        for (c, mut s) in [every(10), cron("*/10 * * * * *")] {
            s.misfire = MisfirePolicy::RunOnce;
            let p = plan_fire(&c, &s, t(0), t(100), Duration::from_secs(5));
            assert_eq!(p.runs, vec![PlannedRun { at: t(100), trigger: TriggerKind::CatchUp, skip_reason: None }]);
            assert_eq!(p.new_next_fire_at, Some(t(110)));

            s.misfire = MisfirePolicy::RunAll;
            s.catch_up_limit = 3;
            let p = plan_fire(&c, &s, t(0), t(100), Duration::from_secs(5));
            assert_eq!(p.runs.iter().map(|r| r.at).collect::<Vec<_>>(), vec![t(80), t(90), t(100)]);
            assert!(p.runs.iter().all(|r| r.trigger == TriggerKind::CatchUp && r.skip_reason.is_none()));
            assert_eq!(p.misfire.as_ref().map(|m| m.missed), Some(11));

            s.catch_up_limit = 100;
            let p = plan_fire(&c, &s, t(0), t(25), Duration::from_secs(5));
            assert_eq!(p.runs.iter().map(|r| r.at).collect::<Vec<_>>(), vec![t(0), t(10), t(20)]);
            assert_eq!(p.new_next_fire_at, Some(t(30)));
        }
    }

    #[test]
    fn missed_every_is_arithmetic_for_huge_outages() {
        let (c, _) = every(1);
        let m = missed_fires(&c, t(0), t(10 * 365 * 86_400), 2);
        assert_eq!(m.count, 10 * 365 * 86_400 + 1);
        assert!(m.exact);
        assert_eq!(m.recent, vec![t(10 * 365 * 86_400 - 1), t(10 * 365 * 86_400)]);
    }

    #[test]
    fn missed_cron_saturates_but_finds_the_latest() {
        let (c, _) = cron("* * * * * *");
        let m = missed_fires(&c, t(0), t(200_000), 3);
        assert!(!m.exact);
        assert_eq!(m.count, WALK_CAP);
        assert_eq!(m.recent, vec![t(199_998), t(199_999), t(200_000)]);
    }

    #[test]
    fn once_schedule_finishes() {
        let s = Schedule::once(t(0));
        let c = s.compile().unwrap();
        let p = plan_fire(&c, &s, t(0), t(1), Duration::from_secs(5));
        assert_eq!(p.runs.len(), 1);
        assert_eq!(p.new_next_fire_at, None);
        let p = plan_fire(&c, &s, t(0), t(1000), Duration::from_secs(5));
        assert_eq!(p.runs.len(), 1);
        assert_eq!(p.runs[0].at, t(0));
        assert_eq!(p.new_next_fire_at, None);
    }

    #[test]
    fn next_fire_never_returns_a_truncated_repeat() {
        let s = Schedule::every(rota_spec::Duration::new(Duration::from_micros(1500)));
        let c = s.compile().unwrap();
        let mut at = t(0);
        for _ in 0..10 {
            let n = next_fire(&c, at).unwrap();
            assert!(n > at);
            assert_eq!(n, truncate_millis(n));
            at = n;
        }
    }
}
