//! Prompt cleaning and tokenisation as `WanPipeline._get_t5_prompt_embeds` does:
//! `ftfy.fix_text`, HTML unescape (twice), whitespace collapse, then the umT5
//! tokenizer with truncation and padding to `max_sequence_length` (512).

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{Result, WanError};

/// The Wan pipeline's sequence length for prompts.
pub const MAX_SEQUENCE_LENGTH: usize = 512;

/// The part of `ftfy.fix_text` that changes ordinary prompts: curly quotes become
/// straight ones, full-width ASCII (U+FF01..U+FF5E) and the ideographic space become
/// their ASCII forms. (Mojibake repair is out of scope; the tokenizer's NFKC
/// normaliser covers ligatures and other compatibility forms.)
fn ftfy_subset(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{02BC}' | '\u{2018}'..='\u{201B}' => '\'',
            '\u{201C}'..='\u{201F}' => '"',
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .collect()
}

fn named_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{A0}',
        "copy" => '\u{A9}',
        "reg" => '\u{AE}',
        "hellip" => '\u{2026}',
        "mdash" => '\u{2014}',
        "ndash" => '\u{2013}',
        "lsquo" => '\u{2018}',
        "rsquo" => '\u{2019}',
        "ldquo" => '\u{201C}',
        "rdquo" => '\u{201D}',
        _ => return None,
    })
}

/// `html.unescape` for numeric references and the common named ones (with `;`).
pub fn html_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let decoded = tail[1..]
            .find(';')
            .filter(|&end| end <= 32)
            .and_then(|end| {
                let body = &tail[1..1 + end];
                let c = if let Some(num) = body.strip_prefix('#') {
                    let v = if let Some(hex) =
                        num.strip_prefix('x').or_else(|| num.strip_prefix('X'))
                    {
                        u32::from_str_radix(hex, 16).ok()
                    } else {
                        num.parse::<u32>().ok()
                    };
                    v.map(|v| char::from_u32(v).unwrap_or('\u{FFFD}'))
                } else {
                    named_entity(body)
                };
                c.map(|c| (c, end + 2))
            });
        match decoded {
            Some((c, used)) => {
                out.push(c);
                rest = &tail[used..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

/// `prompt_clean` of the reference pipeline.
pub fn prompt_clean(text: &str) -> String {
    let basic = html_unescape(&html_unescape(&ftfy_subset(text)));
    let basic = basic.trim_matches(is_py_whitespace);
    basic
        .split(is_py_whitespace)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Token ids and mask for one prompt, padded to a fixed length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
    /// Number of real tokens (the rest is padding).
    pub len: usize,
}

#[derive(Debug, Clone)]
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    pad_id: u32,
    max_len: usize,
    path: PathBuf,
}

impl PromptTokenizer {
    /// Loads `tokenizer.json` from a tokenizer folder (or the file itself).
    pub fn load(path: &Path, max_len: usize) -> Result<Self> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let err = |message: String| WanError::Tokenizer {
            path: file.clone(),
            message,
        };
        if max_len == 0 {
            return Err(err("max length must be positive".into()));
        }
        let mut tokenizer = Tokenizer::from_file(&file).map_err(|e| err(e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| err(e.to_string()))?;
        tokenizer.with_padding(None);
        let pad_id = tokenizer.token_to_id("<pad>").unwrap_or(0);
        Ok(Self {
            tokenizer,
            pad_id,
            max_len,
            path: file,
        })
    }

    /// Cleans and tokenises `prompt` (with `</s>`), truncated and padded to the max length.
    pub fn encode(&self, prompt: &str) -> Result<Tokens> {
        let cleaned = prompt_clean(prompt);
        let enc = self
            .tokenizer
            .encode(cleaned, true)
            .map_err(|e| WanError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        let mut ids = enc.get_ids().to_vec();
        ids.truncate(self.max_len);
        let len = ids.len();
        ids.resize(self.max_len, self.pad_id);
        let mut mask = vec![1u32; len];
        mask.resize(self.max_len, 0);
        Ok(Tokens { ids, mask, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_the_reference() {
        assert_eq!(
            prompt_clean("A  cat “grass” &amp;amp; dances,\n ok。 "),
            "A cat \"grass\" & dances, ok。"
        );
        assert_eq!(prompt_clean("色调，过曝\u{3000}静态"), "色调,过曝 静态");
        assert_eq!(html_unescape("&#65;&#x42;&bogus; & x"), "AB&bogus; & x");
    }
}
