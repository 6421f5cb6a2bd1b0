use std::collections::BTreeMap;

use crate::FailureCode;

/// A stage where `--fault-injection` can make a job fail (docs/api.md, "Keys and roles").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultStage {
    EncodeText,
    Step(u32),
    Decode,
    EncodeVideo,
    Store,
}

/// What a job's metadata asks of the fault injector. Empty unless the server runs
/// with `--fault-injection`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub fail_at: Option<FaultStage>,
    /// Sleep after every denoising step, to give tests a window to watch, cancel or
    /// kill a running job.
    pub step_delay_ms: u64,
    /// Report the injected failure as this code instead of the stage's own (an OOM
    /// or a storage error at any stage, to exercise retries).
    pub fail_code: Option<FailureCode>,
    /// Inject the failure on the first N attempts only (then the job runs clean).
    pub fail_times: Option<u32>,
}

pub const FAIL_AT_KEY: &str = "kinema.fail_at";
pub const STEP_DELAY_KEY: &str = "kinema.step_delay_ms";
pub const FAIL_CODE_KEY: &str = "kinema.fail_code";
pub const FAIL_TIMES_KEY: &str = "kinema.fail_times";

impl FaultPlan {
    /// Reads the plan from job metadata; an unparseable value is an error so a test
    /// never silently runs without the fault it asked for.
    pub fn from_metadata(metadata: &BTreeMap<String, String>) -> Result<FaultPlan, String> {
        let fail_at = match metadata.get(FAIL_AT_KEY).map(String::as_str) {
            None => None,
            Some("encode_text") => Some(FaultStage::EncodeText),
            Some("decode") => Some(FaultStage::Decode),
            Some("encode_video") => Some(FaultStage::EncodeVideo),
            Some("store") => Some(FaultStage::Store),
            Some(other) => match other.strip_prefix("step:").map(str::parse::<u32>) {
                Some(Ok(n)) if n >= 1 => Some(FaultStage::Step(n)),
                _ => {
                    return Err(format!(
                        "{FAIL_AT_KEY} must be encode_text, step:N (N >= 1), decode, encode_video or store; got {other:?}"
                    ))
                }
            },
        };
        let step_delay_ms = match metadata.get(STEP_DELAY_KEY) {
            None => 0,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms <= 60_000)
                .ok_or_else(|| {
                    format!("{STEP_DELAY_KEY} must be 0..=60000 milliseconds; got {v:?}")
                })?,
        };
        let fail_code = match metadata.get(FAIL_CODE_KEY).map(String::as_str) {
            None => None,
            Some(text) => Some(
                [
                    FailureCode::OutOfMemory,
                    FailureCode::ModelError,
                    FailureCode::EncoderError,
                    FailureCode::StorageError,
                ]
                .into_iter()
                .find(|c| c.as_str() == text)
                .ok_or_else(|| {
                    format!(
                        "{FAIL_CODE_KEY} must be OUT_OF_MEMORY, MODEL_ERROR, ENCODER_ERROR or STORAGE_ERROR; got {text:?}"
                    )
                })?,
            ),
        };
        let fail_times = match metadata.get(FAIL_TIMES_KEY) {
            None => None,
            Some(v) => Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("{FAIL_TIMES_KEY} must be a count >= 1; got {v:?}"))?,
            ),
        };
        Ok(FaultPlan {
            fail_at,
            step_delay_ms,
            fail_code,
            fail_times,
        })
    }

    /// The plan for one attempt (counted from 1): past `fail_times` nothing fails.
    pub fn for_attempt(mut self, attempt: u32) -> FaultPlan {
        if self.fail_times.is_some_and(|n| attempt > n) {
            self.fail_at = None;
        }
        self
    }

    pub fn fails_at(&self, stage: FaultStage) -> bool {
        self.fail_at == Some(stage)
    }

    /// The failure injected at `stage`, classified as a real failure there would be
    /// (`natural`) unless the plan names another code.
    pub fn failure(&self, stage: &str, natural: FailureCode) -> crate::JobFailure {
        crate::JobFailure::new(
            self.fail_code.unwrap_or(natural),
            format!("injected fault at {stage}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_stage_and_rejects_garbage() {
        assert_eq!(
            FaultPlan::from_metadata(&meta(&[])).unwrap(),
            FaultPlan::default()
        );
        let plan = FaultPlan::from_metadata(&meta(&[("kinema.fail_at", "step:3")])).unwrap();
        assert!(plan.fails_at(FaultStage::Step(3)));
        assert!(!plan.fails_at(FaultStage::Step(2)));
        for (text, stage) in [
            ("encode_text", FaultStage::EncodeText),
            ("decode", FaultStage::Decode),
            ("encode_video", FaultStage::EncodeVideo),
            ("store", FaultStage::Store),
        ] {
            let plan = FaultPlan::from_metadata(&meta(&[("kinema.fail_at", text)])).unwrap();
            assert!(plan.fails_at(stage), "{text}");
        }
        for bad in ["step:0", "step:x", "explode"] {
            assert!(FaultPlan::from_metadata(&meta(&[("kinema.fail_at", bad)])).is_err());
        }
        assert!(FaultPlan::from_metadata(&meta(&[("kinema.step_delay_ms", "-1")])).is_err());

        let plan = FaultPlan::from_metadata(&meta(&[
            ("kinema.fail_at", "decode"),
            ("kinema.fail_code", "OUT_OF_MEMORY"),
            ("kinema.fail_times", "2"),
        ]))
        .unwrap();
        assert_eq!(
            plan.failure("decode", FailureCode::ModelError).code,
            FailureCode::OutOfMemory
        );
        assert!(plan.clone().for_attempt(2).fails_at(FaultStage::Decode));
        assert!(!plan.for_attempt(3).fails_at(FaultStage::Decode));
        for (k, v) in [("kinema.fail_code", "BOOM"), ("kinema.fail_times", "0")] {
            assert!(
                FaultPlan::from_metadata(&meta(&[(k, v)])).is_err(),
                "{k}={v}"
            );
        }
    }
}
