//! Parsing of the command line's durations (`500ms`, `2s`) and sizes (`64`, `4k`).

use std::time::Duration;

/// Parses `250us`, `500ms`, `2s`, `1m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms or 2s"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" | "min" => value * 60.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ns, us, ms, s or m)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses a size in bytes: `64`, `4k`/`4KiB` (x1024), `1m`/`1MiB` (x1024²).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 64, 4k or 1m"))?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use k or m)")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A byte count for people: `512 B`, `4.0 KiB`, `272.5 KiB`, `61.0 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How much a new named segment takes of `/dev/shm` (the file of `kind` `name`), and how much
/// is still free there: `272.0 KiB of /dev/shm (22.9 GiB still free)`.
pub fn shm_footprint(kind: &str, name: &str) -> Option<String> {
    let file = std::fs::metadata(format!("/dev/shm/ipckit.{kind}.{name}")).ok()?;
    let free = rustix::fs::statvfs("/dev/shm")
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .ok()?;
    Some(format!(
        "{} of /dev/shm ({} still free)",
        human_bytes(file.len()),
        human_bytes(free)
    ))
}

/// For an object refused for want of room, how big it would have been, in people's units:
/// ` (it would take 61.1 GiB; 23.5 GiB are free)`; empty for any other error.
pub fn refused_size(err: &ipckit::Error) -> String {
    match err {
        ipckit::Error::NoSpace {
            requested,
            available,
            ..
        } => format!(
            " (it would take {}; {} are free)",
            human_bytes(*requested),
            human_bytes(*available)
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(4096), "4.0 KiB");
        assert_eq!(human_bytes(65 << 30), "65.0 GiB");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999k").is_err());
    }
}
