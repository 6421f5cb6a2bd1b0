use kinema_diffusion::PipelineError;
use kinema_store::Failure;

/// Why a job failed, as the job's `failure.code` says it (docs/api.md, "Refunds").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCode {
    ModelError,
    OutOfMemory,
    EncoderError,
    StorageError,
    Timeout,
    WorkerLost,
    Internal,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModelError => "MODEL_ERROR",
            Self::OutOfMemory => "OUT_OF_MEMORY",
            Self::EncoderError => "ENCODER_ERROR",
            Self::StorageError => "STORAGE_ERROR",
            Self::Timeout => "TIMEOUT",
            Self::WorkerLost => "WORKER_LOST",
            Self::Internal => "INTERNAL",
        }
    }

    /// Whether trying again could help (an OOM may fit alone or elsewhere; a lost
    /// worker may come back; storage may recover); deterministic model and encoder
    /// errors will not, and a job that ran out of time would run out of it again.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::OutOfMemory | Self::WorkerLost | Self::StorageError
        )
    }

    /// How many attempts in all a job failing this way may have: an OOM is retried
    /// once (alone: `already_alone` says the retry happened), other retryable
    /// failures up to `max_attempts`.
    pub fn attempts_allowed(self, max_attempts: u32, already_alone: bool) -> u32 {
        match self {
            Self::OutOfMemory if already_alone => 0,
            c if c.retryable() => max_attempts,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct JobFailure {
    pub code: FailureCode,
    pub message: String,
}

impl JobFailure {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn to_record(&self) -> Failure {
        Failure {
            code: self.code.as_str().to_string(),
            message: self.message.clone(),
            retryable: self.code.retryable(),
        }
    }
}

impl From<PipelineError> for JobFailure {
    fn from(e: PipelineError) -> Self {
        let code = match &e {
            PipelineError::OutOfMemory(_) => FailureCode::OutOfMemory,
            // candle reports a CUDA allocation failure as a plain error.
            PipelineError::Model(m) if m.to_ascii_lowercase().contains("out of memory") => {
                FailureCode::OutOfMemory
            }
            _ => FailureCode::ModelError,
        };
        JobFailure::new(code, e.to_string())
    }
}
