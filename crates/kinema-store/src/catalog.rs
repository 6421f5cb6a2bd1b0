//! The catalogue in force: the operator's file (packs and plans with their list
//! prices) plus the price changes scheduled through the API, which live in the
//! database so every replica sees them (docs/api.md, "Catalogue, purchases and plans", "Price changes").

use kinema_ledger::{Catalogue, Money, PriceHistory, ScheduledPrice, UnixMillis};
use sqlx::AnyConnection;

use crate::tx::Tx;
use crate::{Store, StoreError};

/// Which catalogue item a price belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Pack,
    Plan,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Pack => "pack",
            ItemKind::Plan => "plan",
        }
    }
}

fn history_mut<'a>(
    cat: &'a mut Catalogue,
    kind: ItemKind,
    id: &str,
) -> Option<&'a mut PriceHistory> {
    match kind {
        ItemKind::Pack => cat
            .packs
            .iter_mut()
            .find(|p| p.id == id)
            .map(|p| &mut p.prices),
        ItemKind::Plan => cat
            .plans
            .iter_mut()
            .find(|p| p.id == id)
            .map(|p| &mut p.prices),
    }
}

/// `base` with every scheduled price change applied, in the order they were made.
/// Changes for items no longer in the file are ignored.
pub(crate) async fn catalogue_in(
    conn: &mut AnyConnection,
    base: &Catalogue,
) -> Result<Catalogue, StoreError> {
    let rows: Vec<(String, String, i64, String, i64, i64)> = sqlx::query_as(
        "SELECT item_kind, item_id, price_minor, currency, announced_at, effective_at \
         FROM price_changes ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut cat = base.clone();
    for (kind, id, minor, currency, announced_at, effective_at) in rows {
        let kind = match kind.as_str() {
            "pack" => ItemKind::Pack,
            "plan" => ItemKind::Plan,
            other => return Err(StoreError::Corrupt(format!("price change for a {other:?}"))),
        };
        let currency = currency
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("price change currency: {e}")))?;
        if let Some(history) = history_mut(&mut cat, kind, &id) {
            history.entries.push(ScheduledPrice {
                price: Money::new(minor, currency),
                announced_at,
                effective_at,
            });
        }
    }
    Ok(cat)
}

impl Store {
    /// The catalogue in force: `base` (the operator's file) with the scheduled changes.
    pub async fn catalogue(&self, base: &Catalogue) -> Result<Catalogue, StoreError> {
        let mut conn = self.read.acquire().await?;
        catalogue_in(&mut conn, base).await
    }

    /// Schedules a new price for a pack or plan, announced now, taking effect at
    /// `effective_at`, which must be at least `notice_ms` away (else
    /// `PriceNoticeTooShort`, and nothing is written). Returns the item's prices.
    #[allow(clippy::too_many_arguments)]
    pub async fn schedule_price_change(
        &self,
        base: &Catalogue,
        kind: ItemKind,
        item_id: &str,
        price: Money,
        effective_at: UnixMillis,
        notice_ms: i64,
        actor: &str,
        now: UnixMillis,
    ) -> Result<PriceHistory, StoreError> {
        let base = base.clone();
        let (item_id, actor) = (item_id.to_owned(), actor.to_owned());
        self.write(move |mut tx| {
            Box::pin(async move {
                let change = PriceChange {
                    kind,
                    item_id: &item_id,
                    price,
                    effective_at,
                    notice_ms,
                    actor: &actor,
                };
                schedule(&mut tx, &base, change, now).await
            })
        })
        .await
    }
}

/// A new price for an item, announced now.
struct PriceChange<'a> {
    kind: ItemKind,
    item_id: &'a str,
    price: Money,
    effective_at: UnixMillis,
    notice_ms: i64,
    actor: &'a str,
}

async fn schedule(
    tx: &mut Tx<'_>,
    base: &Catalogue,
    c: PriceChange<'_>,
    now: UnixMillis,
) -> Result<PriceHistory, StoreError> {
    let mut cat = catalogue_in(tx.conn(), base).await?;
    let history = history_mut(&mut cat, c.kind, c.item_id).ok_or_else(|| match c.kind {
        ItemKind::Pack => kinema_ledger::LedgerError::UnknownPack(c.item_id.to_string()),
        ItemKind::Plan => kinema_ledger::LedgerError::UnknownPlan(c.item_id.to_string()),
    })?;
    let next =
        kinema_ledger::schedule_price_change(history, c.price, now, c.effective_at, c.notice_ms)?;
    sqlx::query(
        "INSERT INTO price_changes (item_kind, item_id, price_minor, currency, announced_at, \
         effective_at, actor) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(c.kind.as_str())
    .bind(c.item_id)
    .bind(c.price.minor)
    .bind(c.price.currency.as_str())
    .bind(now)
    .bind(c.effective_at)
    .bind(c.actor)
    .execute(tx.conn())
    .await?;
    Ok(next)
}
