-- Commerce (CONTRACT.md §2-§5): purchases keyed by the platform's payment_ref, price
-- changes, trials, subscriptions, pay-as-you-go balances, the money events the
-- platform settles, and the account lifecycle. migrations/postgres/0002_commerce.sql
-- is the same schema for PostgreSQL: change both together.

-- 'prepaid' (credit lots) or 'postpaid' (a money balance).
ALTER TABLE accounts ADD COLUMN billing TEXT NOT NULL DEFAULT 'prepaid';
-- Why the account is suspended or terminated ('operator', 'violation', 'arrears', ...).
ALTER TABLE accounts ADD COLUMN status_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN status_changed_at INTEGER;
-- When a terminated or deleted account's videos and prompts were purged.
ALTER TABLE accounts ADD COLUMN purged_at INTEGER;

-- 'credits' (hold, debit, refund) or 'postpaid' (charged price_minor on success).
ALTER TABLE jobs ADD COLUMN billing TEXT NOT NULL DEFAULT 'credits';
ALTER TABLE jobs ADD COLUMN price_minor INTEGER;
ALTER TABLE jobs ADD COLUMN price_currency TEXT;
ALTER TABLE jobs ADD COLUMN charged_minor INTEGER NOT NULL DEFAULT 0;

CREATE INDEX lots_due ON lots(expires_at) WHERE expired_at IS NULL AND expires_at IS NOT NULL;

-- One row per payment the platform recorded: the same payment_ref twice is one purchase.
CREATE TABLE payments (
    payment_ref   TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    -- pack, subscription, top_up
    kind          TEXT NOT NULL,
    item_id       TEXT NOT NULL,
    amount_minor  INTEGER NOT NULL CHECK (amount_minor >= 0),
    currency      TEXT NOT NULL,
    -- What it bought (JSON): the lot, the subscription.
    result        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX payments_account ON payments(account_id, created_at);

-- Price changes scheduled on top of the operator's catalogue file (append-only).
CREATE TABLE price_changes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- pack or plan
    item_kind     TEXT NOT NULL CHECK (item_kind IN ('pack', 'plan')),
    item_id       TEXT NOT NULL,
    price_minor   INTEGER NOT NULL CHECK (price_minor >= 0),
    currency      TEXT NOT NULL,
    announced_at  INTEGER NOT NULL,
    effective_at  INTEGER NOT NULL CHECK (effective_at >= announced_at),
    actor         TEXT NOT NULL
);

-- One trial per account, ever: the primary key refuses a second.
CREATE TABLE trials (
    account_id  TEXT PRIMARY KEY REFERENCES accounts(id),
    started_at  INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    lot_id      INTEGER NOT NULL REFERENCES lots(id)
);

-- An account's plans: kinema_ledger::SubscriptionState as JSON, and when the sweeper
-- next has something to do for it.
CREATE TABLE subscriptions (
    account_id   TEXT PRIMARY KEY REFERENCES accounts(id),
    state        TEXT NOT NULL,
    next_due_at  INTEGER,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX subscriptions_due ON subscriptions(next_due_at) WHERE next_due_at IS NOT NULL;

-- Pay-as-you-go balances: kinema_ledger::PostpaidAccount.
CREATE TABLE postpaid_accounts (
    account_id     TEXT PRIMARY KEY REFERENCES accounts(id),
    balance_minor  INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    arrears_since  INTEGER,
    phase          TEXT NOT NULL,
    terminated_at  INTEGER,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX postpaid_arrears ON postpaid_accounts(arrears_since) WHERE arrears_since IS NOT NULL;

-- Money and plan events, append-only: what the platform collects (CHARGE), owes back
-- (REFUND_OWED), postpaid usage charges and top-ups, and state changes of plans and
-- postpaid accounts. amount_minor is never negative; the kind says which way it goes.
CREATE TABLE billing_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    kind             TEXT NOT NULL,
    amount_minor     INTEGER NOT NULL DEFAULT 0 CHECK (amount_minor >= 0),
    currency         TEXT NOT NULL DEFAULT '',
    subscription_id  TEXT,
    plan_id          TEXT,
    job_id           TEXT,
    payment_ref      TEXT,
    -- The effect as kinema_ledger wrote it (JSON).
    detail           TEXT NOT NULL DEFAULT '{}',
    -- The instant the event belongs to (a renewal caught up late is in the past).
    effective_at     INTEGER NOT NULL,
    created_at       INTEGER NOT NULL
);
CREATE INDEX billing_events_account ON billing_events(account_id, id);

CREATE TRIGGER billing_events_no_update BEFORE UPDATE ON billing_events
BEGIN SELECT RAISE(ABORT, 'billing events are append-only'); END;
CREATE TRIGGER billing_events_no_delete BEFORE DELETE ON billing_events
BEGIN SELECT RAISE(ABORT, 'billing events are append-only'); END;

-- Ledger entries stay append-only, except that a deleted account's memos (free text
-- that may be personal data) are blanked (CONTRACT.md §5).
DROP TRIGGER ledger_entries_no_update;
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
WHEN NEW.memo <> '' OR NEW.id IS NOT OLD.id OR NEW.account_id IS NOT OLD.account_id
  OR NEW.kind IS NOT OLD.kind OR NEW.amount IS NOT OLD.amount
  OR NEW.allocations IS NOT OLD.allocations OR NEW.job_id IS NOT OLD.job_id
  OR NEW.actor IS NOT OLD.actor OR NEW.balance_after IS NOT OLD.balance_after
  OR NEW.held_after IS NOT OLD.held_after OR NEW.created_at IS NOT OLD.created_at
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
