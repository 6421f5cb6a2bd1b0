//! Organisations and seats on SQLite and PostgreSQL (each scenario runs on both):
//! members up to the seats (the default without a plan, the plan's, plus seats
//! bought, which are charged and charged again at renewal), nothing written when the
//! seats are taken, removal revoking the member's keys in the same transaction, the
//! last owner kept, and a member's jobs and their ledger entries filed under it.

use kinema_ledger::calendar::add_months;
use kinema_ledger::{Catalogue, Currency, Money, Plan, PlanInterval, PriceHistory};
use kinema_store::*;

const T0: i64 = 1_700_000_000_000;
const OWNER: &str = "worker-a";
const LEASE: i64 = 60_000;

#[macro_use]
mod common;

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::new("EUR").unwrap())
}

fn rule() -> SeatRule {
    SeatRule {
        catalogue: Catalogue {
            packs: vec![],
            plans: vec![Plan {
                id: "team".into(),
                interval: PlanInterval::Monthly,
                credits_per_month: 1000,
                prices: PriceHistory::new(eur(5000), 0).unwrap(),
                monthly_counterpart: None,
                seats: 2,
                extra_seat_price: Some(eur(700)),
            }],
        },
        without_plan: 1,
    }
}

struct Fixture {
    store: Store,
    account: String,
}

impl Fixture {
    async fn new(db: &common::TestDb) -> Fixture {
        let store = db.store.clone();
        let account = store.create_account("Acme", None, T0).await.unwrap().id;
        Fixture { store, account }
    }

    async fn add(&self, name: &str, role: MemberRole, now: i64) -> Result<MemberAdded, StoreError> {
        self.store
            .add_member(&rule(), &self.account, role, name, "first key", now)
            .await
    }

    async fn live_keys(&self) -> Vec<ApiKey> {
        let keys = self.store.list_api_keys(Some(&self.account)).await.unwrap();
        keys.into_iter()
            .filter(|k| k.revoked_at.is_none())
            .collect()
    }

    async fn assert_verified(&self) {
        let report = self.store.verify_ledger(None).await.unwrap();
        assert!(report.is_clean(), "{:#?}", report.problems);
    }
}

fn new_job(account: &str, member: Option<&str>, quote: i64) -> NewJob {
    NewJob {
        member_id: member.map(str::to_string),
        ..common::new_job(account, quote)
    }
}

async fn members_take_the_seats_and_no_more(f: Fixture) {
    let owner = f.add("ann", MemberRole::Owner, T0).await.unwrap();
    assert_eq!(owner.seats, Seats { seats: 1, used: 1 });
    assert_eq!(
        owner.key.member_id.as_deref(),
        Some(owner.member.id.as_str())
    );
    assert_eq!(owner.key.role, Role::Account);
    let authed = f.store.authenticate(&owner.secret, T0).await.unwrap();
    assert_eq!(authed.unwrap().member_id, Some(owner.member.id.clone()));

    // No plan: one seat. Refused, nothing written.
    let full = f.add("ben", MemberRole::Member, T0).await.unwrap_err();
    assert!(
        matches!(
            full,
            StoreError::SeatsExhausted {
                seats: 1,
                members: 1
            }
        ),
        "{full:?}"
    );
    assert_eq!(
        f.store.list_members(&f.account, true).await.unwrap().len(),
        1
    );
    assert_eq!(f.live_keys().await.len(), 1);

    // The plan's two seats, then one bought: three.
    let cat = rule().catalogue;
    f.store
        .subscribe(&cat, &f.account, "team", Some("pay-plan"), "admin", T0)
        .await
        .unwrap();
    f.add("ben", MemberRole::Member, T0).await.unwrap();
    assert!(matches!(
        f.add("cid", MemberRole::Member, T0).await,
        Err(StoreError::SeatsExhausted {
            seats: 2,
            members: 2
        })
    ));
    let bought = f
        .store
        .buy_seats(&cat, &f.account, 1, "pay-seat", "admin", T0 + 5)
        .await
        .unwrap();
    assert!(bought.created);
    let charges: Vec<_> = bought
        .events
        .iter()
        .map(|e| (e.kind, e.amount, e.payment_ref.as_deref()))
        .collect();
    assert_eq!(
        charges,
        [(BillingEventKind::Charge, Some(eur(700)), Some("pay-seat"))]
    );
    let replay = f
        .store
        .buy_seats(&cat, &f.account, 1, "pay-seat", "admin", T0 + 6)
        .await
        .unwrap();
    assert!(!replay.created && replay.events.is_empty());
    let cid = f.add("cid", MemberRole::Member, T0 + 7).await.unwrap();
    assert_eq!(cid.seats, Seats { seats: 3, used: 3 });
    assert_eq!(
        f.store.seats(&rule(), &f.account, T0 + 8).await.unwrap(),
        Seats { seats: 3, used: 3 }
    );

    // The renewal charges the plan and the extra seat again.
    let renewal = add_months(T0, 1);
    let ticked = f
        .store
        .subscriptions(&cat, &f.account, renewal)
        .await
        .unwrap();
    let renewed: Vec<_> = ticked
        .events
        .iter()
        .filter(|e| e.kind == BillingEventKind::Charge)
        .map(|e| e.amount.map(|m| m.minor))
        .collect();
    assert_eq!(renewed, [Some(5000), Some(700)]);
    assert_eq!(ticked.state.current.unwrap().extra_seats, 1);
    f.assert_verified().await;
}

async fn removal_revokes_keys_and_the_last_owner_stays(f: Fixture) {
    f.store
        .subscribe(&rule().catalogue, &f.account, "team", None, "admin", T0)
        .await
        .unwrap();
    let ann = f.add("ann", MemberRole::Owner, T0).await.unwrap();
    let ben = f.add("ben", MemberRole::Admin, T0).await.unwrap();
    let (_, second) = f
        .store
        .create_member_key(&f.account, &ben.member.id, "spare", T0)
        .await
        .unwrap();
    assert!(f.store.authenticate(&second, T0).await.unwrap().is_some());

    assert!(matches!(
        f.store.remove_member(&f.account, &ann.member.id, T0).await,
        Err(StoreError::LastOwner { .. })
    ));
    assert!(matches!(
        f.store
            .set_member_role(&f.account, &ann.member.id, MemberRole::Admin)
            .await,
        Err(StoreError::LastOwner { .. })
    ));
    let (removed, revoked) = f
        .store
        .remove_member(&f.account, &ben.member.id, T0 + 1)
        .await
        .unwrap();
    assert_eq!((revoked, removed.removed_at), (2, Some(T0 + 1)));
    for secret in [&ben.secret, &second] {
        assert!(f
            .store
            .authenticate(secret, T0 + 2)
            .await
            .unwrap()
            .is_none());
    }
    assert!(f
        .store
        .authenticate(&ann.secret, T0 + 2)
        .await
        .unwrap()
        .is_some());
    assert!(matches!(
        f.store
            .remove_member(&f.account, &ben.member.id, T0 + 3)
            .await,
        Err(StoreError::NotFound(NotFound::Member))
    ));
    assert!(matches!(
        f.store
            .create_member_key(&f.account, &ben.member.id, "late", T0 + 3)
            .await,
        Err(StoreError::NotFound(NotFound::Member))
    ));
    // Its seat is free again; a second owner lets the first step down.
    let cid = f.add("cid", MemberRole::Owner, T0 + 4).await.unwrap();
    let ann = f
        .store
        .set_member_role(&f.account, &ann.member.id, MemberRole::Member)
        .await
        .unwrap();
    assert_eq!(ann.role, MemberRole::Member);
    let live = f.store.list_members(&f.account, false).await.unwrap();
    assert_eq!(
        live.iter()
            .map(|m| (m.name.as_str(), m.role))
            .collect::<Vec<_>>(),
        [("ann", MemberRole::Member), ("cid", MemberRole::Owner)]
    );
    assert_eq!(
        f.store.list_members(&f.account, true).await.unwrap().len(),
        3
    );
    assert!(f.store.get_member(&cid.member.id).await.unwrap().is_some());
}

async fn a_members_jobs_and_entries_are_filed_under_it(f: Fixture) {
    f.store
        .grant_credits(&f.account, 100, None, "", "admin", T0)
        .await
        .unwrap();
    let ann = f.add("ann", MemberRole::Owner, T0).await.unwrap().member;
    let mine = f
        .store
        .submit_job(new_job(&f.account, Some(&ann.id), 10), "k", T0)
        .await
        .unwrap()
        .job()
        .clone();
    assert_eq!(mine.member_id.as_deref(), Some(ann.id.as_str()));
    let theirs = f
        .store
        .submit_job(new_job(&f.account, None, 20), "k", T0 + 1)
        .await
        .unwrap()
        .job()
        .clone();
    // Ann's job starts and fails: HOLD, DEBIT, REFUND, all hers.
    let leased = f.store.lease_next_job(OWNER, LEASE, T0 + 2).await.unwrap();
    assert_eq!(leased.job.expect("a job leased").id, mine.id);
    let failure = Failure {
        code: "TEST".into(),
        message: "test".into(),
        retryable: false,
    };
    f.store
        .fail_job(&mine.id, OWNER, &failure, &Usage::default(), T0 + 3)
        .await
        .unwrap();

    let hers = f
        .store
        .member_ledger_entries(&f.account, None, Some(&ann.id), 0, 100)
        .await
        .unwrap();
    assert_eq!(
        hers.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EntryKind::Hold, EntryKind::Debit, EntryKind::Refund]
    );
    assert!(hers
        .iter()
        .all(|e| e.member_id.as_deref() == Some(ann.id.as_str())));
    let all = f
        .store
        .ledger_entries(&f.account, None, 0, 100)
        .await
        .unwrap();
    assert!(all.len() > hers.len());
    let jobs = f
        .store
        .list_member_jobs(&f.account, Some(&ann.id), &[], i64::MAX, 100)
        .await
        .unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [mine.id.as_str()]
    );
    let every = f
        .store
        .list_jobs(&f.account, &[], i64::MAX, 100)
        .await
        .unwrap();
    assert_eq!(every.len(), 2);
    assert!(every
        .iter()
        .any(|j| j.id == theirs.id && j.member_id.is_none()));
    f.assert_verified().await;
}

on_both_backends!(
    members_take_the_seats_and_no_more,
    removal_revokes_keys_and_the_last_owner_stays,
    a_members_jobs_and_entries_are_filed_under_it,
);
