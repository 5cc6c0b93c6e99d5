//! Duration flags.
//!
//! Upstream components take Go's `time.ParseDuration` forms (`500ms`, `1.5s`, `1m30s`, `2h`,
//! `100us`), and svcnet's binaries take exactly those too, so a flag value that works for
//! kube-proxy or kube-controller-manager works here. A bare number is a number of seconds, and
//! `0` is zero. Negative durations are refused (no flag means anything by them).

use std::time::Duration;

use crate::{Error, Result};

fn unit_nanos(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1.0,
        "us" | "µs" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    })
}

/// Parses a duration flag (see the module docs for the accepted forms).
pub fn parse_duration(value: &str) -> Result<Duration> {
    let err = |reason| Error::Duration {
        value: value.to_string(),
        reason,
    };
    let s = value.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.starts_with('-') {
        return Err(err("negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if let Ok(secs) = s.parse::<f64>() {
        return seconds(secs).ok_or_else(|| err("out of range"));
    }
    let mut nanos = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit (ns, us, ms, s, m, h)"))?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(err("expected a number"));
        }
        let n: f64 = num.parse().map_err(|_| err("expected a number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let per = unit_nanos(unit).ok_or_else(|| err("unknown unit (ns, us, ms, s, m, h)"))?;
        nanos += n * per;
        rest = next;
    }
    seconds(nanos / 1e9).ok_or_else(|| err("out of range"))
}

fn seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

/// [`parse_duration`] with a `String` error, the shape clap's `value_parser` takes.
pub fn duration_flag(value: &str) -> std::result::Result<Duration, String> {
    parse_duration(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms_and_bare_seconds() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("500ms", ms(500)),
            ("1.5s", ms(1500)),
            ("1m30s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("1h0m0.5s", ms(3_600_500)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("250ns", Duration::from_nanos(250)),
            (".5s", ms(500)),
            ("+3s", Duration::from_secs(3)),
            ("15", Duration::from_secs(15)),
            ("0.25", ms(250)),
            ("0", Duration::ZERO),
            (" 2m ", Duration::from_secs(120)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn bad_values_say_why() {
        for (text, why) in [
            ("", "empty"),
            ("-1s", "negative"),
            ("5 parsecs", "unknown unit"),
            ("1d", "unknown unit"),
            ("s", "expected a number"),
            ("1.2.3s", "expected a number"),
            ("1e400", "out of range"),
            ("3m2", "missing unit"),
        ] {
            let err = parse_duration(text).expect_err(text).to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
