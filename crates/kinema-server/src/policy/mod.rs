//! The usage policy (docs/api.md, "Usage policy"; CONTRACT §5): prompts and negative
//! prompts are checked before anything is held, against the operator's policy file
//! (categories of terms and patterns, in any language, matched on a normal form that
//! undoes the usual evasions) and then, optionally, an external moderation endpoint.
//! Every decision goes to the audit log; repeated refusals suspend the account.
//!
//! - `normalise`: the normal form.
//! - `matcher`: terms and patterns against it.
//! - `file`: the policy file.
//! - `external`: the moderation endpoint.
//! - `gate`: CreateJob's check, its records and its errors.

mod external;
mod file;
pub(crate) mod gate;
mod matcher;
mod normalise;

use std::path::Path;

use sha2::{Digest, Sha256};

pub use external::{ExternalModeration, ModerationError, ModerationRequest, ModerationVerdict};
pub use file::{FailMode, Suspension};
pub use matcher::Hit;
pub use normalise::normalise;

/// The file name of the policy file a data dir may hold.
pub const POLICY_FILE: &str = "policy.toml";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("usage policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("usage policy {origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("usage policy {origin} line {line}, {field}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        field: String,
        message: String,
    },
    #[error("usage policy {origin}: {message}")]
    Build { origin: String, message: String },
}

/// A field a prompt is checked in.
pub const FIELDS: [&str; 2] = ["prompt", "negative_prompt"];

/// A local rule a request broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `prompt` or `negative_prompt`.
    pub field: &'static str,
    pub hit: Hit,
}

/// The policy the server runs with.
#[derive(Debug, Clone)]
pub struct UsagePolicy {
    /// Where it came from (a path), or `none`.
    pub origin: String,
    /// SHA-256 of the file, 12 hex digits ('' without one): what a rule's index in
    /// the audit log refers to.
    pub version: String,
    pub categories: Vec<String>,
    matcher: matcher::Matcher,
    pub suspension: Suspension,
    pub external: Option<ExternalModeration>,
}

impl UsagePolicy {
    /// No policy file: no categories, nothing refused, nothing recorded.
    pub fn none() -> Self {
        UsagePolicy {
            origin: "none".into(),
            version: String::new(),
            categories: Vec::new(),
            matcher: matcher::Matcher::new(&[]).expect("an empty matcher builds"),
            suspension: Suspension::default(),
            external: None,
        }
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// A policy from a file's text; `origin` names it in errors and logs.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let spec = file::parse(text, origin)?;
        let build = |message: String| PolicyError::Build {
            origin: origin.to_string(),
            message,
        };
        let matcher = matcher::Matcher::new(&spec.categories).map_err(|e| build(e.to_string()))?;
        let external = spec
            .external
            .as_ref()
            .map(ExternalModeration::new)
            .transpose()
            .map_err(|e| build(format!("external: {e}")))?;
        Ok(UsagePolicy {
            origin: origin.to_string(),
            version: hex::encode(&Sha256::digest(text.as_bytes())[..6]),
            categories: spec.categories.iter().map(|c| c.name.clone()).collect(),
            matcher,
            suspension: spec.suspension,
            external,
        })
    }

    /// Whether CreateJob checks anything (a file with rules or an endpoint).
    pub fn is_active(&self) -> bool {
        !self.matcher.is_empty() || self.external.is_some()
    }

    /// The first local rule the prompt, then the negative prompt, breaks.
    pub fn check_local(&self, prompt: &str, negative_prompt: &str) -> Option<Violation> {
        if self.matcher.is_empty() {
            return None;
        }
        FIELDS
            .into_iter()
            .zip([prompt, negative_prompt])
            .filter(|(_, text)| !text.is_empty())
            .find_map(|(field, text)| {
                self.matcher
                    .find(&normalise::normalise_with_joints(text))
                    .map(|hit| Violation { field, hit })
            })
    }
}

#[cfg(test)]
mod tests;
