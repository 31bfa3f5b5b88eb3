//! Times written into artifacts: the build's source date, in UTC, in the forms the
//! formats ask for.

use anyhow::Context;
use time::OffsetDateTime;

fn utc(seconds: i64) -> anyhow::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .with_context(|| format!("{seconds} seconds is not a time an artifact can hold"))
}

/// `YYYY-MM-DDThh:mm:ssZ` (RFC 3339, as SPDX asks).
pub fn rfc3339(seconds: i64) -> anyhow::Result<String> {
    let at = utc(seconds)?;
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    ))
}

/// `YYYYMMDDhhmmss` (ISO 9660's digits without the hundredths).
pub fn digits(seconds: i64) -> anyhow::Result<String> {
    Ok(rfc3339(seconds)?
        .chars()
        .filter(char::is_ascii_digit)
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_forms_of_one_time() {
        assert_eq!(
            super::rfc3339(1_754_697_600).unwrap(),
            "2025-08-09T00:00:00Z"
        );
        assert_eq!(super::digits(1_754_697_661).unwrap(), "20250809000101");
    }
}
