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
    Ok(utc(seconds)?.format(&time::format_description::well_known::Rfc3339)?)
}

/// `YYYYMMDDhhmmss` (ISO 9660's digits without the hundredths).
pub fn digits(seconds: i64) -> anyhow::Result<String> {
    let digits = time::macros::format_description!("[year][month][day][hour][minute][second]");
    Ok(utc(seconds)?.format(&digits)?)
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
