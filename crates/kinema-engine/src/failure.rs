use kinema_diffusion::PipelineError;
use kinema_store::Failure;

/// Why a job failed, as the job's `failure.code` says it (CONTRACT.md §2.4).
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
    /// worker may come back); deterministic model and encoder errors will not.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::OutOfMemory | Self::WorkerLost | Self::StorageError | Self::Timeout
        )
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
        let code = match e {
            PipelineError::OutOfMemory(_) => FailureCode::OutOfMemory,
            _ => FailureCode::ModelError,
        };
        JobFailure::new(code, e.to_string())
    }
}
