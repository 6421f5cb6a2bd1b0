//! Admin grants (`GrantCredits`, docs/api.md, "Keys and roles"): a lot of credits with an optional
//! expiry, recorded by a GRANT entry.

use crate::{Credits, LedgerError, LotSource, NewLot, UnixMillis};

/// The lot an admin grant of `credits` creates. Refuses a non-positive amount and
/// an `expires_at` not after `now` (it would be unusable from the start).
pub fn admin_grant(
    credits: Credits,
    expires_at: Option<UnixMillis>,
    now: UnixMillis,
) -> Result<NewLot, LedgerError> {
    if credits <= 0 {
        return Err(LedgerError::NonPositiveAmount(credits));
    }
    if let Some(at) = expires_at {
        if at <= now {
            return Err(LedgerError::ExpiryNotInFuture {
                expires_at: at,
                now,
            });
        }
    }
    Ok(NewLot {
        source: LotSource::Grant,
        credits,
        expires_at,
        granted_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_need_credits_and_a_future_expiry() {
        let lot = admin_grant(10, Some(101), 100).unwrap();
        assert_eq!(lot.entry_kind(), crate::EntryKind::Grant);
        assert_eq!(lot.granted_at, 100);
        assert_eq!(
            admin_grant(0, None, 0),
            Err(LedgerError::NonPositiveAmount(0))
        );
        assert!(admin_grant(10, Some(100), 100).is_err());
    }
}
