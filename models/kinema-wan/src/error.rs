use std::path::PathBuf;

use kinema_diffusion::weights::LoadError;

#[derive(Debug, thiserror::Error)]
pub enum WanError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("unsupported config {what}: {message}")]
    Config { what: String, message: String },
    #[error("invalid input: {0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, WanError>;
