//! The usage policy's normal form of a text (docs/api.md, "Usage policy"): what the
//! policy's terms and patterns are matched against, and what its terms are turned into
//! at load, so that the usual ways of writing a word so that a filter misses it
//! (full-width forms, other scripts' lookalike letters, zero-width characters,
//! accents, spacing and punctuation between the letters) all come out the same.
//!
//! Step by step, each a function of its own:
//! 1. [`fold`]: NFKC (full-width and other compatibility forms to their plain
//!    letters) and full Unicode case folding.
//! 2. [`clean_char`]: characters that draw nothing (format characters such as
//!    zero-width spaces and joiners, bidi controls, variation selectors, fillers) and
//!    combining marks are dropped; letters of other scripts that look like ASCII
//!    letters (Cyrillic `і`, Greek `ο`, mathematical and enclosed forms) become those
//!    letters; ASCII stays as it is; Chinese, Japanese and Korean stay as they are.
//! 3. [`words`] and [`render`]: the text is cut into words at spaces and punctuation
//!    (an apostrophe joins); runs of single letters (`k i l l`, `k.i.l.l`) are joined
//!    into one word; characters of scripts written without spaces (Han, kana, Thai,
//!    ...) are joined with whatever separated them removed. Words are written out
//!    separated by one space; unspaced characters next to each other with none.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use unicode_script::{Script, UnicodeScript};

/// Steps 1–3: the normal form terms and patterns are matched against.
pub fn normalise(text: &str) -> String {
    normalise_with_joints(text).text
}

/// A normal form, and where in it runs of single letters were joined.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Normalised {
    pub text: String,
    /// Byte offsets between two letters that were separate one-letter words: a word
    /// may start or end there (`a k i l l` is `akill`, and `kill` is a word of it).
    joints: Vec<usize>,
}

impl Normalised {
    pub fn is_joint(&self, offset: usize) -> bool {
        self.joints.binary_search(&offset).is_ok()
    }

    /// Whether a joint lies strictly inside `start..end`.
    pub fn has_joint_within(&self, start: usize, end: usize) -> bool {
        let first = self.joints.partition_point(|&j| j <= start);
        self.joints.get(first).is_some_and(|&j| j < end)
    }
}

/// [`normalise`], keeping the joints.
pub fn normalise_with_joints(text: &str) -> Normalised {
    let folded = fold(text);
    let mut cleaned = String::with_capacity(folded.len());
    for c in folded.chars() {
        clean_char(c, &mut cleaned);
    }
    render(&words(&cleaned))
}

/// Step 1: NFKC, then full case folding (`ß` and `SS` fold alike, as `Σ`, `σ` and
/// `ς` do).
pub fn fold(text: &str) -> String {
    caseless::default_case_fold_str(&text.nfkc().collect::<String>())
}

/// Step 2 for one character, appending what it becomes to `out`.
pub fn clean_char(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
    } else if draws_nothing(c) || unicode_normalization::char::is_combining_mark(c) {
        // dropped
    } else if is_unspaced(c) || is_kept_script(c) {
        out.push(c);
    } else if c.is_whitespace() {
        out.push(' ');
    } else {
        match decancer::cure_char(c, lookalike_options()) {
            decancer::Translation::Character(t) => out.push(t.to_ascii_lowercase()),
            decancer::Translation::String(t) => {
                out.extend(t.chars().map(|t| t.to_ascii_lowercase()))
            }
            decancer::Translation::None => {}
        }
    }
}

/// Lookalikes of other scripts become ASCII; the scripts of Chinese, Japanese and
/// Korean text are left alone (decancer would read some of their characters as
/// Latin letters: `乇` as `e`).
fn lookalike_options() -> decancer::Options {
    decancer::Options::default()
        .retain_chinese()
        .retain_japanese()
        .retain_korean()
}

/// Characters with nothing to see: format characters (zero-width space, joiners,
/// word joiner, soft hyphen, bidi controls, BOM, tags), variation selectors and the
/// Hangul fillers.
pub fn draws_nothing(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
        || matches!(c,
            '\u{034F}' // combining grapheme joiner
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
            | '\u{180B}'..='\u{180F}' // Mongolian variation selectors
            | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}' // variation selectors
        )
}

/// Scripts written without spaces between words: a term of them is found anywhere,
/// and spaces or punctuation between their characters do not separate them.
pub fn is_unspaced(c: char) -> bool {
    matches!(
        c.script(),
        Script::Han
            | Script::Hiragana
            | Script::Katakana
            | Script::Thai
            | Script::Lao
            | Script::Khmer
            | Script::Myanmar
            | Script::Tibetan
            | Script::Yi
    ) || c == 'ー'
}

/// Korean (Hangul) keeps its letters; it is written with spaces, so it is matched by
/// words like Latin.
fn is_kept_script(c: char) -> bool {
    c.script() == Script::Hangul
}

/// A character that joins the letters on its two sides (`don't` is one word).
fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}' | '\u{2018}' | '\u{02BC}' | '`')
}

/// A character of a word of a spaced script: a letter or digit.
pub fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !is_unspaced(c)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A word of a spaced script.
    Word(String),
    /// Single letters that were separate words, joined into one.
    Spelled(Vec<char>),
    /// One character of a script written without spaces.
    Unspaced(char),
}

/// Step 3a: the words and unspaced characters of a cleaned text, runs of
/// one-letter words joined.
pub fn words(cleaned: &str) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, pieces: &mut Vec<Piece>| {
        if !word.is_empty() {
            pieces.push(Piece::Word(std::mem::take(word)));
        }
    };
    for c in cleaned.chars() {
        if is_unspaced(c) {
            flush(&mut word, &mut pieces);
            pieces.push(Piece::Unspaced(c));
        } else if c.is_alphanumeric() {
            word.push(c);
        } else if !is_apostrophe(c) {
            flush(&mut word, &mut pieces);
        }
    }
    flush(&mut word, &mut pieces);
    join_single_letters(pieces)
}

/// `k i l l` is `kill`: two or more consecutive one-character words become one.
fn join_single_letters(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    let mut run: Vec<char> = Vec::new();
    let end_run = |run: &mut Vec<char>, out: &mut Vec<Piece>| match run.len() {
        0 => {}
        1 => out.push(Piece::Word(std::mem::take(run).into_iter().collect())),
        _ => out.push(Piece::Spelled(std::mem::take(run))),
    };
    for piece in pieces {
        match piece {
            Piece::Word(w) if w.chars().count() == 1 => run.extend(w.chars()),
            other => {
                end_run(&mut run, &mut out);
                out.push(other);
            }
        }
    }
    end_run(&mut run, &mut out);
    out
}

/// Step 3b: words separated by one space, unspaced characters next to each other
/// with none (and from words by one).
pub fn render(pieces: &[Piece]) -> Normalised {
    let mut out = Normalised::default();
    let mut last_unspaced = None;
    for piece in pieces {
        let unspaced = matches!(piece, Piece::Unspaced(_));
        if let Some(last) = last_unspaced {
            if !(last && unspaced) {
                out.text.push(' ');
            }
        }
        match piece {
            Piece::Word(w) => out.text.push_str(w),
            Piece::Spelled(letters) => {
                for (i, c) in letters.iter().enumerate() {
                    if i > 0 {
                        out.joints.push(out.text.len());
                    }
                    out.text.push(*c);
                }
            }
            Piece::Unspaced(c) => out.text.push(*c),
        }
        last_unspaced = Some(unspaced);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleaned(s: &str) -> String {
        let mut out = String::new();
        for c in fold(s).chars() {
            clean_char(c, &mut out);
        }
        out
    }

    #[test]
    fn fold_maps_full_width_and_compatibility_forms_and_folds_case() {
        assert_eq!(fold("ｋｉｌｌ"), "kill");
        assert_eq!(fold("ＫＩＬＬ"), "kill");
        assert_eq!(fold("ﬁre"), "fire");
        assert_eq!(fold("ⓚ𝐢𝓵𝕝"), "kill");
        assert_eq!(fold("STRASSE"), fold("straße"));
        assert_eq!(fold("ΟΔΟΣ"), fold("οδος"));
        assert_eq!(fold("杀人"), "杀人");
    }

    #[test]
    fn invisible_characters_and_combining_marks_are_dropped() {
        for zero_width in [
            '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}', '\u{202E}',
            '\u{FE0F}', '\u{034F}', '\u{3164}',
        ] {
            assert!(draws_nothing(zero_width), "{:?}", zero_width);
            assert_eq!(
                cleaned(&format!("k{zero_width}ill")),
                "kill",
                "{:?}",
                zero_width
            );
        }
        // Zalgo and strike-through marks.
        assert_eq!(cleaned("k\u{0336}i\u{0336}l\u{0336}l\u{0336}"), "kill");
        assert_eq!(cleaned("ki\u{0301}\u{0302}\u{0303}ll"), "kill");
        assert!(!draws_nothing('k') && !draws_nothing('杀'));
    }

    #[test]
    fn lookalike_letters_of_other_scripts_become_ascii() {
        assert_eq!(cleaned("kіll"), "kill", "Cyrillic і");
        assert_eq!(cleaned("ѕех"), "sex", "Cyrillic ѕ е х");
        assert_eq!(cleaned("ΚΙLL"), "kill", "Greek capitals");
        assert_eq!(cleaned("sοs"), "sos", "Greek ο");
        assert_eq!(cleaned("kíll"), "kill", "an accent");
        assert_eq!(cleaned("abc xyz 123"), "abc xyz 123", "ASCII stays");
    }

    #[test]
    fn chinese_japanese_and_korean_stay_as_written() {
        assert_eq!(cleaned("杀人"), "杀人");
        assert_eq!(cleaned("乇"), "乇", "not read as a Latin e");
        assert_eq!(cleaned("ころす"), "ころす");
        assert_eq!(cleaned("살인"), "살인");
        assert_eq!(
            cleaned("殺人"),
            "殺人",
            "traditional forms are terms of their own"
        );
    }

    #[test]
    fn words_split_at_spaces_and_punctuation_and_apostrophes_join() {
        assert_eq!(normalise("a  red,fox!"), "a red fox");
        assert_eq!(normalise("don't stop"), "dont stop");
        assert_eq!(
            normalise("  leading and trailing  "),
            "leading and trailing"
        );
    }

    #[test]
    fn runs_of_single_letters_are_joined() {
        for spaced in [
            "k i l l",
            "k.i.l.l",
            "k-i-l-l",
            "k_i_l_l",
            "k / i / l / l",
            "K I L L",
        ] {
            assert_eq!(normalise(spaced), "kill", "{spaced}");
        }
        assert_eq!(normalise("plan b"), "plan b");
        // A one-letter word before a spelled-out one joins it; its joints say where
        // the letters were apart.
        let n = normalise_with_joints("i am a k i l l er");
        assert_eq!(n.text, "i am akill er");
        let joints: Vec<usize> = (0..n.text.len()).filter(|&o| n.is_joint(o)).collect();
        assert_eq!(joints, [6, 7, 8, 9]);
        assert!(!normalise_with_joints("kill").is_joint(1));
        assert!(n.has_joint_within(5, 10) && n.has_joint_within(8, 10));
        assert!(!n.has_joint_within(9, 13) && !n.has_joint_within(0, 6));
    }

    #[test]
    fn unspaced_scripts_join_across_separators() {
        assert_eq!(normalise("杀 人"), "杀人");
        assert_eq!(normalise("杀\u{200B}人"), "杀人");
        assert_eq!(normalise("杀，人。"), "杀人");
        assert_eq!(normalise("杀-人"), "杀人");
        assert_eq!(normalise("我要kill他"), "我要 kill 他");
        assert_eq!(normalise("ｋｉｌｌ 他们"), "kill 他们");
    }

    #[test]
    fn scripts_are_classified() {
        assert!(is_unspaced('杀') && is_unspaced('こ') && is_unspaced('カ'));
        assert!(!is_unspaced('k') && !is_unspaced('살'));
        assert!(is_word_char('k') && is_word_char('7') && !is_word_char('杀'));
    }
}
