//! Bounds on what a request may carry (docs/api.md, "Request limits"), so one
//! request cannot make every later listing, watch or error huge: job metadata,
//! short texts such as names and memos, and how much of a caller's own input an
//! error message repeats back.

use std::collections::BTreeMap;

use kinema_engine::FieldViolation;

use crate::error::ApiError;

/// Entries one job's `metadata` may hold.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// Bytes (UTF-8) of one metadata key.
pub const MAX_METADATA_KEY_BYTES: usize = 128;
/// Bytes (UTF-8) of one metadata value.
pub const MAX_METADATA_VALUE_BYTES: usize = 2048;
/// Bytes of every key and value of one job's metadata together.
pub const MAX_METADATA_TOTAL_BYTES: usize = 16 * 1024;
/// Characters of a name, memo or reason (accounts, keys, grants, suspensions).
pub const MAX_TEXT_CHARS: usize = 256;
/// Characters of a caller's own input an error message repeats.
pub const ECHO_CHARS: usize = 64;

/// The metadata's violations of the bounds above (empty: within them).
pub fn metadata_violations(metadata: &BTreeMap<String, String>) -> Vec<FieldViolation> {
    let mut bad = Vec::new();
    if metadata.len() > MAX_METADATA_ENTRIES {
        bad.push(FieldViolation {
            field: "metadata",
            description: format!("{} entries; at most {MAX_METADATA_ENTRIES}", metadata.len()),
        });
    }
    let mut total = 0usize;
    for (key, value) in metadata {
        total += key.len() + value.len();
        if key.is_empty() {
            bad.push(FieldViolation {
                field: "metadata",
                description: "keys must not be empty".into(),
            });
        }
        if key.len() > MAX_METADATA_KEY_BYTES {
            bad.push(FieldViolation {
                field: "metadata",
                description: format!(
                    "key {} is {} bytes; at most {MAX_METADATA_KEY_BYTES}",
                    echo(key),
                    key.len()
                ),
            });
        }
        if value.len() > MAX_METADATA_VALUE_BYTES {
            bad.push(FieldViolation {
                field: "metadata",
                description: format!(
                    "the value of {} is {} bytes; at most {MAX_METADATA_VALUE_BYTES}",
                    echo(key),
                    value.len()
                ),
            });
        }
        if key.contains('\0') || value.contains('\0') {
            bad.push(FieldViolation {
                field: "metadata",
                description: format!("{} contains a NUL character", echo(key)),
            });
        }
    }
    if total > MAX_METADATA_TOTAL_BYTES {
        bad.push(FieldViolation {
            field: "metadata",
            description: format!(
                "{total} bytes of keys and values; at most {MAX_METADATA_TOTAL_BYTES}"
            ),
        });
    }
    bad
}

/// A short text field (`max` characters at most, no NUL).
pub fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if chars > max {
        return Err(ApiError::field(
            field,
            format!("{chars} characters; at most {max}"),
        ));
    }
    if value.contains('\0') {
        return Err(ApiError::field(field, "must not contain NUL characters"));
    }
    Ok(())
}

/// `value` quoted for an error message, cut to its first [`ECHO_CHARS`] characters
/// (with how long it was) so no input makes an error outgrow gRPC's header limit.
pub fn echo(value: &str) -> String {
    let chars = value.chars().count();
    if chars <= ECHO_CHARS {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(ECHO_CHARS).collect();
        format!("{head:?}… ({chars} characters)")
    }
}

/// `text` cut to at most `max_bytes` bytes on a character boundary, marked as cut.
pub fn clamp(text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(entries: &[(&str, String)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn metadata_within_every_bound_passes() {
        let mut m = BTreeMap::new();
        for i in 0..MAX_METADATA_ENTRIES {
            m.insert(format!("k{i}"), "v".repeat(400));
        }
        assert!(metadata_violations(&m).is_empty());
    }

    #[test]
    fn each_metadata_bound_is_its_own_violation() {
        let too_many: BTreeMap<String, String> = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(metadata_violations(&too_many)[0]
            .description
            .contains("33 entries"));

        let long_key = "k".repeat(MAX_METADATA_KEY_BYTES + 1);
        let v = metadata_violations(&metadata(&[(&long_key, "x".into())]));
        assert_eq!(v.len(), 1);
        assert!(v[0].description.contains("129 bytes"), "{v:?}");
        // The key is echoed cut short, not whole.
        assert!(v[0].description.len() < 200, "{v:?}");

        let big = "x".repeat(MAX_METADATA_VALUE_BYTES + 1);
        let v = metadata_violations(&metadata(&[("note", big)]));
        assert_eq!(v.len(), 1);
        assert!(v[0].description.contains("\"note\""), "{v:?}");

        // Within each entry's bound, over the total.
        let entries: Vec<(String, String)> = (0..9)
            .map(|i| (format!("k{i}"), "y".repeat(MAX_METADATA_VALUE_BYTES)))
            .collect();
        let m: BTreeMap<String, String> = entries.into_iter().collect();
        let v = metadata_violations(&m);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].description.contains("bytes of keys and values"));

        // A 3.5 MB value, as once accepted, is refused.
        let v = metadata_violations(&metadata(&[("blob", "z".repeat(3_500_000))]));
        assert!(v.iter().any(|v| v.description.contains("3500000 bytes")));

        assert_eq!(metadata_violations(&metadata(&[("", "x".into())])).len(), 1);
        assert_eq!(
            metadata_violations(&metadata(&[("a", "b\0".into())])).len(),
            1
        );
    }

    #[test]
    fn echoes_are_cut_to_a_bounded_length() {
        assert_eq!(echo("wan-tiny"), "\"wan-tiny\"");
        let long = "m".repeat(10_000);
        let e = echo(&long);
        assert!(e.len() < 100, "{e}");
        assert!(e.ends_with("(10000 characters)"), "{e}");
        // Characters, not bytes: a multi-byte name is cut on a boundary.
        let wide = "视".repeat(100);
        assert!(echo(&wide).starts_with(&format!("\"{}", "视".repeat(64))));
    }

    #[test]
    fn clamp_cuts_on_a_character_boundary() {
        assert_eq!(clamp("short".into(), 10), "short");
        let cut = clamp("视频".repeat(100), 50);
        assert!(cut.len() <= 50, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn short_texts_are_bounded_in_characters() {
        assert!(check_text("name", &"a".repeat(MAX_TEXT_CHARS), MAX_TEXT_CHARS).is_ok());
        assert!(check_text("name", &"a".repeat(MAX_TEXT_CHARS + 1), MAX_TEXT_CHARS).is_err());
        assert!(check_text("name", &"视".repeat(MAX_TEXT_CHARS), MAX_TEXT_CHARS).is_ok());
        assert!(check_text("name", "a\0b", MAX_TEXT_CHARS).is_err());
    }
}
