//! Timestamps as RFC 3339 text, written digit by digit: every change
//! stores its times several times over (the job's row, the event's row, the
//! event's JSON), and chrono's formatting machinery cost several times more
//! than the digits. The text is exactly chrono's with `SecondsFormat::AutoSi`
//! (no fraction, or 3, 6 or 9 digits, whichever is shortest and exact), so
//! what is stored does not depend on which of the two wrote it; times
//! chrono writes differently (years outside 0–9999, leap seconds) are left
//! to chrono. Formatting only: parsing stays chrono's.

use std::fmt;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// How the offset is written: `Z`, or `+00:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offset {
    Z,
    Colon,
}

/// One timestamp's text, on the stack.
pub(crate) struct Rfc3339 {
    bytes: [u8; Self::MAX],
    len: usize,
}

impl Rfc3339 {
    /// The longest text chrono writes for a time it can hold, which the
    /// fallback may hand over: `-262144-12-31T23:59:60.999999999+00:00`
    /// (a leap second in its earliest year), 38 bytes.
    const MAX: usize = 38;

    pub(crate) fn new(at: DateTime<Utc>, offset: Offset) -> Self {
        let mut text = Self {
            bytes: [0; Self::MAX],
            len: 0,
        };
        // The fields of the naive time: a `DateTime` works each one out
        // through its offset anew.
        let naive = at.naive_utc();
        let (date, time) = (naive.date(), naive.time());
        let nanos = time.nanosecond();
        let year = date.year();
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            text.push(chrono_text(at, offset).as_bytes());
            return text;
        }
        let year = year as u32;
        text.digits(year / 100, 2);
        text.digits(year % 100, 2);
        text.push(b"-");
        text.digits(date.month(), 2);
        text.push(b"-");
        text.digits(date.day(), 2);
        text.push(b"T");
        text.digits(time.hour(), 2);
        text.push(b":");
        text.digits(time.minute(), 2);
        text.push(b":");
        text.digits(time.second(), 2);
        if nanos != 0 {
            text.push(b".");
            if nanos.is_multiple_of(1_000_000) {
                text.digits(nanos / 1_000_000, 3);
            } else if nanos.is_multiple_of(1_000) {
                text.digits(nanos / 1_000, 6);
            } else {
                text.digits(nanos, 9);
            }
        }
        text.push(match offset {
            Offset::Z => b"Z",
            Offset::Colon => b"+00:00",
        });
        text
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits and punctuation, or chrono's own text, went in.
        std::str::from_utf8(self.bytes.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(Self::MAX);
        if let Some(room) = self.bytes.get_mut(self.len..end) {
            room.copy_from_slice(bytes.get(..room.len()).unwrap_or_default());
        }
        self.len = end;
    }

    /// `value` in exactly `width` decimal digits (`value` fits in them).
    fn digits(&mut self, mut value: u32, width: usize) {
        let end = (self.len + width).min(Self::MAX);
        if let Some(room) = self.bytes.get_mut(self.len..end) {
            for byte in room.iter_mut().rev() {
                *byte = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        self.len = end;
    }
}

fn chrono_text(at: DateTime<Utc>, offset: Offset) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, offset == Offset::Z)
}

impl fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Serializes a timestamp as chrono's serde support does (`Z`, AutoSi), for
/// `#[serde(serialize_with)]`; chrono's own deserializer reads it back.
pub(crate) fn serialize<S: serde::Serializer>(
    at: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(Rfc3339::new(*at, Offset::Z).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn both(at: DateTime<Utc>) {
        for offset in [Offset::Z, Offset::Colon] {
            assert_eq!(
                Rfc3339::new(at, offset).as_str(),
                chrono_text(at, offset),
                "{at:?} with {offset:?}"
            );
        }
        // Through serde, exactly as chrono's own Serialize writes it.
        #[derive(serde::Serialize)]
        struct Ours(#[serde(serialize_with = "serialize")] DateTime<Utc>);
        assert_eq!(
            serde_json::to_string(&Ours(at)).unwrap(),
            serde_json::to_string(&at).unwrap()
        );
    }

    /// Every precision AutoSi picks, every field at its edges, and the
    /// times handed to chrono, all exactly as chrono writes them.
    #[test]
    fn writes_exactly_what_chrono_writes() {
        let base = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        for nanos in [
            0,
            1,
            9,
            1_000,
            120_000,
            123_456_000,
            100_000_000,
            123_000_000,
            999_999_999,
            5_000_000,
            50,
            123_456_789,
        ] {
            both(base + chrono::Duration::nanoseconds(nanos));
        }
        for (y, mo, d, h, mi, s) in [
            (0, 1, 1, 0, 0, 0),
            (1, 1, 1, 0, 0, 0),
            (999, 12, 31, 23, 59, 59),
            (1970, 1, 1, 0, 0, 0),
            (2000, 2, 29, 12, 30, 45),
            (9999, 12, 31, 23, 59, 59),
            (10000, 1, 1, 0, 0, 0),
            (-1, 6, 15, 1, 2, 3),
        ] {
            both(Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap());
        }
        // The extremes chrono can hold, at full precision: longer than any
        // text written here, so they come whole from chrono.
        for extreme in [chrono::NaiveDateTime::MIN, chrono::NaiveDateTime::MAX] {
            both(extreme.and_utc());
        }
        let earliest_leap = chrono::NaiveDate::MIN
            .and_hms_nano_opt(23, 59, 59, 1_999_999_999)
            .unwrap()
            .and_utc();
        both(earliest_leap);
        // A leap second (nanoseconds past a billion).
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        both(leap);
        // A spread of ordinary times, every precision among them.
        let mut at = base;
        for step in 0..20_000i64 {
            at += chrono::Duration::nanoseconds(step * 7_919_933 + step % 7 * 1000);
            both(at);
        }
    }
}
