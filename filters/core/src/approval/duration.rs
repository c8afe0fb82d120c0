//! Durations as people write them in policies and on the command line:
//! `90s`, `15m`, `2h`, `1d`, or a combination such as `1h30m`.

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration \"{0}\" (write e.g. 90s, 15m, 2h, 1d or 1h30m)")]
pub struct DurationError(String);

/// Seconds in `text`: one or more `<digits><unit>` parts, units `s`, `m`, `h`, `d`.
pub fn parse_duration(text: &str) -> Result<u64, DurationError> {
    let error = || DurationError(text.to_owned());
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut parts = 0;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(error()),
        };
        let n: u64 = digits.parse().map_err(|_| error())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(error)?;
        parts += 1;
    }
    if !digits.is_empty() || parts == 0 {
        return Err(error());
    }
    Ok(total)
}

/// `seconds` in the largest units that divide it: `1h30m`, `45s`, `2d`.
pub fn format_duration(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = seconds;
    for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if rest >= unit {
            out.push_str(&(rest / unit).to_string());
            out.push(name);
            rest %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_add_up() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration(" 2d "), Ok(172_800));
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(45), "45s");
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in ["", "15", "m", "1x", "-5m", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
