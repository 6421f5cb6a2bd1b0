//! The policy file (TOML, docs/operations.md, "Usage policy"): categories of
//! prohibited content, each with literal terms and regular expressions, the
//! suspension rule and an optional external moderation endpoint. Read once at start;
//! anything wrong with it fails the start with the line and field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::PolicyError;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    categories: BTreeMap<String, RawCategory>,
    suspension: Option<RawSuspension>,
    external: Option<RawExternal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    #[serde(default)]
    terms: Vec<Spanned<String>>,
    #[serde(default)]
    patterns: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuspension {
    violations: Option<u32>,
    window: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExternal {
    url: Spanned<String>,
    timeout: Option<Spanned<String>>,
    fail: Option<Spanned<String>>,
}

/// One category, checked: its terms and patterns in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategorySpec {
    pub name: String,
    pub terms: Vec<String>,
    pub patterns: Vec<String>,
}

/// When refusals suspend an account (0 violations: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspension {
    pub violations: u32,
    pub window: Duration,
}

/// The default: five refusals within a day.
impl Default for Suspension {
    fn default() -> Self {
        Suspension {
            violations: 5,
            window: Duration::from_secs(24 * 3600),
        }
    }
}

/// What a failing external endpoint (a timeout, an error, an answer it cannot read)
/// does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// The request goes ahead, checked by the local policy only.
    Open,
    /// The request is refused with UNAVAILABLE / MODERATION_UNAVAILABLE.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalSpec {
    pub url: String,
    pub timeout: Duration,
    pub fail: FailMode,
}

pub const DEFAULT_EXTERNAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A policy file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub categories: Vec<CategorySpec>,
    pub suspension: Suspension,
    pub external: Option<ExternalSpec>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses and checks a policy file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<PolicySpec, PolicyError> {
    let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Syntax {
        origin: origin.to_string(),
        message: e.to_string(),
    })?;
    let invalid = |at: usize, field: String, message: String| PolicyError::Invalid {
        origin: origin.to_string(),
        line: line_of(text, at),
        field,
        message,
    };
    let mut categories = Vec::with_capacity(raw.categories.len());
    for (name, raw_category) in raw.categories {
        if !valid_category_name(&name) {
            return Err(PolicyError::Invalid {
                origin: origin.to_string(),
                line: line_of(text, text.find(&name).unwrap_or(0)),
                field: format!("categories.{name}"),
                message: "a category's name is 1 to 64 of a-z, 0-9, '-' and '_'".into(),
            });
        }
        let mut terms = Vec::with_capacity(raw_category.terms.len());
        for (i, term) in raw_category.terms.iter().enumerate() {
            if super::normalise::normalise(term.get_ref()).is_empty() {
                return Err(invalid(
                    term.span().start,
                    format!("categories.{name}.terms[{i}]"),
                    "the term has no letters once normalised".into(),
                ));
            }
            terms.push(term.get_ref().clone());
        }
        let mut patterns = Vec::with_capacity(raw_category.patterns.len());
        for (i, pattern) in raw_category.patterns.iter().enumerate() {
            if let Err(e) = super::matcher::compile_pattern(pattern.get_ref()) {
                return Err(invalid(
                    pattern.span().start,
                    format!("categories.{name}.patterns[{i}]"),
                    format!("not a regular expression: {e}"),
                ));
            }
            patterns.push(pattern.get_ref().clone());
        }
        categories.push(CategorySpec {
            name,
            terms,
            patterns,
        });
    }
    let mut suspension = Suspension::default();
    if let Some(raw) = raw.suspension {
        if let Some(n) = raw.violations {
            suspension.violations = n;
        }
        if let Some(window) = raw.window {
            suspension.window = duration(window.get_ref())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    invalid(
                        window.span().start,
                        "suspension.window".into(),
                        format!(
                            "{:?} is not a duration such as \"24h\" or \"30m\"",
                            window.get_ref()
                        ),
                    )
                })?;
        }
    }
    let external = match raw.external {
        None => None,
        Some(raw) => {
            let url = raw.url.get_ref();
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || reqwest::Url::parse(url).is_err()
            {
                return Err(invalid(
                    raw.url.span().start,
                    "external.url".into(),
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            let timeout = match raw.timeout {
                None => DEFAULT_EXTERNAL_TIMEOUT,
                Some(t) => duration(t.get_ref())
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        invalid(
                            t.span().start,
                            "external.timeout".into(),
                            format!("{:?} is not a duration such as \"2s\"", t.get_ref()),
                        )
                    })?,
            };
            let fail = match raw.fail.as_ref().map(|f| f.get_ref().as_str()) {
                None | Some("closed") => FailMode::Closed,
                Some("open") => FailMode::Open,
                Some(other) => {
                    let at = raw.fail.as_ref().map_or(0, |f| f.span().start);
                    return Err(invalid(
                        at,
                        "external.fail".into(),
                        format!("{other:?}: must be \"open\" or \"closed\""),
                    ));
                }
            };
            Some(ExternalSpec {
                url: url.clone(),
                timeout,
                fail,
            })
        }
    };
    Ok(PolicySpec {
        categories,
        suspension,
        external,
    })
}

fn valid_category_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[suspension]
violations = 3
window = "12h"

[external]
url = "http://127.0.0.1:9/moderate"
timeout = "500ms"
fail = "open"

[categories.violence]
terms = ["kill", "杀人"]
patterns = ['\bk+i+l+l+\b']

[categories.hate]
terms = ["slur"]
"#;

    #[test]
    fn a_good_file_is_read_whole() {
        let spec = parse(GOOD, "policy.toml").unwrap();
        let names: Vec<&str> = spec.categories.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["hate", "violence"]);
        assert_eq!(spec.categories[1].terms, ["kill", "杀人"]);
        assert_eq!(spec.categories[1].patterns, [r"\bk+i+l+l+\b"]);
        assert_eq!(
            spec.suspension,
            Suspension {
                violations: 3,
                window: Duration::from_secs(12 * 3600)
            }
        );
        let external = spec.external.unwrap();
        assert_eq!(external.timeout, Duration::from_millis(500));
        assert_eq!(external.fail, FailMode::Open);
    }

    #[test]
    fn defaults_without_suspension_or_external() {
        let spec = parse("[categories.x]\nterms = [\"a b\"]\n", "f").unwrap();
        assert_eq!(spec.suspension, Suspension::default());
        assert!(spec.external.is_none());
        assert!(parse("", "f").unwrap().categories.is_empty());
    }

    fn error(text: &str) -> String {
        parse(text, "policy.toml").unwrap_err().to_string()
    }

    #[test]
    fn mistakes_name_the_line_and_field() {
        let e = error("[categories.violence]\nterms = [\"kill\"]\npatterns = [\"(unclosed\"]\n");
        assert!(
            e.contains("policy.toml line 3") && e.contains("categories.violence.patterns[0]"),
            "{e}"
        );
        let e = error("[categories.v]\nterms = [\"ok\", \"  ...  \"]\n");
        assert!(
            e.contains("line 2") && e.contains("categories.v.terms[1]"),
            "{e}"
        );
        let e = error("\n[suspension]\nwindow = \"soon\"\n");
        assert!(
            e.contains("line 3") && e.contains("suspension.window"),
            "{e}"
        );
        let e = error("[external]\nurl = \"ftp://x\"\n");
        assert!(e.contains("line 2") && e.contains("external.url"), "{e}");
        let e = error("[external]\nurl = \"http://x\"\nfail = \"maybe\"\n");
        assert!(e.contains("line 3") && e.contains("external.fail"), "{e}");
        let e = error("[categories.Violence]\nterms = [\"x\"]\n");
        assert!(e.contains("categories.Violence"), "{e}");
        // Unknown fields and wrong types: the TOML reader's own line and column.
        let e = error("[categories.v]\nterm = [\"x\"]\n");
        assert!(e.contains("line 2") && e.contains("term"), "{e}");
        let e = error("[suspension]\nviolations = \"five\"\n");
        assert!(e.contains("line 2"), "{e}");
    }
}
