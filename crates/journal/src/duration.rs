//! Durations as users write them (`250ms`, `10s`, `1m30s`, `2h`, `1d`) and as wayline prints them.

use std::time::Duration;

/// The longest duration the format accepts; beyond this a value is surely a mistake.
pub const MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

const UNITS: [(&str, u64); 5] =
    [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Parses a duration made of one or more `<integer><unit>` parts with units `d`, `h`, `m`, `s`,
/// `ms`, largest first, each at most once.
///
/// ```
/// use std::time::Duration;
/// use wayline_journal::duration::parse;
/// assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
/// assert!(parse("10").is_err());
/// ```
pub fn parse(text: &str) -> Result<Duration, String> {
    let hint = "write it like `250ms`, `10s`, `5m`, `2h`, `1d` or `1m30s`";
    if text.is_empty() {
        return Err(format!("empty duration; {hint}"));
    }
    let mut rest = text;
    let mut total: u64 = 0;
    let mut last_unit = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{text}` is not a duration; {hint}"));
        }
        if rest[digits..].starts_with('.') {
            return Err(fraction(text));
        }
        let number: u64 =
            rest[..digits].parse().map_err(|_| format!("`{text}` is too large for a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                format!("`{text}` has a number without a unit; {hint}")
            } else {
                format!("`{unit}` is not a duration unit; use d, h, m, s or ms")
            });
        };
        if last_unit != usize::MAX && index <= last_unit {
            return Err(format!(
                "`{text}`: units must go from largest to smallest, each at most once (like `1h30m`)"
            ));
        }
        last_unit = index;
        total = number
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("`{text}` is too large for a duration"))?;
    }
    let duration = Duration::from_millis(total);
    if duration > MAX {
        return Err(format!("`{text}` is longer than the maximum of 10 years"));
    }
    Ok(duration)
}

/// The message for `1.5h`: fractions are not part of the syntax, but the same duration can
/// usually be spelt with smaller units, and the message says how.
fn fraction(text: &str) -> String {
    let unit_at = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let size = UNITS.iter().find(|(name, _)| *name == unit).map(|(_, size)| *size);
    let spelt = match (number.parse::<f64>(), size) {
        (Ok(value), Some(size)) if value.is_finite() && value >= 0.0 => {
            let ms = value * size as f64;
            (ms.fract() == 0.0 && ms < MAX.as_millis() as f64).then(|| spell(ms as u64))
        }
        _ => None,
    };
    match spelt {
        Some(spelt) => format!("`{text}`: a duration has no fractions; write `{spelt}`"),
        None => format!("`{text}`: a duration has no fractions; combine units like `1m30s`"),
    }
}

/// Spells milliseconds in the syntax `parse` reads: `1h30m`, `1s500ms`.
fn spell(mut ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Formats a duration the way it would be written in a workflow file, with fractional seconds
/// where there are milliseconds: `1s`, `1m30s`, `2h`, `1.5s`, `250ms`, `0s`.
///
/// ```
/// use std::time::Duration;
/// use wayline_journal::duration::format;
/// assert_eq!(format(Duration::from_millis(90_000)), "1m30s");
/// assert_eq!(format(Duration::from_millis(1_500)), "1.5s");
/// assert_eq!(format(Duration::from_millis(250)), "250ms");
/// ```
pub fn format(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    if ms > 0 {
        let (secs, frac) = (ms / 1000, ms % 1000);
        if frac == 0 {
            out.push_str(&format!("{secs}s"));
        } else {
            let frac = format!("{frac:03}");
            out.push_str(&format!("{secs}.{}s", frac.trim_end_matches('0')));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_combinations() {
        let cases = [
            ("250ms", 250),
            ("10s", 10_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("1m30s", 90_000),
            ("1h0m5s250ms", 3_605_250),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(parse(text), Ok(Duration::from_millis(ms)), "{text}");
        }
    }

    #[test]
    fn rejects_what_is_ambiguous() {
        for text in
            ["", "10", "s", "1.5s", "30s1m", "1m1m", "5 m", "1w", "-1s", "99999999999999999999s"]
        {
            assert!(parse(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn fractions_get_a_spelt_out_suggestion() {
        assert_eq!(
            parse("1.5h").unwrap_err(),
            "`1.5h`: a duration has no fractions; write `1h30m`"
        );
        assert_eq!(
            parse("2.25s").unwrap_err(),
            "`2.25s`: a duration has no fractions; write `2s250ms`"
        );
        assert!(parse("1.0001ms").unwrap_err().contains("combine units"));
    }

    #[test]
    fn format_round_trips() {
        for ms in [0u64, 1, 999, 1000, 1500, 61_000, 90_000, 3_600_000, 86_400_001, 90_061_500] {
            let d = Duration::from_millis(ms);
            if ms % 1000 == 0 || ms < 1000 {
                assert_eq!(parse(&format(d)), Ok(d), "{ms}");
            }
        }
        assert_eq!(format(Duration::from_millis(86_400_001)), "1d0.001s");
    }
}
