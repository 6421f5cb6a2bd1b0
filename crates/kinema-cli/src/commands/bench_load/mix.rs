//! The job mix: which jobs the clients submit, and how often each.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use kinema_proto::v1 as pb;
use rand::Rng;
use serde::{Deserialize, Serialize};

const DEFAULT_PROMPT: &str = "a red fox running through fresh snow, cinematic";

/// One kind of job in the mix. Unset shape fields take the model's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixEntry {
    /// Label in the report; default: the model and its shape.
    #[serde(default)]
    pub name: String,
    pub model: String,
    /// `WIDTHxHEIGHT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Job metadata, e.g. `kinema.step_delay_ms` to emulate a slower model on a
    /// server started with --fault-injection.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MixFile {
    job: Vec<MixEntry>,
}

/// The entries with their weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mix {
    pub entries: Vec<MixEntry>,
}

impl Mix {
    /// `MODEL[:WEIGHT],...` (model defaults), or the path of a TOML file of `[[job]]`
    /// tables when the value ends in `.toml`.
    pub fn parse(spec: &str) -> anyhow::Result<Mix> {
        let spec = spec.trim();
        if spec.ends_with(".toml") {
            let text = std::fs::read_to_string(Path::new(spec))
                .with_context(|| format!("reading the mix file {spec}"))?;
            let file: MixFile =
                toml::from_str(&text).with_context(|| format!("parsing the mix file {spec}"))?;
            return Mix::new(file.job);
        }
        let mut entries = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (model, weight) = match part.rsplit_once(':') {
                Some((m, w)) => (
                    m.trim(),
                    w.trim()
                        .parse::<u32>()
                        .with_context(|| format!("weight of {part:?} in --mix"))?,
                ),
                None => (part, 1),
            };
            entries.push(MixEntry {
                name: String::new(),
                model: model.to_string(),
                size: None,
                frames: None,
                steps: None,
                fps: None,
                prompt: None,
                metadata: BTreeMap::new(),
                weight,
            });
        }
        Mix::new(entries)
    }

    fn new(mut entries: Vec<MixEntry>) -> anyhow::Result<Mix> {
        if entries.is_empty() {
            bail!("the job mix is empty");
        }
        for e in &mut entries {
            if e.model.is_empty() {
                bail!("a mix entry has no model");
            }
            if e.weight == 0 {
                bail!("mix entry {:?} has weight 0", e.model);
            }
            if let Some(size) = &e.size {
                parse_size(size)?;
            }
            if e.name.is_empty() {
                e.name = e.default_name();
            }
        }
        let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            bail!("two mix entries share a name; give them distinct `name`s");
        }
        Ok(Mix { entries })
    }

    /// An entry drawn with probability proportional to its weight.
    pub fn pick(&self, rng: &mut impl Rng) -> &MixEntry {
        let total: u64 = self.entries.iter().map(|e| u64::from(e.weight)).sum();
        let mut r = rng.gen_range(0..total);
        for e in &self.entries {
            if r < u64::from(e.weight) {
                return e;
            }
            r -= u64::from(e.weight);
        }
        &self.entries[self.entries.len() - 1]
    }

    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.model.as_str())
    }
}

impl MixEntry {
    fn default_name(&self) -> String {
        let mut name = self.model.clone();
        if let Some(s) = &self.size {
            name.push_str(&format!(" {s}"));
        }
        if let Some(f) = self.frames {
            name.push_str(&format!(" {f}f"));
        }
        if let Some(s) = self.steps {
            name.push_str(&format!(" {s}steps"));
        }
        name
    }

    /// The submission for this entry.
    pub fn request(&self, account: &str, seed: u64) -> pb::CreateJobRequest {
        let (width, height) = match self.size.as_deref().map(parse_size) {
            Some(Ok((w, h))) => (Some(w), Some(h)),
            _ => (None, None),
        };
        pb::CreateJobRequest {
            account_id: account.to_string(),
            model: self.model.clone(),
            prompt: self
                .prompt
                .clone()
                .unwrap_or_else(|| DEFAULT_PROMPT.to_string()),
            width,
            height,
            num_frames: self.frames,
            steps: self.steps,
            fps: self.fps,
            seed: Some(seed),
            metadata: self.metadata.clone(),
            ..Default::default()
        }
    }
}

fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let parsed = s
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    match parsed {
        Some((w, h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => bail!("size {s:?} is not WIDTHxHEIGHT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parses_the_flag_form() {
        let mix = Mix::parse("testsrc:3, wan-tiny:1").unwrap();
        assert_eq!(mix.entries.len(), 2);
        assert_eq!(
            (mix.entries[0].model.as_str(), mix.entries[0].weight),
            ("testsrc", 3)
        );
        assert_eq!(
            (mix.entries[1].name.as_str(), mix.entries[1].weight),
            ("wan-tiny", 1)
        );
        assert_eq!(Mix::parse("testsrc").unwrap().entries[0].weight, 1);
        assert!(Mix::parse("testsrc:0").is_err());
        assert!(Mix::parse("testsrc:x").is_err());
        assert!(Mix::parse(" , ").is_err());
        assert!(Mix::parse("testsrc,testsrc").is_err(), "duplicate names");
    }

    #[test]
    fn parses_the_file_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mix.toml");
        std::fs::write(
            &path,
            r#"
[[job]]
model = "wan-tiny"
size = "48x32"
frames = 5
steps = 3
weight = 2

[[job]]
name = "small testsrc"
model = "testsrc"
size = "160x96"
frames = 9
metadata = { "kinema.step_delay_ms" = "5" }
"#,
        )
        .unwrap();
        let mix = Mix::parse(path.to_str().unwrap()).unwrap();
        assert_eq!(mix.entries[0].name, "wan-tiny 48x32 5f 3steps");
        assert_eq!(mix.entries[1].weight, 1);
        let req = mix.entries[1].request("acct", 1);
        assert_eq!(req.metadata["kinema.step_delay_ms"], "5");
        let req = mix.entries[0].request("acct", 9);
        assert_eq!(
            (req.width, req.height, req.num_frames, req.steps, req.seed),
            (Some(48), Some(32), Some(5), Some(3), Some(9))
        );
        std::fs::write(&path, "[[job]]\nmodel = \"m\"\nsize = \"48\"\n").unwrap();
        assert!(Mix::parse(path.to_str().unwrap()).is_err());
        std::fs::write(&path, "[[job]]\nmodel = \"m\"\ncolour = 1\n").unwrap();
        assert!(Mix::parse(path.to_str().unwrap()).is_err(), "unknown field");
    }

    #[test]
    fn picks_follow_the_weights() {
        let mix = Mix::parse("a:3,b:1").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = (0..4000)
            .filter(|_| mix.pick(&mut rng).model == "a")
            .count();
        // 3000 expected; 6 standard deviations (~27 each) either side.
        assert!((2840..=3160).contains(&a), "{a} of 4000");
    }
}
