//! Done markers: `/var/lib/r2a/done/<step>.json`, one per finished step.
//!
//! A marker records that a step reached its goal, when, and what it found or did. It is
//! also a safety latch: a step that destroys data on a first run (formatting the data
//! disk) reads its marker and refuses to do it a second time.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::root::Root;
use crate::fsutil::{read_optional, write_atomic};

/// The folder of the markers.
pub const MARKER_DIR: &str = "/var/lib/r2a/done";

/// One finished step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The step's name.
    pub step: String,
    /// When it was last completed or changed something, RFC 3339 in UTC.
    pub done_at: String,
    /// What it found or did, in one line.
    pub detail: String,
}

/// The image path of a step's marker.
pub fn marker_path(step: &str) -> String {
    format!("{MARKER_DIR}/{step}.json")
}

/// The marker of `step`, if it exists.
pub fn read_marker(root: &Root, step: &str) -> anyhow::Result<Option<Marker>> {
    let path = root.path(marker_path(step));
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("parsing {}", path.display()))
}

/// Writes the marker of `step` atomically, stamped with the current time.
pub fn write_marker(root: &Root, step: &str, detail: &str) -> anyhow::Result<Marker> {
    let marker = Marker {
        step: step.to_string(),
        done_at: now_utc(),
        detail: detail.to_string(),
    };
    let mut json = serde_json::to_string_pretty(&marker).context("encoding a done marker")?;
    json.push('\n');
    write_atomic(&root.path(marker_path(step)), json.as_bytes(), 0o644)?;
    Ok(marker)
}

/// The current time as RFC 3339 in UTC, to the second.
pub fn now_utc() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    rfc3339_utc(seconds)
}

/// `seconds` since the Unix epoch as RFC 3339 in UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339_utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm),
/// so the agent needs no date crate for its timestamps.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        // Debian 13's release day plus 1 h 2 min 3 s.
        assert_eq!(rfc3339_utc(1_754_697_600 + 3723), "2025-08-09T01:02:03Z");
        assert_eq!(rfc3339_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn a_marker_is_written_atomically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert_eq!(read_marker(&root, "hosts").unwrap(), None);
        let written = write_marker(&root, "hosts", "all 3 nodes listed").unwrap();
        assert_eq!(read_marker(&root, "hosts").unwrap(), Some(written.clone()));
        assert!(written.done_at.ends_with('Z'), "{}", written.done_at);
        // Only the marker is left in the folder: the temp file was renamed over it.
        let names: Vec<String> = std::fs::read_dir(root.path(MARKER_DIR))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["hosts.json"]);
    }

    #[test]
    fn a_damaged_marker_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let path = root.path(marker_path("network"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{ half").unwrap();
        let error = format!("{:#}", read_marker(&root, "network").unwrap_err());
        assert!(error.contains("done/network.json"), "{error}");
    }
}
