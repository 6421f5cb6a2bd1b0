//! CreateJob's check of a `callback_url`, before anything is held: the SSRF rules
//! (INVALID_ARGUMENT / CALLBACK_URL_REFUSED on `callback_url`) and a secret to sign
//! its deliveries with (FAILED_PRECONDITION / CALLBACK_SECRET_MISSING).

use tonic::Code;

use crate::app::App;
use crate::error::{reasons, ApiError};

pub async fn check_submission(app: &App, account_id: &str, url: &str) -> Result<(), ApiError> {
    super::target::check_at_submission(app.callbacks.policy(), url)
        .await
        .map_err(|refused| ApiError::FieldRefused {
            reason: reasons::CALLBACK_URL_REFUSED,
            field: "callback_url",
            description: refused.to_string(),
        })?;
    if !app.callbacks.can_sign(account_id).await? {
        return Err(ApiError::status(
            Code::FailedPrecondition,
            reasons::CALLBACK_SECRET_MISSING,
            "callbacks need a signing secret: the account has none \
             (AdminService.RotateCallbackSecret) and the server has no --callback-secret-file",
        ));
    }
    Ok(())
}
