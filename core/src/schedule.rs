//! Schedules of cron processes (the extended Procfile's `cron` key): parsing, the next
//! time one fires, and the EventBridge expression the `ecs` scheduler hands to AWS.
//!
//! Every schedule is in UTC, on both schedulers. Four forms are accepted:
//!
//! | form | example | meaning |
//! | --- | --- | --- |
//! | five fields | `*/15 9-17 * * MON-FRI` | standard cron: minute hour day-of-month month day-of-week |
//! | six fields | `0/2 * * * ? *` | AWS's (and Remind's Empire's) cron: minute hour day-of-month month day-of-week year |
//! | `cron(…)` | `cron(0 12 ? * MON *)` | the same six AWS fields, as EventBridge writes them |
//! | `rate(…)` | `rate(5 minutes)` | every N minutes, hours or days from when the schedule is armed |
//!
//! Fields take `*`, a value, `a-b`, lists `a,b` and steps `*/n`, `a/n`, `a-b/n`; months
//! also `JAN`–`DEC`, days of the week `SUN`–`SAT`. In the five-field form days of the
//! week count 0–7 (0 and 7 are Sunday) and, as in Vixie cron, a day matches when
//! either day field matches if both are restricted. In the AWS forms days of the week
//! count 1–7 (1 is Sunday), exactly one of the two day fields must be `?`, and the
//! year field takes 1970–2199. AWS's `L`, `W` and `#` are refused, so every accepted
//! schedule runs the same way on the docker scheduler as on EventBridge.
//!
//! `rate(N seconds)` is an extension for the docker scheduler (and fast tests):
//! EventBridge fires at most once a minute, so [`Schedule::aws_expression`] refuses it,
//! as it refuses a five-field schedule that restricts both day fields (EventBridge
//! cannot say "the 1st or any Monday").

use std::fmt;

use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// A schedule that does not parse, or that EventBridge cannot express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError(pub String);

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScheduleError {}

fn err<T>(message: impl Into<String>) -> Result<T, ScheduleError> {
    Err(ScheduleError(message.into()))
}

/// The unit of a `rate(…)` schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    /// Seconds (docker scheduler only).
    Seconds,
    /// Minutes.
    Minutes,
    /// Hours.
    Hours,
    /// Days.
    Days,
}

impl RateUnit {
    fn seconds(self) -> i64 {
        match self {
            RateUnit::Seconds => 1,
            RateUnit::Minutes => 60,
            RateUnit::Hours => 3600,
            RateUnit::Days => 86_400,
        }
    }

    fn name(self, count: u32) -> &'static str {
        match (self, count == 1) {
            (RateUnit::Seconds, true) => "second",
            (RateUnit::Seconds, false) => "seconds",
            (RateUnit::Minutes, true) => "minute",
            (RateUnit::Minutes, false) => "minutes",
            (RateUnit::Hours, true) => "hour",
            (RateUnit::Hours, false) => "hours",
            (RateUnit::Days, true) => "day",
            (RateUnit::Days, false) => "days",
        }
    }
}

/// Which grammar a cron schedule was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronForm {
    /// Five fields, standard cron.
    Standard,
    /// Six fields with a year, AWS's (bare or in `cron(…)`).
    Aws,
}

/// A parsed cron schedule: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// The grammar it was written in.
    pub form: CronForm,
    minutes: u64,
    hours: u64,
    /// Bits 1–31.
    days_of_month: u64,
    /// Bits 1–12.
    months: u64,
    /// Bits 0–6, 0 = Sunday.
    days_of_week: u64,
    /// Whether the day-of-month field is anything but `*`/`?`.
    dom_restricted: bool,
    /// Whether the day-of-week field is anything but `*`/`?`.
    dow_restricted: bool,
    /// Allowed years (AWS form), `None` for any.
    years: Option<Vec<bool>>,
    /// The six AWS fields as written (AWS form only), for EventBridge.
    aws_fields: Option<String>,
}

/// When a cron process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// A cron expression.
    Cron(Cron),
    /// Every `count` units, from when the schedule is armed.
    Rate {
        /// How many units apart.
        count: u32,
        /// The unit.
        unit: RateUnit,
    },
}

const FIRST_YEAR: i32 = 1970;
const LAST_YEAR: i32 = 2199;

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field's grammar.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for `min`, `min + 1`, …
    names: &'static [&'static str],
    /// `?` is allowed.
    question: bool,
}

/// A parsed field: the allowed values and whether it restricts anything.
struct Field {
    values: Vec<u32>,
    /// `*` or `?` alone.
    any: bool,
    /// `?` alone.
    question: bool,
}

fn parse_value(text: &str, spec: &FieldSpec) -> Result<u32, ScheduleError> {
    let upper = text.to_ascii_uppercase();
    if let Some(i) = spec.names.iter().position(|n| *n == upper) {
        return Ok(spec.min + i as u32);
    }
    let value: u32 = match text.parse() {
        Ok(v) => v,
        Err(_) => {
            if text.contains(['L', 'W', '#']) || text.eq_ignore_ascii_case("l") {
                return err(format!(
                    "{} field: {text:?} uses AWS's L, W or #, which Empire does not support",
                    spec.name
                ));
            }
            return err(format!("{} field: {text:?} is not a value", spec.name));
        }
    };
    if value < spec.min || value > spec.max {
        return err(format!(
            "{} field: {value} is out of range {}-{}",
            spec.name, spec.min, spec.max
        ));
    }
    Ok(value)
}

fn parse_field(text: &str, spec: &FieldSpec) -> Result<Field, ScheduleError> {
    if text == "?" {
        if !spec.question {
            return err(format!(
                "{} field: `?` is only for the day fields",
                spec.name
            ));
        }
        return Ok(Field {
            values: (spec.min..=spec.max).collect(),
            any: true,
            question: true,
        });
    }
    let mut values = Vec::new();
    for item in text.split(',') {
        if item.is_empty() {
            return err(format!(
                "{} field: {text:?} has an empty list item",
                spec.name
            ));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    ScheduleError(format!(
                        "{} field: {item:?} needs a whole step above 0 after '/'",
                        spec.name
                    ))
                })?;
                (range, step)
            }
            None => (item, 1),
        };
        let (from, to) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (parse_value(a, spec)?, parse_value(b, spec)?);
            if a > b {
                return err(format!(
                    "{} field: the range {range:?} starts after it ends",
                    spec.name
                ));
            }
            (a, b)
        } else {
            let a = parse_value(range, spec)?;
            // `a/n` runs from a to the end, as in AWS and most crons.
            (a, if item.contains('/') { spec.max } else { a })
        };
        values.extend((from..=to).step_by(step as usize));
    }
    values.sort_unstable();
    values.dedup();
    Ok(Field {
        values,
        any: text == "*",
        question: false,
    })
}

fn bits(values: &[u32]) -> u64 {
    values.iter().fold(0, |acc, v| acc | (1u64 << v))
}

fn has(set: u64, value: u32) -> bool {
    set & (1u64 << value) != 0
}

fn days_in_month(year: i32, month: u8) -> u8 {
    Month::try_from(month).map_or(31, |m| m.length(year))
}

impl Schedule {
    /// Parses a schedule in any of the forms of the [module documentation](self).
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return err("the schedule is empty");
        }
        let lower = trimmed.to_ascii_lowercase();
        if lower.starts_with("rate(") {
            return parse_rate(trimmed);
        }
        if lower.starts_with("cron(") {
            let inner = trimmed[5..].strip_suffix(')').ok_or_else(|| {
                ScheduleError(format!("{trimmed:?} lacks the closing ')' of cron(…)"))
            })?;
            let fields: Vec<&str> = inner.split_whitespace().collect();
            if fields.len() != 6 {
                return err(format!(
                    "cron(…) takes six fields (minute hour day-of-month month day-of-week year), {} given",
                    fields.len()
                ));
            }
            return Ok(Schedule::Cron(parse_cron(&fields)?));
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        match fields.len() {
            5 | 6 => Ok(Schedule::Cron(parse_cron(&fields)?)),
            n => err(format!(
                "{trimmed:?} has {n} field{}: use five (minute hour day-of-month month day-of-week), \
                 AWS's six (… year), cron(…) or rate(…)",
                if n == 1 { "" } else { "s" }
            )),
        }
    }

    /// The first time strictly after `after` that the schedule fires (in UTC), `None`
    /// when it never fires again (a year field in the past). A rate fires its period
    /// after `after`.
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        match self {
            Schedule::Rate { count, unit } => {
                after.checked_add(Duration::seconds(i64::from(*count) * unit.seconds()))
            }
            Schedule::Cron(cron) => cron.next_after(after),
        }
    }

    /// The EventBridge `ScheduleExpression` of this schedule: `rate(…)`, or `cron(…)`
    /// with AWS's fields (a five-field schedule is translated exactly: day-of-week
    /// numbers shift to AWS's 1–7 and `?` goes where EventBridge needs it).
    pub fn aws_expression(&self) -> Result<String, ScheduleError> {
        match self {
            Schedule::Rate { count, unit } => {
                if *unit == RateUnit::Seconds {
                    return err(format!(
                        "rate({count} {}) runs only on the docker scheduler: EventBridge schedules fire at most once a minute",
                        unit.name(*count)
                    ));
                }
                Ok(format!("rate({count} {})", unit.name(*count)))
            }
            Schedule::Cron(cron) => cron.aws_expression(),
        }
    }
}

fn parse_rate(text: &str) -> Result<Schedule, ScheduleError> {
    let usage = || {
        ScheduleError(format!(
            "{text:?} is not a rate: use rate(<count> minutes|hours|days), such as rate(5 minutes)"
        ))
    };
    let inner = text[5..].strip_suffix(')').ok_or_else(usage)?;
    let mut words = inner.split_whitespace();
    let (Some(count), Some(unit), None) = (words.next(), words.next(), words.next()) else {
        return Err(usage());
    };
    let count: u32 = count.parse().ok().filter(|c| *c > 0).ok_or_else(usage)?;
    let unit = match unit.to_ascii_lowercase().as_str() {
        "second" | "seconds" => RateUnit::Seconds,
        "minute" | "minutes" => RateUnit::Minutes,
        "hour" | "hours" => RateUnit::Hours,
        "day" | "days" => RateUnit::Days,
        _ => return Err(usage()),
    };
    Ok(Schedule::Rate { count, unit })
}

fn parse_cron(fields: &[&str]) -> Result<Cron, ScheduleError> {
    let aws = fields.len() == 6;
    let spec = |name, min, max, names, question| FieldSpec {
        name,
        min,
        max,
        names,
        question,
    };
    let minutes = parse_field(fields[0], &spec("minute", 0, 59, &[], false))?;
    let hours = parse_field(fields[1], &spec("hour", 0, 23, &[], false))?;
    let dom = parse_field(fields[2], &spec("day-of-month", 1, 31, &[], true))?;
    let months = parse_field(fields[3], &spec("month", 1, 12, &MONTH_NAMES, false))?;
    let dow = if aws {
        let field = parse_field(fields[4], &spec("day-of-week", 1, 7, &DAY_NAMES, true))?;
        // AWS counts 1 = Sunday.
        Field {
            values: field.values.iter().map(|v| v - 1).collect(),
            ..field
        }
    } else {
        // Names map to 0-6 (SUN-SAT); numbers take 0-7.
        let field = parse_field(fields[4], &spec("day-of-week", 0, 7, &DAY_NAMES, true))?;
        // 7 is Sunday too.
        Field {
            values: field.values.iter().map(|v| v % 7).collect(),
            ..field
        }
    };
    let years = if aws {
        let field = parse_field(
            fields[5],
            &spec("year", FIRST_YEAR as u32, LAST_YEAR as u32, &[], false),
        )?;
        (!field.any).then(|| {
            let mut allowed = vec![false; (LAST_YEAR - FIRST_YEAR + 1) as usize];
            for y in field.values {
                allowed[(y - FIRST_YEAR as u32) as usize] = true;
            }
            allowed
        })
    } else {
        None
    };
    if aws && dom.question == dow.question {
        return err(
            "AWS cron expressions need `?` in exactly one of day-of-month (3rd field) and day-of-week (5th field)",
        );
    }
    let cron = Cron {
        form: if aws {
            CronForm::Aws
        } else {
            CronForm::Standard
        },
        minutes: bits(&minutes.values),
        hours: bits(&hours.values),
        days_of_month: bits(&dom.values),
        months: bits(&months.values),
        days_of_week: bits(&dow.values),
        dom_restricted: !dom.any,
        dow_restricted: !dow.any,
        years,
        aws_fields: aws.then(|| fields.join(" ")),
    };
    cron.check_reachable()?;
    Ok(cron)
}

impl Cron {
    /// Refuses a schedule no date matches (`0 0 31 2 *`).
    fn check_reachable(&self) -> Result<(), ScheduleError> {
        if self.dow_restricted && (!self.dom_restricted || self.form == CronForm::Standard) {
            // Every day of the week comes round in every month.
            return Ok(());
        }
        let reachable = (1..=12u32).any(|m| {
            has(self.months, m)
                && (1..=u32::from(days_in_month(2000, m as u8))).any(|d| has(self.days_of_month, d))
        });
        if reachable {
            Ok(())
        } else {
            err("no date matches its day-of-month and month fields, so it never runs")
        }
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = has(self.days_of_month, u32::from(date.day()));
        let dow = has(
            self.days_of_week,
            u32::from(date.weekday().number_days_from_sunday()),
        );
        if self.dom_restricted && self.dow_restricted {
            // Standard cron only (AWS has one `?`): either day field.
            dom || dow
        } else {
            dom && dow
        }
    }

    fn year_matches(&self, year: i32) -> bool {
        match &self.years {
            None => true,
            Some(allowed) => {
                (FIRST_YEAR..=LAST_YEAR).contains(&year) && allowed[(year - FIRST_YEAR) as usize]
            }
        }
    }

    /// The first matching minute strictly after `after` (UTC).
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let after = after.to_offset(time::UtcOffset::UTC);
        let minute = after.replace_second(0).ok()?.replace_nanosecond(0).ok()?;
        let mut t = PrimitiveDateTime::new(minute.date(), minute.time()) + Duration::minutes(1);
        // Past the last year EventBridge knows (and far enough for Feb 29 on a weekday).
        let give_up = LAST_YEAR.min(after.year().max(FIRST_YEAR) + 400);
        let midnight = |date: Date| PrimitiveDateTime::new(date, Time::MIDNIGHT);
        while t.year() <= give_up {
            if !self.year_matches(t.year()) {
                t = midnight(Date::from_calendar_date(t.year() + 1, Month::January, 1).ok()?);
                continue;
            }
            if !has(self.months, u32::from(u8::from(t.month()))) {
                let (year, month) = match t.month() {
                    Month::December => (t.year() + 1, Month::January),
                    m => (t.year(), m.next()),
                };
                t = midnight(Date::from_calendar_date(year, month, 1).ok()?);
                continue;
            }
            if !self.day_matches(t.date()) {
                t = midnight(t.date().next_day()?);
                continue;
            }
            if !has(self.hours, u32::from(t.hour())) {
                t = t.replace_minute(0).ok()? + Duration::hours(1);
                continue;
            }
            if !has(self.minutes, u32::from(t.minute())) {
                t += Duration::minutes(1);
                continue;
            }
            return Some(t.assume_utc());
        }
        None
    }

    fn aws_expression(&self) -> Result<String, ScheduleError> {
        if let Some(fields) = &self.aws_fields {
            return Ok(format!("cron({fields})"));
        }
        let (dom, dow) = match (self.dom_restricted, self.dow_restricted) {
            (true, true) => {
                return err(
                    "it restricts both the day of the month and the day of the week, which EventBridge cannot express: \
                     split it into two process types",
                );
            }
            (_, false) => (list(self.days_of_month, 1, 31), "?".to_string()),
            (false, true) => {
                // AWS counts days of the week from 1 = Sunday.
                ("?".to_string(), list(self.days_of_week << 1, 1, 7))
            }
        };
        Ok(format!(
            "cron({} {} {dom} {} {dow} *)",
            list(self.minutes, 0, 59),
            list(self.hours, 0, 23),
            list(self.months, 1, 12),
        ))
    }
}

/// A bit set as a cron field: `*` when full, else values and ranges (`0-4,10,30-32`).
fn list(set: u64, min: u32, max: u32) -> String {
    if (min..=max).all(|v| has(set, v)) {
        return "*".to_string();
    }
    let mut parts = Vec::new();
    let mut v = min;
    while v <= max {
        if !has(set, v) {
            v += 1;
            continue;
        }
        let start = v;
        while v < max && has(set, v + 1) {
            v += 1;
        }
        parts.push(if v > start {
            format!("{start}-{v}")
        } else {
            start.to_string()
        });
        v += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn next(schedule: &str, after: OffsetDateTime) -> OffsetDateTime {
        Schedule::parse(schedule)
            .unwrap_or_else(|e| panic!("{schedule:?}: {e}"))
            .next_after(after)
            .unwrap_or_else(|| panic!("{schedule:?} never fires after {after}"))
    }

    fn nexts(schedule: &str, mut after: OffsetDateTime, n: usize) -> Vec<OffsetDateTime> {
        let parsed = Schedule::parse(schedule).unwrap();
        (0..n)
            .map(|_| {
                after = parsed.next_after(after).unwrap();
                after
            })
            .collect()
    }

    fn error(schedule: &str) -> String {
        match Schedule::parse(schedule) {
            Ok(s) => panic!("{schedule:?} should not parse, got {s:?}"),
            Err(e) => e.0,
        }
    }

    fn aws(schedule: &str) -> Result<String, String> {
        Schedule::parse(schedule)
            .unwrap()
            .aws_expression()
            .map_err(|e| e.0)
    }

    #[test]
    fn every_minute_fires_on_the_next_whole_minute() {
        assert_eq!(
            next("* * * * *", datetime!(2026-11-27 11:20:47 UTC)),
            datetime!(2026-11-27 11:21:00 UTC)
        );
        // Strictly after: a time on the minute moves to the next one.
        assert_eq!(
            next("* * * * *", datetime!(2026-11-27 11:21:00 UTC)),
            datetime!(2026-11-27 11:22:00 UTC)
        );
    }

    #[test]
    fn steps_ranges_and_lists() {
        assert_eq!(
            nexts("*/15 9-10 * * *", datetime!(2026-11-27 10:40 UTC), 3),
            [
                datetime!(2026-11-27 10:45 UTC),
                datetime!(2026-11-28 09:00 UTC),
                datetime!(2026-11-28 09:15 UTC),
            ]
        );
        assert_eq!(
            nexts("5,35 0 1 1,jul *", datetime!(2026-01-01 00:35 UTC), 2),
            [
                datetime!(2026-07-01 00:05 UTC),
                datetime!(2026-07-01 00:35 UTC)
            ]
        );
        assert_eq!(
            next("10/20 * * * *", datetime!(2026-01-01 00:31 UTC)),
            datetime!(2026-01-01 00:50 UTC)
        );
    }

    #[test]
    fn days_of_the_week_by_number_or_name_with_sunday_as_0_or_7() {
        // 2026-11-27 is a Friday.
        assert_eq!(
            next("0 9 * * MON-FRI", datetime!(2026-11-27 10:00 UTC)),
            datetime!(2026-11-30 09:00 UTC)
        );
        assert_eq!(
            next("0 9 * * 7", datetime!(2026-11-27 10:00 UTC)),
            datetime!(2026-11-29 09:00 UTC)
        );
        assert_eq!(
            next("0 9 * * 0", datetime!(2026-11-27 10:00 UTC)),
            datetime!(2026-11-29 09:00 UTC)
        );
    }

    #[test]
    fn standard_cron_matches_either_day_field_when_both_are_restricted() {
        // The 1st of the month or any Monday.
        assert_eq!(
            nexts("0 0 1 * 1", datetime!(2026-11-27 00:00 UTC), 2),
            [
                datetime!(2026-11-30 00:00 UTC),
                datetime!(2026-12-01 00:00 UTC)
            ]
        );
    }

    #[test]
    fn leap_days_and_month_ends() {
        assert_eq!(
            next("0 0 29 2 *", datetime!(2026-03-01 00:00 UTC)),
            datetime!(2028-02-29 00:00 UTC)
        );
        assert_eq!(
            next("30 23 31 * *", datetime!(2026-11-01 00:00 UTC)),
            datetime!(2026-12-31 23:30 UTC)
        );
    }

    #[test]
    fn aws_six_fields_with_or_without_cron_parentheses() {
        // Remind's Empire's example: every two minutes.
        assert_eq!(
            nexts("0/2 * * * ? *", datetime!(2026-11-27 11:21:30 UTC), 2),
            [
                datetime!(2026-11-27 11:22 UTC),
                datetime!(2026-11-27 11:24 UTC)
            ]
        );
        // AWS's days of the week count from 1 = Sunday: 2 is Monday.
        assert_eq!(
            next("cron(0 12 ? * 2 *)", datetime!(2026-11-27 00:00 UTC)),
            datetime!(2026-11-30 12:00 UTC)
        );
        assert_eq!(
            next("cron(0 12 ? * MON *)", datetime!(2026-11-27 00:00 UTC)),
            datetime!(2026-11-30 12:00 UTC)
        );
        assert_eq!(
            next("0 8 1 * ? 2027-2028", datetime!(2026-11-27 00:00 UTC)),
            datetime!(2027-01-01 08:00 UTC)
        );
        // A year in the past never fires again.
        let past = Schedule::parse("cron(0 8 1 * ? 2020)").unwrap();
        assert_eq!(past.next_after(datetime!(2026-11-27 00:00 UTC)), None);
    }

    #[test]
    fn rates_fire_their_period_after_the_given_time() {
        let t = datetime!(2026-11-27 11:20:47 UTC);
        assert_eq!(next("rate(5 minutes)", t), t + Duration::minutes(5));
        assert_eq!(next("rate(1 hour)", t), t + Duration::hours(1));
        assert_eq!(next("rate(2 days)", t), t + Duration::days(2));
        assert_eq!(next("rate(2 seconds)", t), t + Duration::seconds(2));
        // Past the end of time: never again, no panic.
        let far = Schedule::parse("rate(4294967295 days)").unwrap();
        assert_eq!(far.next_after(t), None);
    }

    #[test]
    fn refuses_bad_schedules_with_the_reason() {
        assert!(error("").contains("empty"));
        assert!(
            error("* * * *").contains("has 4 fields"),
            "{}",
            error("* * * *")
        );
        assert!(error("60 * * * *").contains("minute field: 60 is out of range 0-59"));
        assert!(error("* 24 * * *").contains("hour field"));
        assert!(error("* * 0 * *").contains("day-of-month field: 0 is out of range 1-31"));
        assert!(error("* * * 13 *").contains("month field"));
        assert!(error("* * * * 8").contains("day-of-week field"));
        assert!(error("*/0 * * * *").contains("needs a whole step above 0"));
        assert!(error("5-1 * * * *").contains("starts after it ends"));
        assert!(error("x * * * *").contains("\"x\" is not a value"));
        assert!(error("1,,2 * * * *").contains("empty list item"));
        assert!(error("? * * * *").contains("only for the day fields"));
        assert!(error("0 0 31 2 *").contains("never runs"));
        assert!(error("0 0 30 2 ? *").contains("never runs"));
        // AWS needs exactly one `?`.
        assert!(error("0 12 * * * *").contains("exactly one of day-of-month"));
        assert!(error("0 12 ? * ? *").contains("exactly one of day-of-month"));
        assert!(error("0 12 L * ? *").contains("L, W or #"));
        assert!(error("0 12 ? * 2#1 *").contains("L, W or #"));
        assert!(error("0 0 1 * ? 1969").contains("year field"));
        assert!(error("cron(0 12 * * ?)").contains("six fields"));
        assert!(error("cron(0 12 * * ? *").contains("closing ')'"));
        for bad in [
            "rate(5)",
            "rate(0 minutes)",
            "rate(5 weeks)",
            "rate(-1 days)",
            "rate(5 minutes",
        ] {
            assert!(
                error(bad).contains("is not a rate"),
                "{bad}: {}",
                error(bad)
            );
        }
    }

    #[test]
    fn aws_expressions_for_eventbridge() {
        assert_eq!(aws("rate(1 minute)").unwrap(), "rate(1 minute)");
        assert_eq!(aws("rate(1 minutes)").unwrap(), "rate(1 minute)");
        assert_eq!(aws("rate(5 minute)").unwrap(), "rate(5 minutes)");
        assert!(
            aws("rate(2 seconds)")
                .unwrap_err()
                .contains("docker scheduler")
        );
        assert_eq!(aws("0/2 * * * ? *").unwrap(), "cron(0/2 * * * ? *)");
        assert_eq!(
            aws("cron(0  12 ? * MON *)").unwrap(),
            "cron(0 12 ? * MON *)"
        );
        assert_eq!(aws("* * * * *").unwrap(), "cron(* * * * ? *)");
        assert_eq!(
            aws("*/15 9-17 * * *").unwrap(),
            "cron(0,15,30,45 9-17 * * ? *)"
        );
        // Days of the week shift to AWS's 1 = Sunday; day-of-month becomes `?`.
        assert_eq!(aws("0 9 * * 1-5").unwrap(), "cron(0 9 ? * 2-6 *)");
        assert_eq!(aws("0 9 * * 0,7").unwrap(), "cron(0 9 ? * 1 *)");
        assert_eq!(aws("0 9 * * SAT").unwrap(), "cron(0 9 ? * 7 *)");
        assert_eq!(
            aws("0 0 1,15 */3 *").unwrap(),
            "cron(0 0 1,15 1,4,7,10 ? *)"
        );
        assert!(
            aws("0 0 1 * 1")
                .unwrap_err()
                .contains("both the day of the month")
        );
    }

    #[test]
    fn lists_compress_runs() {
        assert_eq!(list(0b1110_0111, 0, 7), "0-2,5-7");
        assert_eq!(list(0b1_0000_0100, 0, 59), "2,8");
        assert_eq!(list(u64::MAX, 0, 59), "*");
    }
}
