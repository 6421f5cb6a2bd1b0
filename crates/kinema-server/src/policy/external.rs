//! The optional external moderation endpoint (docs/api.md, "Usage policy"): an HTTP
//! POST of the request's text as JSON, answered with whether it is flagged and in
//! which category. It is asked only once the local policy has passed the request.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::file::{ExternalSpec, FailMode};

/// What the endpoint is sent.
#[derive(Debug, Serialize)]
pub struct ModerationRequest<'a> {
    pub prompt: &'a str,
    pub negative_prompt: &'a str,
    pub account_id: &'a str,
    pub model: &'a str,
}

/// What it answers. `field` (`prompt` or `negative_prompt`) is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ModerationVerdict {
    pub flagged: bool,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub field: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("unreachable: {0}")]
    Transport(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer over {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("unreadable answer: {0}")]
    Unreadable(String),
}

/// The most of an answer read: a verdict is a few dozen bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The longest category name taken from an answer (longer ones are cut).
const MAX_CATEGORY_CHARS: usize = 64;

#[derive(Debug, Clone)]
pub struct ExternalModeration {
    pub url: String,
    pub timeout: Duration,
    pub fail: FailMode,
    client: reqwest::Client,
}

impl ExternalModeration {
    pub fn new(spec: &ExternalSpec) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(spec.timeout)
            .connect_timeout(spec.timeout)
            // The endpoint is the operator's: follow nowhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(ExternalModeration {
            url: spec.url.clone(),
            timeout: spec.timeout,
            fail: spec.fail,
            client,
        })
    }

    /// Asks the endpoint; every failure (timeout, transport, non-2xx status, an
    /// answer too large or unreadable) is an error the caller's fail mode decides.
    pub async fn check(
        &self,
        request: &ModerationRequest<'_>,
    ) -> Result<ModerationVerdict, ModerationError> {
        let timeout = self.timeout;
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                ModerationError::Timeout(timeout)
            } else {
                ModerationError::Transport(e.to_string())
            }
        };
        // The client's timeout covers the whole exchange; this one also bounds a
        // body that trickles in.
        let exchange = async {
            let mut response = self
                .client
                .post(&self.url)
                .json(request)
                .send()
                .await
                .map_err(transport)?;
            if !response.status().is_success() {
                return Err(ModerationError::Status(response.status().as_u16()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(ModerationError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            let mut verdict: ModerationVerdict = serde_json::from_slice(&body)
                .map_err(|e| ModerationError::Unreadable(e.to_string()))?;
            verdict.category = clean_category(&verdict.category);
            if !matches!(verdict.field.as_str(), "prompt" | "negative_prompt") {
                verdict.field.clear();
            }
            Ok(verdict)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ModerationError::Timeout(timeout))?
    }
}

/// A category as an answer names it, kept to printable characters and a bounded
/// length (it goes into error metadata and the audit log); `unspecified` if empty.
fn clean_category(raw: &str) -> String {
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_CATEGORY_CHARS)
        .collect();
    if cleaned.is_empty() {
        "unspecified".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_from_answers_are_bounded_and_printable() {
        assert_eq!(clean_category(" hate\n"), "hate");
        assert_eq!(clean_category(""), "unspecified");
        assert_eq!(clean_category(&"x".repeat(500)).len(), MAX_CATEGORY_CHARS);
    }
}
