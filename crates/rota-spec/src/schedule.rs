//! Next-fire computation: [`Schedule::compile`] turns a schedule into a
//! [`CompiledSchedule`] that answers "when does this fire next?".

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::duration::Duration;
use crate::error::ValidationErrors;
use crate::types::{MisfirePolicy, Schedule};

const PATH: &str = "spec.schedule";

/// How a [`CompiledSchedule`] fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Cron expression evaluated in a time zone.
    Cron {
        /// The expression as written.
        expr: String,
        /// Parsed expression.
        cron: Box<Cron>,
        /// Zone the expression is evaluated in.
        timezone: Tz,
    },
    /// `anchor + k * period` for every integer `k`.
    Every {
        /// The period.
        period: Duration,
        /// `startAt`, or the Unix epoch.
        anchor: DateTime<Utc>,
    },
    /// A single instant.
    Once(DateTime<Utc>),
    /// Never fires by time.
    Manual,
}

/// A validated schedule, ready to compute fire times. Cheap to clone; pure.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledSchedule {
    trigger: Trigger,
}

/// Parses a cron expression the way Rota does: 6 fields (with seconds), 5 fields
/// (seconds = 0) or 7 fields (with a trailing year); `@daily`-style nicknames work too.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !expr.trim_start().starts_with('@') && !(5..=7).contains(&fields) {
        return Err(format!(
            "invalid cron expression {expr:?}: expected 6 fields (sec min hour day-of-month month day-of-week), 5 (seconds = 0) or 7 (with year), got {fields}"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))
}

/// Parses an IANA time zone name (e.g. `Europe/Berlin`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| format!("unknown time zone {name:?}"))
}

impl Schedule {
    /// Which of `cron`, `every`, `once`, `manual: true` are set, by field name.
    pub fn kinds_set(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.cron.is_some() {
            v.push("cron");
        }
        if self.every.is_some() {
            v.push("every");
        }
        if self.once.is_some() {
            v.push("once");
        }
        if self.manual == Some(true) {
            v.push("manual");
        }
        v
    }

    /// The time zone (`UTC` when unset). Fails on an unknown zone name.
    pub fn tz(&self) -> Result<Tz, String> {
        match &self.timezone {
            None => Ok(Tz::UTC),
            Some(name) => parse_timezone(name),
        }
    }

    /// Validates and compiles, returning just the [`Trigger`].
    pub fn trigger(&self) -> Result<Trigger, ValidationErrors> {
        self.compile().map(|c| c.trigger)
    }

    /// Validates the schedule and compiles it. Error paths start with `spec.schedule.`.
    pub fn compile(&self) -> Result<CompiledSchedule, ValidationErrors> {
        let mut errs = ValidationErrors::new();
        let tz = match self.tz() {
            Ok(tz) => Some(tz),
            Err(e) => {
                errs.push(format!("{PATH}.timezone"), e);
                None
            }
        };
        let kinds = self.kinds_set();
        if kinds.len() != 1 {
            let got = if kinds.is_empty() { "none is set".to_string() } else { format!("got {}", kinds.join(", ")) };
            errs.push(PATH, format!("exactly one of cron, every, once, manual: true must be set ({got})"));
        }
        let mut trigger = None;
        if let Some(expr) = &self.cron {
            match parse_cron(expr) {
                Ok(cron) if cron_next_after(&cron, tz.unwrap_or(Tz::UTC), DateTime::UNIX_EPOCH).is_none() => errs
                    .push(format!("{PATH}.cron"), format!("cron expression {expr:?} never fires (no matching date)")),
                Ok(cron) => {
                    trigger = tz.map(|timezone| Trigger::Cron { expr: expr.clone(), cron: Box::new(cron), timezone })
                }
                Err(e) => errs.push(format!("{PATH}.cron"), e),
            }
        }
        if let Some(period) = self.every {
            if period.is_zero() {
                errs.push(format!("{PATH}.every"), "must be greater than zero");
            } else {
                trigger = Some(Trigger::Every { period, anchor: self.start_at.unwrap_or(DateTime::UNIX_EPOCH) });
            }
        }
        if self.start_at.is_some() && self.every.is_none() {
            errs.push(format!("{PATH}.startAt"), "only allowed together with every");
        }
        if let Some(at) = self.once {
            trigger = Some(Trigger::Once(at));
        }
        if self.manual == Some(true) {
            trigger = Some(Trigger::Manual);
        }
        if self.catch_up_limit == 0 || self.catch_up_limit > Schedule::MAX_CATCH_UP_LIMIT {
            errs.push(
                format!("{PATH}.catchUpLimit"),
                format!("must be between 1 and {}", Schedule::MAX_CATCH_UP_LIMIT),
            );
        }
        match (errs.is_empty(), trigger) {
            (true, Some(trigger)) => Ok(CompiledSchedule { trigger }),
            (true, None) => {
                errs.push(PATH, "no trigger");
                Err(errs)
            }
            (false, _) => Err(errs),
        }
    }
}

impl CompiledSchedule {
    /// Builds a compiled schedule directly from a trigger.
    pub fn new(trigger: Trigger) -> Self {
        CompiledSchedule { trigger }
    }

    /// How this schedule fires.
    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }

    /// `true` for `manual: true` (never fires by time).
    pub fn is_manual(&self) -> bool {
        matches!(self.trigger, Trigger::Manual)
    }

    /// The first fire instant strictly after `t`, or `None` when there is none
    /// (`manual`, a past `once`, or a cron that never matches again).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.trigger {
            Trigger::Manual => None,
            Trigger::Once(at) => (*at > t).then_some(*at),
            Trigger::Every { period, anchor } => every_next_after(*anchor, *period, t),
            Trigger::Cron { cron, timezone, .. } => cron_next_after(cron, *timezone, t),
        }
    }

    /// All fire instants in `(after, up_to_inclusive]`, oldest first, at most `limit` of them.
    pub fn fires_between(
        &self,
        after: DateTime<Utc>,
        up_to_inclusive: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = after;
        while out.len() < limit {
            match self.next_after(t) {
                Some(n) if n <= up_to_inclusive => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }

    /// The fire times in `(last_checked, now]` that a scheduler coming back after an
    /// outage should run, oldest first, under `policy`:
    ///
    /// * `skip`: none (continue with `next_after(now)`).
    /// * `run_once`: the latest missed fire time only.
    /// * `run_all`: the most recent `catch_up_limit` missed fire times.
    ///
    /// Pure and deterministic, so every scheduler node makes the same decision.
    pub fn missed_fires(
        &self,
        last_checked: DateTime<Utc>,
        now: DateTime<Utc>,
        policy: MisfirePolicy,
        catch_up_limit: u32,
    ) -> Vec<DateTime<Utc>> {
        if now <= last_checked {
            return Vec::new();
        }
        match policy {
            MisfirePolicy::Skip => Vec::new(),
            MisfirePolicy::RunOnce => self.latest_fires(last_checked, now, 1),
            MisfirePolicy::RunAll => self.latest_fires(last_checked, now, catch_up_limit as usize),
        }
    }

    /// The last `n` fire times in `(after, up_to]`, oldest first.
    pub fn latest_fires(&self, after: DateTime<Utc>, up_to: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        if n == 0 || up_to <= after {
            return Vec::new();
        }
        match &self.trigger {
            Trigger::Manual => Vec::new(),
            Trigger::Once(at) => {
                if *at > after && *at <= up_to {
                    vec![*at]
                } else {
                    Vec::new()
                }
            }
            Trigger::Every { period, anchor } => {
                let p = period.as_nanos() as i128;
                let mut out = Vec::new();
                let Some(mut last) = every_last_at_or_before(*anchor, *period, up_to) else {
                    return out;
                };
                while last > after && out.len() < n {
                    out.push(last);
                    match add_nanos(last, -p) {
                        Some(prev) => last = prev,
                        None => break,
                    }
                }
                out.reverse();
                out
            }
            Trigger::Cron { .. } => {
                // Grow a window backwards from `up_to` until it holds `n` fires (or
                // reaches `after`), then walk it forward keeping the last `n`.
                let mut window = chrono::TimeDelta::minutes(1);
                loop {
                    let start = up_to.checked_sub_signed(window).map_or(after, |s| s.max(after));
                    let probe = self.fires_between(start, up_to, n);
                    if probe.len() >= n || start == after {
                        let mut ring = std::collections::VecDeque::with_capacity(n + 1);
                        let mut t = start;
                        while let Some(next) = self.next_after(t).filter(|x| *x <= up_to) {
                            if ring.len() == n {
                                ring.pop_front();
                            }
                            ring.push_back(next);
                            t = next;
                        }
                        return ring.into();
                    }
                    window = window.checked_mul(4).unwrap_or(chrono::TimeDelta::MAX);
                }
            }
        }
    }

    /// The latest fire instant in `(after, up_to_inclusive]`, if any.
    pub fn last_fire_between(&self, after: DateTime<Utc>, up_to_inclusive: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.latest_fires(after, up_to_inclusive, 1).pop()
    }
}

fn nanos_between(a: DateTime<Utc>, b: DateTime<Utc>) -> i128 {
    // (b - a) in nanoseconds without overflow.
    let secs = b.timestamp() as i128 - a.timestamp() as i128;
    let ns = b.timestamp_subsec_nanos() as i128 - a.timestamp_subsec_nanos() as i128;
    secs * 1_000_000_000 + ns
}

fn add_nanos(a: DateTime<Utc>, n: i128) -> Option<DateTime<Utc>> {
    let secs = n.div_euclid(1_000_000_000);
    let sub = n.rem_euclid(1_000_000_000) as i64;
    let secs = i64::try_from(secs).ok()?;
    let delta = chrono::TimeDelta::try_seconds(secs)?.checked_add(&chrono::TimeDelta::nanoseconds(sub))?;
    a.checked_add_signed(delta)
}

/// Smallest `anchor + k*period` strictly greater than `t` (k any integer).
fn every_next_after(anchor: DateTime<Utc>, period: Duration, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let p = period.as_nanos() as i128;
    if p == 0 {
        return None;
    }
    let d = nanos_between(anchor, t);
    let k = d.div_euclid(p) + 1;
    add_nanos(anchor, k.checked_mul(p)?)
}

/// Largest `anchor + k*period` less than or equal to `t`.
fn every_last_at_or_before(anchor: DateTime<Utc>, period: Duration, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let p = period.as_nanos() as i128;
    if p == 0 {
        return None;
    }
    let d = nanos_between(anchor, t);
    add_nanos(anchor, d.div_euclid(p).checked_mul(p)?)
}

fn cron_next_after(cron: &Cron, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Cron fires on whole seconds: searching strictly after the whole second
    // containing `t` gives the first fire strictly after `t`.
    let floor = t.with_nanosecond(0)?;
    let local = tz.from_utc_datetime(&floor.naive_utc());
    let next = cron.find_next_occurrence(&local, false).ok()?;
    let next = next.with_timezone(&Utc);
    debug_assert!(next > t);
    (next > t).then_some(next)
}
