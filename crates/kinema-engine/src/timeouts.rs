//! Time limits on a job and on each of its stages (`--job-timeout`,
//! `--stage-timeout STAGE=SECS`). Model loading counts toward neither: a job does
//! not fail because its worker had to load the model first.

use std::time::Duration;

use kinema_store::Stage;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// From the model being ready to the job's end.
    pub job: Option<Duration>,
    pub encode_text: Option<Duration>,
    pub denoise: Option<Duration>,
    pub decode: Option<Duration>,
    pub encode_video: Option<Duration>,
    pub store: Option<Duration>,
}

impl Timeouts {
    pub fn stage(&self, stage: Stage) -> Option<Duration> {
        match stage {
            Stage::EncodingText => self.encode_text,
            Stage::Denoising => self.denoise,
            Stage::Decoding => self.decode,
            Stage::EncodingVideo => self.encode_video,
            Stage::Storing => self.store,
        }
    }

    /// Sets one stage's limit from `STAGE=SECONDS` (stages: encode_text, denoise,
    /// decode, encode_video, store; seconds may be fractional).
    pub fn set_stage(&mut self, text: &str) -> Result<(), String> {
        let (name, secs) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected STAGE=SECONDS"))?;
        let limit = parse_secs(secs)?;
        let slot = match name.trim() {
            "encode_text" => &mut self.encode_text,
            "denoise" => &mut self.denoise,
            "decode" => &mut self.decode,
            "encode_video" => &mut self.encode_video,
            "store" => &mut self.store,
            other => {
                return Err(format!(
                    "unknown stage {other:?} (encode_text, denoise, decode, encode_video, store)"
                ))
            }
        };
        *slot = Some(limit);
        Ok(())
    }
}

/// Positive seconds, fractions allowed (`0.5`, `600`).
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        return Err(format!("{text:?}: seconds must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_limits_parse() {
        let mut t = Timeouts::default();
        t.set_stage("denoise=1.5").unwrap();
        t.set_stage("store = 2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.stage(Stage::Denoising), Some(Duration::from_millis(1500)));
        assert_eq!(t.stage(Stage::Storing), Some(Duration::from_secs(2)));
        assert_eq!(t.stage(Stage::Decoding), None);
        for bad in ["denoise", "denoise=0", "denoise=-1", "bake=3", "decode=x"] {
            assert!(t.set_stage(bad).is_err(), "{bad}");
        }
    }
}
