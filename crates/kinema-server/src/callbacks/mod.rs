//! Callbacks (docs/api.md, "Callbacks"): the SSRF rules a callback URL must pass
//! (`address`, `target`, `resolver`), signatures (`signing`) and the delivery loop
//! over the store's outbox (`delivery`).

pub mod address;
pub mod delivery;
pub mod resolver;
pub mod signing;
mod submission;
pub mod target;

pub use address::TargetPolicy;
pub use delivery::{Deliveries, DeliverySettings};
pub(crate) use submission::check_submission;

/// A fresh signing secret, as AdminService.RotateCallbackSecret shows it once.
pub fn new_secret() -> String {
    format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// Reads the server's own signing secret (`--callback-secret-file`): the file's
/// text, trimmed; refused if shorter than 16 bytes.
pub fn read_secret_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("callback secret file {}: {e}", path.display()))?;
    let secret = text.trim();
    if secret.len() < 16 {
        return Err(format!(
            "callback secret file {}: the secret must be at least 16 bytes",
            path.display()
        ));
    }
    Ok(secret.as_bytes().to_vec())
}
