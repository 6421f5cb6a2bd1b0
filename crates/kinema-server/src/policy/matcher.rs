//! Finds the first rule of a policy that a normalised text breaks (docs/api.md,
//! "Usage policy"). Terms, normalised like the text at load, are found with one
//! Aho-Corasick automaton; a term whose first (last) character is a letter or digit
//! of a spaced script must start (end) a word of the text, so `ass` is not found in
//! `class` nor `kill` in `skillful`; a term's edge in a script written without
//! spaces (Chinese, Japanese) may fall anywhere. Patterns are regular expressions
//! over the normalised text, as written.

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Regex, RegexSet};

use super::file::CategorySpec;
use super::normalise::{is_word_char, normalise, Normalised};

/// Which rule a text broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub category: String,
    /// `term:CATEGORY:N` or `pattern:CATEGORY:N`, N the rule's index in its list.
    pub rule: String,
}

#[derive(Debug, Clone)]
struct TermRule {
    category: usize,
    index: usize,
    word_start: bool,
    word_end: bool,
}

#[derive(Debug, Clone)]
struct PatternRule {
    category: usize,
    index: usize,
}

#[derive(Debug, Clone)]
pub struct Matcher {
    categories: Vec<String>,
    terms: Option<AhoCorasick>,
    term_rules: Vec<TermRule>,
    /// Terms of several words with their spaces taken out, found only across the
    /// joints of spelled-out letters (`p.i.p.e.b.o.m.b` is `pipebomb`).
    joined_terms: Option<AhoCorasick>,
    joined_rules: Vec<TermRule>,
    patterns: Option<RegexSet>,
    pattern_rules: Vec<PatternRule>,
}

/// Patterns are compiled with a size limit: a policy file cannot make the server
/// build a huge automaton.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

pub fn compile_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
}

#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    #[error("terms: {0}")]
    Terms(#[from] aho_corasick::BuildError),
    #[error("patterns: {0}")]
    Patterns(#[from] regex::Error),
}

impl Matcher {
    pub fn new(categories: &[CategorySpec]) -> Result<Self, MatcherError> {
        let mut needles = Vec::new();
        let mut term_rules = Vec::new();
        let mut joined_needles = Vec::new();
        let mut joined_rules = Vec::new();
        let mut patterns = Vec::new();
        let mut pattern_rules = Vec::new();
        for (c, category) in categories.iter().enumerate() {
            for (index, term) in category.terms.iter().enumerate() {
                let needle = normalise(term);
                let (Some(first), Some(last)) = (needle.chars().next(), needle.chars().last())
                else {
                    continue;
                };
                let rule = TermRule {
                    category: c,
                    index,
                    word_start: is_word_char(first),
                    word_end: is_word_char(last),
                };
                if needle.contains(' ') {
                    joined_needles.push(needle.replace(' ', ""));
                    joined_rules.push(rule.clone());
                }
                term_rules.push(rule);
                needles.push(needle);
            }
            for (index, pattern) in category.patterns.iter().enumerate() {
                patterns.push(pattern.clone());
                pattern_rules.push(PatternRule { category: c, index });
            }
        }
        let automaton = |needles: &[String]| -> Result<_, MatcherError> {
            Ok(match needles.is_empty() {
                true => None,
                false => Some(
                    AhoCorasick::builder()
                        .match_kind(MatchKind::Standard)
                        .build(needles)?,
                ),
            })
        };
        let terms = automaton(&needles)?;
        let joined_terms = automaton(&joined_needles)?;
        let patterns = match patterns.is_empty() {
            true => None,
            false => Some(
                regex::RegexSetBuilder::new(&patterns)
                    .size_limit(PATTERN_SIZE_LIMIT * patterns.len().max(1))
                    .build()?,
            ),
        };
        Ok(Matcher {
            categories: categories.iter().map(|c| c.name.clone()).collect(),
            terms,
            term_rules,
            joined_terms,
            joined_rules,
            patterns,
            pattern_rules,
        })
    }

    /// Rules to match at all.
    pub fn is_empty(&self) -> bool {
        self.terms.is_none() && self.patterns.is_none()
    }

    /// The first rule `normalised` (a text through
    /// [`super::normalise::normalise_with_joints`]) breaks: the earliest term found
    /// where it may stand, else the first pattern (in file order) that matches.
    pub fn find(&self, normalised: &Normalised) -> Option<Hit> {
        let found = Self::find_term(self.terms.as_ref(), &self.term_rules, normalised, false)
            .or_else(|| {
                let joined = self.joined_terms.as_ref();
                Self::find_term(joined, &self.joined_rules, normalised, true)
            });
        if let Some(rule) = found {
            return Some(self.hit(rule.category, "term", rule.index));
        }
        let matched = self.patterns.as_ref()?.matches(&normalised.text);
        let first = matched.iter().next()?;
        let rule = &self.pattern_rules[first];
        Some(self.hit(rule.category, "pattern", rule.index))
    }

    /// The earliest term found where it may stand: at word edges (or joints) where
    /// its own edges are letters or digits; with `across_joints`, only a match with a
    /// joint inside it.
    fn find_term<'r>(
        automaton: Option<&AhoCorasick>,
        rules: &'r [TermRule],
        normalised: &Normalised,
        across_joints: bool,
    ) -> Option<&'r TermRule> {
        let text = normalised.text.as_str();
        let edge = |neighbour: Option<char>, offset| {
            !neighbour.is_some_and(is_word_char) || normalised.is_joint(offset)
        };
        // Overlapping: a match that fails its word boundary must not hide one that
        // holds (`class ass`).
        automaton?.find_overlapping_iter(text).find_map(|m| {
            let rule = &rules[m.pattern().as_usize()];
            let starts_word =
                !rule.word_start || edge(text[..m.start()].chars().next_back(), m.start());
            let ends_word = !rule.word_end || edge(text[m.end()..].chars().next(), m.end());
            let joined = !across_joints || normalised.has_joint_within(m.start(), m.end());
            (starts_word && ends_word && joined).then_some(rule)
        })
    }

    fn hit(&self, category: usize, kind: &str, index: usize) -> Hit {
        let name = &self.categories[category];
        Hit {
            category: name.clone(),
            rule: format!("{kind}:{name}:{index}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> Matcher {
        Matcher::new(&[
            CategorySpec {
                name: "violence".into(),
                terms: vec!["kill".into(), "杀人".into(), "murder".into()],
                patterns: vec![r"\bbehead(ed|ing)?\b".into()],
            },
            CategorySpec {
                name: "insult".into(),
                terms: vec!["ass".into(), "bad word".into()],
                patterns: vec![],
            },
        ])
        .unwrap()
    }

    fn find(text: &str) -> Option<String> {
        matcher()
            .find(&super::super::normalise::normalise_with_joints(text))
            .map(|h| h.rule)
    }

    #[test]
    fn terms_match_whole_words_only() {
        assert_eq!(find("kill him").as_deref(), Some("term:violence:0"));
        assert_eq!(find("they KILL.").as_deref(), Some("term:violence:0"));
        for innocent in [
            "skillful",
            "killer whale",
            "class",
            "grass",
            "assistant",
            "bass guitar",
            "murderous",
        ] {
            assert_eq!(find(innocent), None, "{innocent}");
        }
        assert_eq!(find("a class ass").as_deref(), Some("term:insult:0"));
        // Spelled out, after a one-letter word or before a suffix.
        assert_eq!(find("a k i l l").as_deref(), Some("term:violence:0"));
        assert_eq!(find("I k.i.l.l").as_deref(), Some("term:violence:0"));
    }

    #[test]
    fn phrases_match_across_any_separator() {
        assert_eq!(find("bad-word").as_deref(), Some("term:insult:1"));
        assert_eq!(find("bad\n\tword").as_deref(), Some("term:insult:1"));
        assert_eq!(find("badword"), None);
        // Spelled out with no gap between the words.
        assert_eq!(find("b.a.d.w.o.r.d").as_deref(), Some("term:insult:1"));
        assert_eq!(find("a b a d w o r d").as_deref(), Some("term:insult:1"));
        assert_eq!(find("bad w o r d").as_deref(), Some("term:insult:1"));
    }

    #[test]
    fn unspaced_terms_match_anywhere() {
        assert_eq!(find("他想杀人").as_deref(), Some("term:violence:1"));
        assert_eq!(find("杀 人").as_deref(), Some("term:violence:1"));
        assert_eq!(find("杀手"), None);
    }

    #[test]
    fn patterns_match_the_normalised_text() {
        assert_eq!(find("B E H E A D").as_deref(), Some("pattern:violence:0"));
        assert_eq!(find("beheading").as_deref(), Some("pattern:violence:0"));
        assert_eq!(find("a bee headed north"), None);
    }

    #[test]
    fn an_empty_policy_matches_nothing() {
        let m = Matcher::new(&[]).unwrap();
        assert!(m.is_empty());
        assert_eq!(m.find(&Normalised::default()), None);
    }
}
