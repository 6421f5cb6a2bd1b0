use std::cmp::Ordering;

use crate::{Credits, UnixMillis};

/// A lot as the rules see it: what is left of it, and when it stops being usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotState {
    pub id: i64,
    pub remaining: Credits,
    pub expires_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
}

/// A lot is usable strictly before its `expires_at`: at that instant it is expired,
/// whether or not a sweeper has written its EXPIRE entry yet.
pub fn is_live(lot: &LotState, now: UnixMillis) -> bool {
    lot.expires_at.is_none_or(|at| now < at)
}

/// The order debits take lots in: earliest `expires_at` first, lots that never expire
/// last, ties by creation time, then by id.
pub fn debit_order(a: &LotState, b: &LotState) -> Ordering {
    let expiry = match (a.expires_at, b.expires_at) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    expiry
        .then(a.created_at.cmp(&b.created_at))
        .then(a.id.cmp(&b.id))
}
