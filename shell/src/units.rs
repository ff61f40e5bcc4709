//! Times, byte counts and counts as people write and read them: the time
//! arguments of `flowsql export`, the numbers of `status` and `export`.

use anyhow::Context as _;

/// A point in time from the command line, as UTC ns: RFC 3339
/// (`2026-11-28T07:00:00Z`), a date (`2026-11-28`, its midnight UTC), or a
/// duration (`2h`, that long before `now_ns`).
pub fn parse_time(text: &str, now_ns: i64) -> anyhow::Result<i64> {
    let text = text.trim();
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return time.timestamp_nanos_opt().with_context(|| format!("time {text} is out of range"));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date
            .and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_utc().timestamp_nanos_opt())
            .with_context(|| format!("date {text} is out of range"));
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = i64::try_from(ago.as_nanos()).unwrap_or(i64::MAX);
        return Ok(now_ns.saturating_sub(ago));
    }
    anyhow::bail!(
        "cannot read {text:?} as a time: use RFC 3339 (2026-11-28T07:00:00Z), a date (2026-11-28), or a duration ago (2h)"
    )
}

/// Bytes for people: `1.2 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// A count with thousands separators: `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_three_forms() {
        let now = 1_764_313_200_000_000_000; // 2025-11-28T07:00:00Z
        assert_eq!(parse_time("2025-11-28T07:00:00Z", 0).expect("rfc3339"), now);
        assert_eq!(parse_time("2025-11-28T08:00:00+01:00", 0).expect("offset"), now);
        assert_eq!(parse_time("2025-11-28", 0).expect("date"), now - 7 * 3_600_000_000_000);
        assert_eq!(parse_time("2h", now).expect("ago"), now - 2 * 3_600_000_000_000);
        assert!(parse_time("yesterday-ish", now).is_err());
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(12), "12");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
