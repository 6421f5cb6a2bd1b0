//! The policy end to end in memory: evasions in English and Chinese are refused with
//! the right category; ordinary prompts that merely contain a piece of a term are
//! not; the example policy the docs ship loads and catches its own terms.

use super::UsagePolicy;

const POLICY: &str = r#"
[categories.violence]
terms = ["kill", "murder", "杀人", "殺人", "屠杀"]
patterns = ['\bbehead(s|ed|ing)?\b']

[categories.insult]
terms = ["ass"]

[categories.self-harm]
terms = ["suicide method", "自杀"]
"#;

fn policy() -> UsagePolicy {
    UsagePolicy::parse(POLICY, "test").unwrap()
}

/// The category the prompt is refused for, if it is.
fn refused(prompt: &str) -> Option<String> {
    policy().check_local(prompt, "").map(|v| v.hit.category)
}

#[test]
fn english_evasions_are_refused_with_their_category() {
    let evasions = [
        "kill him",
        "KILL him",
        "KiLl him",
        "k.i.l.l him",
        "k i l l him",
        "k-i-l-l him",
        "k_i_l_l him",
        "k . i . l . l",
        "ｋｉｌｌ him",                         // full-width
        "ＫＩＬＬ",                             // full-width capitals
        "kіll him",                             // Cyrillic і
        "ΚΙLL him",                             // Greek capital kappa and iota
        "kiⅼⅼ",                                 // small roman numeral fifty
        "𝐤𝐢𝐥𝐥 him",                             // mathematical bold
        "ⓚⓘⓛⓛ",                                 // circled
        "k\u{200D}ill him",                     // zero-width joiner
        "k\u{200B}i\u{200C}l\u{2060}l",         // zero-width space, non-joiner, word joiner
        "k\u{00AD}ill",                         // soft hyphen
        "\u{202E}kill",                         // a bidi override
        "k\u{0336}i\u{0336}l\u{0336}l\u{0336}", // strike-through marks
        "kíll",                                 // an accent
        "murdеr",                               // Cyrillic е
        "mսrder",                               // Armenian ս
    ];
    for prompt in evasions {
        assert_eq!(refused(prompt).as_deref(), Some("violence"), "{prompt:?}");
    }
    assert_eq!(refused("b.e.h.e.a.d.e.d").as_deref(), Some("violence"));
    assert_eq!(refused("you a s s").as_deref(), Some("insult"));
    assert_eq!(
        refused("sui\u{200B}cide  method").as_deref(),
        Some("self-harm")
    );
}

#[test]
fn chinese_evasions_are_refused_with_their_category() {
    let evasions = [
        "杀人",
        "他想杀人",
        "杀 人",
        "杀　人",       // ideographic space
        "杀\u{200B}人", // zero-width space
        "杀\u{200D}人", // zero-width joiner
        "杀\u{FEFF}人", // BOM
        "杀，人",       // full-width comma
        "杀-人",
        "杀...人",
        "杀⼈", // Kangxi radical for 人
        "殺人", // traditional, listed as a term of its own
        "去屠\u{200C}杀",
        "我要ｋｉｌｌ他", // English term inside Chinese, full-width
        "今天 k.i.l.l 他们",
    ];
    for prompt in evasions {
        assert_eq!(refused(prompt).as_deref(), Some("violence"), "{prompt:?}");
    }
    assert_eq!(refused("不要自 杀").as_deref(), Some("self-harm"));
}

#[test]
fn ordinary_prompts_with_pieces_of_terms_are_allowed() {
    let ordinary = [
        "a class of students painting on the grass",
        "an assistant carrying a bass guitar through a glass door",
        "a skillful chef slicing vegetables, close-up",
        "killer whales breaching at sunset",
        "a massive cathedral with stained glass, drone shot",
        "a cassette player on a wooden desk, 1980s style",
        "the passage through a mountain pass in autumn",
        "an ambassador giving a speech, photorealistic",
        "a harassment awareness poster on an office wall",
        "Skillshare-style tutorial of watercolor flowers",
        "a red fox in snow, cinematic",
        "a cat assessing a sassafras tree",
        "使出杀手锏的篮球运动员", // 杀 without 人
        "杀毒软件的广告画面",     // antivirus advert
        "人们在广场上跳舞",
        "一个人在雪中散步",
        "a man with a behemoth of a backpack",
        "a letter k, then i, then two l's",
    ];
    assert!(ordinary.len() >= 12);
    for prompt in ordinary {
        assert_eq!(refused(prompt), None, "{prompt:?}");
    }
}

#[test]
fn the_negative_prompt_is_checked_too() {
    let v = policy()
        .check_local("a quiet lake", "no k i l l ing, nothing 杀 人")
        .unwrap();
    assert_eq!(
        (v.field, v.hit.category.as_str()),
        ("negative_prompt", "violence")
    );
    assert_eq!(v.hit.rule, "term:violence:0");
    let v = policy().check_local("kill", "杀人").unwrap();
    assert_eq!(v.field, "prompt");
    assert!(policy()
        .check_local("a quiet lake", "blurry, low quality")
        .is_none());
}

#[test]
fn without_a_policy_nothing_is_refused_or_checked() {
    let none = UsagePolicy::none();
    assert!(!none.is_active());
    assert!(none.check_local("kill 杀人", "").is_none());
    assert!(policy().is_active());
    assert_eq!(policy().version.len(), 12);
}

#[test]
fn the_example_policy_loads_and_catches_its_terms() {
    let example = include_str!("../../../../docs/usage-policy.example.toml");
    let policy = UsagePolicy::parse(example, "docs/usage-policy.example.toml").unwrap();
    for category in [
        "violence",
        "sexual-minors",
        "self-harm",
        "hate",
        "terrorism",
    ] {
        assert!(
            policy.categories.iter().any(|c| c == category),
            "{category}"
        );
    }
    let cases = [
        ("b e h e a d", "violence"),
        ("斬\u{200B}首", "violence"),
        ("ｃｈｉｌｄ ｐｏｒｎ", "sexual-minors"),
        ("儿童 色情", "sexual-minors"),
        ("how to k.i.l.l myself", "self-harm"),
        ("自殺方法", "self-harm"),
        ("ethnic cleansing", "hate"),
        ("how to make a pipe bomb", "terrorism"),
        ("how to make a p.i.p.e b o m b", "terrorism"),
        ("製作炸彈", "terrorism"),
    ];
    for (prompt, category) in cases {
        let hit = policy.check_local(prompt, "").map(|v| v.hit.category);
        assert_eq!(hit.as_deref(), Some(category), "{prompt:?}");
    }
    for ordinary in [
        "a child flying a kite on a beach",
        "a documentary shot of a bomb disposal robot",
        "夕阳下的城市天际线",
    ] {
        assert!(policy.check_local(ordinary, "").is_none(), "{ordinary}");
    }
}
