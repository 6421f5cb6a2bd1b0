//! One `Range: bytes=…` request header, as RFC 9110 reads it for a single range.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

/// `Ok(None)`: serve the whole artifact (no usable single range: several ranges or
/// another unit, which a server may ignore); `Err`: a range outside the artifact (416).
pub fn parse_range(value: &str, total: u64) -> Result<Option<ByteRange>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        // bytes=START-END
        (Ok(start), Ok(end)) if start <= end => ByteRange {
            start,
            end: end.min(total.saturating_sub(1)),
        },
        // bytes=START-
        (Ok(start), Err(_)) if last.is_empty() => ByteRange {
            start,
            end: total.saturating_sub(1),
        },
        // bytes=-SUFFIX: the last SUFFIX bytes.
        (Err(_), Ok(suffix)) if first.is_empty() && suffix > 0 => ByteRange {
            start: total.saturating_sub(suffix),
            end: total.saturating_sub(1),
        },
        _ => return Ok(None),
    };
    if total == 0 || range.start >= total {
        return Err(());
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Result<Option<ByteRange>, ()> {
        Ok(Some(ByteRange { start, end }))
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse_range("bytes=0-", 100), r(0, 99));
        assert_eq!(parse_range("bytes=10-19", 100), r(10, 19));
        assert_eq!(parse_range("bytes=90-500", 100), r(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), r(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), r(0, 99));
    }

    #[test]
    fn outside_the_artifact_is_unsatisfiable() {
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=0-", 0), Err(()));
    }

    #[test]
    fn what_is_not_one_byte_range_serves_everything() {
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=5-2", 100), Ok(None));
        assert_eq!(parse_range("bytes=x-", 100), Ok(None));
    }
}
