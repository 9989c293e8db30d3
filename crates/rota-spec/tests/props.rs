//! Property tests for next-fire computation and durations.

use chrono::{DateTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
use croner::JobType;
use proptest::prelude::*;
use rota_spec::*;

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe", // 30-minute DST shift
    "America/Santiago",    // DST transitions at midnight
    "Asia/Kolkata",        // +05:30, no DST
];

/// One cron field over `0..=max`: `*`, `*/k`, `a-b`, `a-b/k`, a single value or a list.
fn field(max: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (1..=max.min(30)).prop_map(|k| format!("*/{k}")),
        (0..=max, 0..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (0..=max, 0..=max, 1..=max.min(20)).prop_map(|(a, b, k)| format!("{}-{}/{}", a.min(b), a.max(b), k)),
        (0..=max).prop_map(|v| v.to_string()),
        proptest::collection::btree_set(0..=max, 1..5).prop_map(|s| s
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")),
    ]
}

fn cron_expr() -> impl Strategy<Value = String> {
    let dom = prop_oneof![
        4 => Just("*".to_string()),
        1 => proptest::collection::btree_set(1u32..=28, 1..4)
            .prop_map(|s| s.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
    ];
    let dow = prop_oneof![
        4 => Just("*".to_string()),
        1 => proptest::collection::btree_set(0u32..=6, 1..4)
            .prop_map(|s| s.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
    ];
    (field(59), field(59), field(23), dom, dow).prop_map(|(s, m, h, dom, dow)| format!("{s} {m} {h} {dom} * {dow}"))
}

/// Instants between 1995 and 2045 with sub-second noise; DST-heavy months are common.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let near_transitions = (1995i32..2045, prop::sample::select(vec![3u32, 4, 9, 10, 11]), 1u32..29, 0i64..86_400)
        .prop_map(|(y, mo, d, s)| Utc.with_ymd_and_hms(y, mo, d, 0, 0, 0).unwrap() + TimeDelta::seconds(s));
    let anywhere = (788_918_400i64..2_366_841_600).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap());
    (prop_oneof![near_transitions, anywhere], 0u32..1_000_000_000).prop_map(|(t, ns)| t.with_nanosecond(ns).unwrap())
}

fn compiled(expr: &str, tz: &str) -> CompiledSchedule {
    Schedule::cron(expr).with_timezone(tz).compile().unwrap_or_else(|e| panic!("{expr} in {tz}: {e}"))
}

fn croner_of(c: &CompiledSchedule) -> (&croner::Cron, Tz) {
    match c.trigger() {
        Trigger::Cron { cron, timezone, .. } => (cron, *timezone),
        other => panic!("{other:?}"),
    }
}

/// Independent oracle: is `s` (a whole second) a fire instant of the cron schedule?
/// Uses croner's wall-clock matcher, not its search, plus the documented DST rules.
fn is_fire_instant(cron: &croner::Cron, tz: Tz, s: DateTime<Utc>) -> bool {
    let local = s.with_timezone(&tz);
    let fixed = cron.determine_job_type() == JobType::FixedTime;
    if cron.is_time_matching(&local).unwrap() {
        if fixed {
            // Fixed-time jobs fire only on the first occurrence of a repeated wall time.
            let earliest = tz.from_local_datetime(&local.naive_local()).earliest().unwrap();
            return earliest.with_timezone(&Utc) == s;
        }
        return true;
    }
    false
}

/// A fixed-time job whose wall time fell into a gap fires at the first instant after it.
fn is_just_after_gap(tz: Tz, s: DateTime<Utc>) -> bool {
    let before = s - TimeDelta::seconds(1);
    tz.offset_from_utc_datetime(&before.naive_utc()).fix() != tz.offset_from_utc_datetime(&s.naive_utc()).fix()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn cron_next_is_strictly_after_and_consistent(
        expr in cron_expr(),
        tz in prop::sample::select(ZONES),
        t in instant(),
    ) {
        let c = compiled(&expr, tz);
        let (cron, zone) = croner_of(&c);
        let n = c.next_after(t).expect("a pattern with * month fires again");
        prop_assert!(n > t, "{expr} in {tz}: next_after({t}) = {n}");
        prop_assert_eq!(n.nanosecond(), 0);
        // The answer is a fire instant (or the post-gap instant of a fixed-time job).
        let fixed = cron.determine_job_type() == JobType::FixedTime;
        prop_assert!(
            is_fire_instant(cron, zone, n) || (fixed && is_just_after_gap(zone, n)),
            "{expr} in {tz}: {n} is not a fire instant"
        );
        // No fire strictly between t and n: by the independent oracle when the
        // distance is short, and by re-asking from points in between.
        let gap = (n - t).num_seconds();
        if gap <= 3 * 3600 {
            let mut s = t.with_nanosecond(0).unwrap() + TimeDelta::seconds(1);
            while s < n {
                prop_assert!(!is_fire_instant(cron, zone, s), "{expr} in {tz}: missed fire {s} between {t} and {n}");
                s += TimeDelta::seconds(1);
            }
        }
        prop_assert_eq!(c.fires_between(t, n, 10), vec![n]);
        let mid = t + (n - t) / 2;
        if mid > t && mid < n {
            prop_assert_eq!(c.next_after(mid), Some(n), "{} in {}: from midpoint {}", expr, tz, mid);
        }
        prop_assert_eq!(c.next_after(n - TimeDelta::nanoseconds(1)), Some(n));
    }

    #[test]
    fn cron_next_is_monotonic(
        expr in cron_expr(),
        tz in prop::sample::select(ZONES),
        t1 in instant(),
        delta in 0i64..(3 * 86_400),
    ) {
        let c = compiled(&expr, tz);
        let t2 = t1 + TimeDelta::seconds(delta);
        let n1 = c.next_after(t1).unwrap();
        let n2 = c.next_after(t2).unwrap();
        prop_assert!(n1 <= n2, "{expr} in {tz}: next({t1}) = {n1} > next({t2}) = {n2}");
    }

    #[test]
    fn fires_between_is_increasing_and_bounded(
        expr in cron_expr(),
        tz in prop::sample::select(ZONES),
        t in instant(),
        hours in 1i64..48,
    ) {
        let c = compiled(&expr, tz);
        let end = t + TimeDelta::hours(hours);
        let v = c.fires_between(t, end, 50);
        prop_assert!(v.len() <= 50);
        for w in v.windows(2) {
            prop_assert!(w[0] < w[1]);
        }
        if let Some(first) = v.first() {
            prop_assert_eq!(Some(*first), c.next_after(t));
        }
        prop_assert!(v.iter().all(|x| *x > t && *x <= end));
    }

    #[test]
    fn latest_fires_are_the_tail_of_fires_between(
        expr in cron_expr(),
        tz in prop::sample::select(ZONES),
        t in instant(),
        minutes in 1i64..(3 * 24 * 60),
        n in 1usize..20,
    ) {
        let c = compiled(&expr, tz);
        let end = t + TimeDelta::minutes(minutes);
        let all = c.fires_between(t, end, 1_000_000);
        let tail = all[all.len().saturating_sub(n)..].to_vec();
        prop_assert_eq!(c.latest_fires(t, end, n), tail);
    }

    #[test]
    fn every_fires_on_multiples_of_the_period(
        period_ms in 1u64..(3 * 86_400_000),
        anchor_s in proptest::option::of(-2_000_000_000i64..4_000_000_000),
        t in instant(),
    ) {
        let period = Duration::from_millis(period_ms);
        let mut s = Schedule::every(period);
        if let Some(a) = anchor_s {
            s = s.with_start_at(DateTime::from_timestamp(a, 0).unwrap());
        }
        let anchor = s.start_at.unwrap_or(DateTime::UNIX_EPOCH);
        let c = s.compile().unwrap();
        let n = c.next_after(t).unwrap();
        prop_assert!(n > t);
        let p = TimeDelta::milliseconds(period_ms as i64);
        prop_assert!(n - t <= p, "gap larger than period");
        let since = (n - anchor).num_nanoseconds().map(i128::from)
            .unwrap_or_else(|| i128::from((n - anchor).num_milliseconds()) * 1_000_000);
        prop_assert_eq!(since.rem_euclid(i128::from(period_ms) * 1_000_000), 0);
        // Monotonic and consistent with fires_between.
        let n2 = c.next_after(n).unwrap();
        prop_assert_eq!(n2 - n, p);
        prop_assert_eq!(c.fires_between(t, n2, 10), vec![n, n2]);
        prop_assert_eq!(c.last_fire_between(t, n2), Some(n2));
    }

    #[test]
    fn duration_display_parse_roundtrip(nanos in 1u128..(400u128 * 86_400 * 1_000_000_000)) {
        let d = Duration::new(std::time::Duration::from_nanos(nanos as u64));
        let text = d.to_string();
        let back: Duration = text.parse().unwrap();
        prop_assert_eq!(back, d, "{}", text);
        let json = serde_json::to_string(&d).unwrap();
        prop_assert_eq!(serde_json::from_str::<Duration>(&json).unwrap(), d);
    }

    #[test]
    fn compound_duration_strings_parse(parts in proptest::collection::vec(0u64..1000, 7)) {
        let units = ["d", "h", "m", "s", "ms", "us", "ns"];
        let lens: [u128; 7] = [86_400_000_000_000, 3_600_000_000_000, 60_000_000_000, 1_000_000_000, 1_000_000, 1_000, 1];
        let text: String = parts.iter().zip(units).filter(|(n, _)| **n > 0).map(|(n, u)| format!("{n}{u}")).collect();
        let total: u128 = parts.iter().zip(lens).map(|(n, l)| u128::from(*n) * l).sum();
        match text.parse::<Duration>() {
            Ok(d) => {
                prop_assert_eq!(d.as_nanos(), total);
                prop_assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
            }
            Err(e) => prop_assert!(total == 0, "{}: {}", text, e),
        }
    }
}
