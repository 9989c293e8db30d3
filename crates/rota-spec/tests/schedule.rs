//! Concrete next-fire cases, including daylight-saving transitions.

use chrono::{DateTime, TimeDelta, Utc};
use rota_spec::*;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn cron(expr: &str, tz: &str) -> CompiledSchedule {
    Schedule::cron(expr).with_timezone(tz).compile().unwrap()
}

fn fires(c: &CompiledSchedule, from: &str, to: &str) -> Vec<String> {
    c.fires_between(t(from), t(to), 1000)
        .into_iter()
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect()
}

#[test]
fn every_five_seconds_cron() {
    let c = cron("*/5 * * * * *", "UTC");
    assert_eq!(c.next_after(t("2025-01-01T00:00:00Z")), Some(t("2025-01-01T00:00:05Z")));
    assert_eq!(c.next_after(t("2025-01-01T00:00:03Z")), Some(t("2025-01-01T00:00:05Z")));
    // Strictly after, also with sub-second instants.
    assert_eq!(c.next_after(t("2025-01-01T00:00:04.999Z")), Some(t("2025-01-01T00:00:05Z")));
    assert_eq!(c.next_after(t("2025-01-01T00:00:05.001Z")), Some(t("2025-01-01T00:00:10Z")));
    assert_eq!(
        fires(&c, "2025-01-01T00:00:00Z", "2025-01-01T00:00:20Z"),
        ["2025-01-01T00:00:05Z", "2025-01-01T00:00:10Z", "2025-01-01T00:00:15Z", "2025-01-01T00:00:20Z"]
    );
    // limit is honoured.
    assert_eq!(c.fires_between(t("2025-01-01T00:00:00Z"), t("2025-01-02T00:00:00Z"), 3).len(), 3);
}

#[test]
fn five_field_cron_means_second_zero() {
    let c = cron("*/15 * * * *", "UTC");
    assert_eq!(c.next_after(t("2025-01-01T00:00:00Z")), Some(t("2025-01-01T00:15:00Z")));
}

#[test]
fn daily_0230_in_shanghai_is_1830_utc_previous_day() {
    let c = cron("0 30 2 * * *", "Asia/Shanghai");
    assert_eq!(c.next_after(t("2025-06-01T00:00:00Z")), Some(t("2025-06-01T18:30:00Z")));
    assert_eq!(c.next_after(t("2025-06-01T18:30:00Z")), Some(t("2025-06-02T18:30:00Z")));
}

#[test]
fn utc_default_and_nicknames() {
    let c = Schedule::cron("@daily").compile().unwrap();
    assert_eq!(c.next_after(t("2025-06-01T10:00:00Z")), Some(t("2025-06-02T00:00:00Z")));
}

#[test]
fn berlin_spring_forward_fixed_time_fires_after_the_gap() {
    // 2025-03-30: 02:00 CET -> 03:00 CEST, 02:30 does not exist.
    let c = cron("0 30 2 * * *", "Europe/Berlin");
    assert_eq!(
        fires(&c, "2025-03-28T12:00:00Z", "2025-03-31T12:00:00Z"),
        [
            "2025-03-29T01:30:00Z", // 02:30 CET
            "2025-03-30T01:00:00Z", // first instant after the gap: 03:00 CEST
            "2025-03-31T00:30:00Z", // 02:30 CEST
        ]
    );
}

#[test]
fn berlin_fall_back_fixed_time_fires_once() {
    // 2025-10-26: 03:00 CEST -> 02:00 CET, 02:30 happens twice.
    let c = cron("0 30 2 * * *", "Europe/Berlin");
    assert_eq!(
        fires(&c, "2025-10-25T12:00:00Z", "2025-10-27T12:00:00Z"),
        ["2025-10-26T00:30:00Z" /* 02:30 CEST, first occurrence */, "2025-10-27T01:30:00Z"]
    );
    // Starting inside the repeated hour, after the first 02:30, does not fire again.
    assert_eq!(c.next_after(t("2025-10-26T01:00:00Z")), Some(t("2025-10-27T01:30:00Z")));
}

#[test]
fn new_york_interval_job_across_transitions() {
    // 2025-03-09 02:00 EST -> 03:00 EDT; the 02:xx slots do not exist.
    let c = cron("0 0,30 * * * *", "America/New_York");
    assert_eq!(
        fires(&c, "2025-03-09T06:00:00Z", "2025-03-09T08:00:00Z"),
        [
            "2025-03-09T06:30:00Z", // 01:30 EST
            "2025-03-09T07:00:00Z", // 03:00 EDT
            "2025-03-09T07:30:00Z", // 03:30 EDT
            "2025-03-09T08:00:00Z",
        ]
    );
    // 2025-11-02 02:00 EDT -> 01:00 EST: 01:00 and 01:30 happen twice, both fire.
    assert_eq!(
        fires(&c, "2025-11-02T04:45:00Z", "2025-11-02T07:00:00Z"),
        [
            "2025-11-02T05:00:00Z", // 01:00 EDT
            "2025-11-02T05:30:00Z", // 01:30 EDT
            "2025-11-02T06:00:00Z", // 01:00 EST
            "2025-11-02T06:30:00Z", // 01:30 EST
            "2025-11-02T07:00:00Z", // 02:00 EST
        ]
    );
}

#[test]
fn every_is_aligned_to_the_epoch() {
    let c = Schedule::every("1h".parse().unwrap()).compile().unwrap();
    assert_eq!(c.next_after(t("2025-06-01T10:17:03Z")), Some(t("2025-06-01T11:00:00Z")));
    assert_eq!(c.next_after(t("2025-06-01T11:00:00Z")), Some(t("2025-06-01T12:00:00Z")));
    let c = Schedule::every("5s".parse().unwrap()).compile().unwrap();
    assert_eq!(c.next_after(t("2025-06-01T10:17:03.5Z")), Some(t("2025-06-01T10:17:05Z")));
    // 7m does not divide an hour: alignment is on epoch multiples, not wall clock.
    let c = Schedule::every("7m".parse().unwrap()).compile().unwrap();
    let n = c.next_after(t("2025-06-01T00:00:00Z")).unwrap();
    assert_eq!(n.timestamp() % 420, 0);
    assert!(n > t("2025-06-01T00:00:00Z") && n <= t("2025-06-01T00:07:00Z"));
}

#[test]
fn every_with_start_at_anchor() {
    let anchor = t("2025-06-01T10:00:07Z");
    let c = Schedule::every("10m".parse().unwrap()).with_start_at(anchor).compile().unwrap();
    // Before the anchor the sequence extends backwards too (anchor + k*D for any k).
    assert_eq!(c.next_after(t("2025-06-01T09:45:00Z")), Some(t("2025-06-01T09:50:07Z")));
    assert_eq!(c.next_after(t("2025-06-01T10:00:06Z")), Some(anchor));
    assert_eq!(c.next_after(anchor), Some(t("2025-06-01T10:10:07Z")));
    assert_eq!(
        fires(&c, "2025-06-01T10:00:00Z", "2025-06-01T10:30:07Z"),
        ["2025-06-01T10:00:07Z", "2025-06-01T10:10:07Z", "2025-06-01T10:20:07Z", "2025-06-01T10:30:07Z"]
    );
    assert_eq!(
        c.last_fire_between(t("2025-06-01T10:00:00Z"), t("2025-06-01T12:34:00Z")),
        Some(t("2025-06-01T12:30:07Z"))
    );
    assert_eq!(c.last_fire_between(t("2025-06-01T10:00:08Z"), t("2025-06-01T10:10:06Z")), None);
}

#[test]
fn once_before_and_after() {
    let at = t("2026-12-01T00:00:00Z");
    let c = Schedule::once(at).compile().unwrap();
    assert_eq!(c.next_after(t("2026-11-30T23:59:59Z")), Some(at));
    assert_eq!(c.next_after(at), None);
    assert_eq!(c.next_after(t("2027-01-01T00:00:00Z")), None);
    assert_eq!(c.fires_between(at - TimeDelta::days(1), at, 10), vec![at]);
    assert!(c.fires_between(at, at + TimeDelta::days(1), 10).is_empty());
}

#[test]
fn manual_never_fires() {
    let c = Schedule::manual().compile().unwrap();
    assert!(c.is_manual());
    assert_eq!(c.next_after(t("2025-01-01T00:00:00Z")), None);
    assert!(c.fires_between(DateTime::UNIX_EPOCH, t("2100-01-01T00:00:00Z"), 10).is_empty());
}

#[test]
fn compile_reports_paths() {
    let errs = Schedule::cron("0 0 * * *").with_timezone("Mars/Base").compile().unwrap_err();
    assert_eq!(errs.to_string(), "spec.schedule.timezone: unknown time zone \"Mars/Base\"");
}

#[test]
fn retry_delays() {
    let mut r = Retry { max_attempts: 10, ..Retry::default() };
    let secs = |r: &Retry, n| r.delay_before_attempt(n, 0.0).as_secs_f64();
    assert_eq!(secs(&r, 1), 0.0);
    assert_eq!(secs(&r, 2), 1.0);
    assert_eq!(secs(&r, 3), 2.0);
    assert_eq!(secs(&r, 4), 4.0);
    assert_eq!(secs(&r, 8), 60.0); // 64s capped at max 1m
    assert_eq!(secs(&r, u32::MAX), 60.0);
    r.backoff.kind = BackoffKind::Fixed;
    assert_eq!(secs(&r, 5), 1.0);
    r.backoff.kind = BackoffKind::Exponential;
    r.backoff.jitter = true;
    assert_eq!(r.delay_before_attempt(4, 0.0).as_secs_f64(), 2.0);
    assert_eq!(r.delay_before_attempt(4, 1.0).as_secs_f64(), 4.0);
    assert_eq!(r.delay_before_attempt(4, 0.5).as_secs_f64(), 3.0);
    assert_eq!(r.delay_before_attempt(4, 7.0).as_secs_f64(), 4.0);
    assert_eq!(r.delay_before_attempt(4, f64::NAN).as_secs_f64(), 2.0);
}

#[test]
fn missed_fires_follow_the_policy() {
    let c = Schedule::every("1m".parse().unwrap()).compile().unwrap();
    let from = t("2025-06-01T10:00:30Z");
    let now = t("2025-06-01T10:10:00Z");
    assert!(c.missed_fires(from, now, MisfirePolicy::Skip, 100).is_empty());
    assert_eq!(c.missed_fires(from, now, MisfirePolicy::RunOnce, 100), vec![t("2025-06-01T10:10:00Z")]);
    let all = c.missed_fires(from, now, MisfirePolicy::RunAll, 100);
    assert_eq!(all.len(), 10);
    assert_eq!(all[0], t("2025-06-01T10:01:00Z"));
    assert_eq!(
        c.missed_fires(from, now, MisfirePolicy::RunAll, 3),
        vec![t("2025-06-01T10:08:00Z"), t("2025-06-01T10:09:00Z"), t("2025-06-01T10:10:00Z")]
    );
    // Same answers for the equivalent cron schedule, across a longer outage.
    let cr = cron("0 * * * * *", "Europe/Berlin");
    assert_eq!(
        cr.missed_fires(from, now, MisfirePolicy::RunAll, 3),
        c.missed_fires(from, now, MisfirePolicy::RunAll, 3)
    );
    let long_ago = t("2025-05-01T00:00:00Z");
    assert_eq!(
        cr.missed_fires(long_ago, now, MisfirePolicy::RunAll, 100),
        c.missed_fires(long_ago, now, MisfirePolicy::RunAll, 100)
    );
    assert_eq!(cr.missed_fires(long_ago, now, MisfirePolicy::RunOnce, 100), vec![now]);
    // A sparse cron: only the misses inside the interval count.
    let daily = cron("0 30 2 * * *", "Asia/Shanghai");
    assert_eq!(
        daily.missed_fires(t("2025-06-01T00:00:00Z"), t("2025-06-04T00:00:00Z"), MisfirePolicy::RunAll, 100),
        vec![t("2025-06-01T18:30:00Z"), t("2025-06-02T18:30:00Z"), t("2025-06-03T18:30:00Z")]
    );
    let once = Schedule::once(t("2025-06-01T10:05:00Z")).compile().unwrap();
    assert_eq!(once.missed_fires(from, now, MisfirePolicy::RunAll, 100), vec![t("2025-06-01T10:05:00Z")]);
    assert!(once.missed_fires(now, now, MisfirePolicy::RunAll, 100).is_empty());
}
