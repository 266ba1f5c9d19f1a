//! Durations in config files: an integer or decimal number and a unit, e.g. `250ms`, `5s`,
//! `1.5s`, `2m`, `1h`. A bare `0` is zero. At most [`MAX`]: a deadline this far ahead is
//! still a time the clock can hold (`Instant + Duration` panics past that).

use std::time::Duration;

/// The longest duration a config may give: a year.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `value`, or says what was expected.
pub fn parse(value: &str) -> Result<Duration, String> {
    let v = value.trim();
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(expected(value)),
    };
    let n: f64 = number.parse().map_err(|_| expected(value))?;
    let d = Duration::try_from_secs_f64(n * scale).map_err(|_| expected(value))?;
    if d > MAX {
        return Err(format!(
            "duration `{value}` is too long: at most 8760h (a year); `0s` turns a timeout off"
        ));
    }
    Ok(d)
}

fn expected(value: &str) -> String {
    format!("invalid duration `{value}`: expected a number and a unit (ms, s, m, h), e.g. `5s`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("8760h"), Ok(MAX));
    }

    #[test]
    fn rejects_durations_past_a_year() {
        for long in ["8761h", "4000000000000000h", "99999999999999999999h"] {
            assert!(parse(long).is_err(), "{long}");
        }
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        for bad in ["5", "s", "5 s", "5d", "-1s", "", "1.2.3s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
