//! Callback signatures (docs/api.md, "Callbacks"): HMAC-SHA256 over
//! `timestamp + "." + body` with each signing secret, sent as
//! `Kinema-Signature: v1=<hex>[,v1=<hex>]` (two while an account's rotated-out
//! secret still overlaps the new one; a receiver accepts any that matches).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The scheme's version, the prefix of each signature.
pub const SCHEME: &str = "v1";

/// The hex HMAC-SHA256 of `timestamp.body` under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The `Kinema-Signature` header's value, one signature per secret.
pub fn header(secrets: &[Vec<u8>], timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| format!("{SCHEME}={}", sign(s, timestamp, body)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A receiver's check, as docs/api.md shows it: some `v1=` signature matches and the
/// timestamp is within `tolerance_s` of `now_s`. (The server never verifies; the
/// tests and the documentation's snippet do.)
pub fn verify(
    secret: &[u8],
    header_value: &str,
    timestamp: i64,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> bool {
    if (now_s - timestamp).abs() > tolerance_s {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    header_value.split(',').any(|part| {
        part.trim()
            .strip_prefix("v1=")
            .and_then(|h| hex::decode(h).ok())
            // verify_slice compares in constant time.
            .is_some_and(|sig| mac.clone().verify_slice(&sig).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_known_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Ours signs `timestamp.body`.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(
            sign(b"whsec_test", 1_700_000_000, b"{\"a\":1}"),
            hex::encode(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn a_receiver_accepts_any_current_secret_within_the_window() {
        let body = br#"{"id":"evt_1"}"#;
        let h = header(&[b"new".to_vec(), b"old".to_vec()], 1000, body);
        assert_eq!(h.matches("v1=").count(), 2);
        assert!(verify(b"new", &h, 1000, body, 1000, 300));
        assert!(verify(b"old", &h, 1000, body, 1200, 300));
        assert!(!verify(b"other", &h, 1000, body, 1000, 300));
        assert!(!verify(b"new", &h, 1000, br#"{"id":"evt_2"}"#, 1000, 300));
        assert!(
            !verify(b"new", &h, 1001, body, 1001, 300),
            "timestamp is signed"
        );
        assert!(
            !verify(b"new", &h, 1000, body, 1301, 300),
            "outside the replay window"
        );
    }
}
