//! The test source's "prompt encoding": a SHA-256 of the prompt and negative prompt.

use sha2::{Digest, Sha256};

/// What `encode_prompt` produces: the prompt digest and the hue derived from it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PromptEncoding {
    pub(crate) digest: [u8; 32],
    /// Base hue of the colour bars, in `[0, 1)`.
    pub(crate) hue: f32,
}

impl PromptEncoding {
    /// Hashes `prompt + "\0" + negative_prompt`.
    pub(crate) fn new(prompt: &str, negative_prompt: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(prompt.as_bytes());
        hasher.update([0u8]);
        hasher.update(negative_prompt.as_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        let hue = f32::from(u16::from_be_bytes([digest[4], digest[5]])) / 65536.0;
        Self { digest, hue }
    }

    /// The first 4 digest bytes as 8 upper-case hex digits, as stamped on every frame.
    pub(crate) fn label(&self) -> String {
        self.digest[..4]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    /// 64 digest bits to mix into the procedural target's seed.
    pub(crate) fn seed_bits(&self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.digest[8..16]);
        u64::from_le_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_of_prompt_nul_negative() {
        let enc = PromptEncoding::new("abc", "");
        // SHA-256("abc\0")
        let expected: [u8; 32] = Sha256::digest(b"abc\0").into();
        assert_eq!(enc.digest, expected);
        assert_eq!(enc.label().len(), 8);
        assert!(enc
            .label()
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    }

    #[test]
    fn negative_prompt_and_separator_matter() {
        let a = PromptEncoding::new("ab", "c");
        let b = PromptEncoding::new("a", "bc");
        let c = PromptEncoding::new("ab", "");
        assert_ne!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
        assert!((0.0..1.0).contains(&a.hue));
    }
}
