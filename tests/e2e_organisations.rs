//! End to end: organisations and seats (docs/api.md, "Organisations and seats"). A
//! team of three shares one account's credits on a plan with three seats; each
//! member's jobs and ledger entries are its own in the filters; a fourth member is
//! refused SEATS_EXHAUSTED with nothing written, until a seat is bought (charged at
//! the catalogue's price, once per payment_ref); a plain member cannot manage
//! members; a removed member's key is refused at its very next call; the last owner
//! stays. The CLI's `kinema members` drives part of it.

mod common;

use common::commerce::amounts;
use common::*;
use kinema_proto::v1 as pb;
use tonic::Code;

/// The built-in catalogue's plan with three seats and extra seats at 900.
const TEAM_PLAN: &str = "pro-monthly";
const SEAT_PRICE: i64 = 900;

async fn add(
    by: &Client,
    account: &str,
    name: &str,
    role: pb::MemberRole,
) -> Result<pb::AddMemberResponse, tonic::Status> {
    by.orgs()
        .add_member(pb::AddMemberRequest {
            account_id: account.into(),
            name: name.into(),
            role: role as i32,
            key_name: format!("{name}'s laptop"),
        })
        .await
        .map(|r| r.into_inner())
}

async fn members(by: &Client, account: &str) -> pb::ListMembersResponse {
    by.orgs()
        .list_members(pb::ListMembersRequest {
            account_id: account.into(),
            include_removed: false,
        })
        .await
        .unwrap_or_else(|s| panic!("ListMembers: {s:?}"))
        .into_inner()
}

async fn jobs_of(by: &Client, account: &str, member: &str) -> Vec<pb::Job> {
    by.jobs()
        .list_jobs(pb::ListJobsRequest {
            account_id: account.into(),
            page_size: 100,
            member_id: member.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("ListJobs: {s:?}"))
        .into_inner()
        .jobs
}

async fn entries_of_member(by: &Client, account: &str, member: &str) -> Vec<pb::LedgerEntry> {
    by.billing()
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            account_id: account.into(),
            member_id: member.into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("ListLedgerEntries: {s:?}"))
        .into_inner()
        .entries
}

fn seats(s: &Option<pb::Seats>) -> (u32, u32) {
    let s = s.as_ref().expect("seats");
    (s.used, s.seats)
}

struct Member {
    id: String,
    client: Client,
}

fn member(server_client: &Client, added: &pb::AddMemberResponse) -> Member {
    let m = added.member.as_ref().expect("member");
    let key = added.key.as_ref().expect("key");
    assert_eq!(key.member_id, m.id, "the key is bound to its member");
    assert_eq!(key.role, pb::KeyRole::Account as i32);
    assert!(added.secret.starts_with("kin_"));
    Member {
        id: m.id.clone(),
        client: server_client.with_key(Some(&added.secret)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_shares_one_account_up_to_its_seats() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let platform = admin.with_key(Some(&admin.create_key(KeyRole::Platform, "").await));
    let account = platform.create_account("acme-studio").await;

    // Without a plan the account has one seat: its owner's.
    let alice = add(
        &platform,
        &account,
        "alice@acme.test",
        pb::MemberRole::Owner,
    )
    .await
    .expect("the owner takes the one seat");
    assert_eq!(seats(&alice.seats), (1, 1));
    let alice = member(&admin, &alice);
    let refused = expect_err(
        "a second member without a plan",
        add(
            &alice.client,
            &account,
            "bob@acme.test",
            pb::MemberRole::Admin,
        )
        .await,
    );
    assert_status(&refused, Code::FailedPrecondition, "SEATS_EXHAUSTED");

    // The plan brings three seats; the owner adds an admin, the admin a member.
    let plan = platform
        .billing()
        .subscribe(pb::SubscribeRequest {
            account_id: account.clone(),
            plan_id: TEAM_PLAN.into(),
            payment_ref: "pay-plan-1".into(),
        })
        .await
        .expect("Subscribe")
        .into_inner();
    let credits = plan.lots.iter().map(|l| l.original).sum::<i64>();
    assert!(credits > 0);
    let bob = add(
        &alice.client,
        &account,
        "bob@acme.test",
        pb::MemberRole::Admin,
    )
    .await
    .expect("the owner adds an admin");
    let bob = member(&admin, &bob);
    let carol = add(
        &bob.client,
        &account,
        "carol@acme.test",
        pb::MemberRole::Member,
    )
    .await
    .expect("an admin adds a member");
    assert_eq!(seats(&carol.seats), (3, 3));
    let carol = member(&admin, &carol);

    // A plain member manages no one; an admin makes no owners.
    let denied = expect_err(
        "a plain member adding a member",
        add(
            &carol.client,
            &account,
            "eve@acme.test",
            pb::MemberRole::Member,
        )
        .await,
    );
    assert_status(&denied, Code::PermissionDenied, "ROLE");
    let denied = expect_err(
        "an admin making an owner",
        bob.client
            .orgs()
            .update_member_role(pb::UpdateMemberRoleRequest {
                account_id: account.clone(),
                member_id: carol.id.clone(),
                role: pb::MemberRole::Owner as i32,
            })
            .await,
    );
    assert_status(&denied, Code::PermissionDenied, "ROLE");

    // A fourth over the seats: refused, and nothing written (no member, no key).
    let keys_before = admin
        .admin()
        .list_api_keys(pb::ListApiKeysRequest {
            account_id: account.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys
        .len();
    let refused = expect_err(
        "a fourth member over three seats",
        add(
            &alice.client,
            &account,
            "dave@acme.test",
            pb::MemberRole::Member,
        )
        .await,
    );
    assert_status(&refused, Code::FailedPrecondition, "SEATS_EXHAUSTED");
    let listed = members(&admin, &account).await;
    assert_eq!(listed.members.len(), 3);
    assert_eq!(seats(&listed.seats), (3, 3));
    let keys_after = admin
        .admin()
        .list_api_keys(pb::ListApiKeysRequest {
            account_id: account.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys
        .len();
    assert_eq!(
        keys_after, keys_before,
        "no key was minted for the refused member"
    );

    // Each member submits a job on the account's credits (naming no account: the
    // key's own), and the one balance pays for all three.
    let team = [&alice, &bob, &carol];
    let mut finished = Vec::new();
    for m in team {
        let job = m.client.create_job(job_request("", 32, 32, 3, 8, 2)).await;
        assert_eq!(job.account_id, account);
        assert_eq!(job.member_id, m.id, "the job records who submitted it");
        let (_, job) = m.client.wait_terminal("", &job.id).await;
        assert_eq!(state(&job), JobState::Succeeded, "{}", describe_job(&job));
        finished.push(job);
    }
    let spent: i64 = finished.iter().map(|j| j.debited_credits).sum();
    assert!(spent > 0);
    for m in team {
        assert_eq!(
            m.client.balance("").await.available,
            credits - spent,
            "every member sees the one account's balance"
        );
    }

    // Per member: ListJobs and the ledger show each one's own.
    for (m, job) in team.iter().zip(&finished) {
        let jobs = jobs_of(&admin, &account, &m.id).await;
        assert_eq!(
            jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            [job.id.as_str()]
        );
        let entries = entries_of_member(&m.client, &account, &m.id).await;
        assert_eq!(
            kinds(&entries),
            [LedgerEntryKind::Hold, LedgerEntryKind::Debit],
            "{entries:?}"
        );
        assert!(entries
            .iter()
            .all(|e| e.job_id == job.id && e.member_id == m.id));
    }
    assert_eq!(jobs_of(&admin, &account, "").await.len(), 3);

    // Buying a seat charges the catalogue's price once per payment_ref, and lets the
    // fourth in.
    let bought = platform
        .orgs()
        .buy_seats(pb::BuySeatsRequest {
            account_id: account.clone(),
            seats: 1,
            payment_ref: "pay-seat-1".into(),
        })
        .await
        .expect("BuySeats")
        .into_inner();
    assert_eq!(seats(&bought.seats), (3, 4));
    let sub = bought.subscription.expect("subscription");
    assert!(sub.created);
    assert_eq!(amounts(&sub.events, "CHARGE"), [SEAT_PRICE]);
    assert_eq!(sub.events[0].payment_ref, "pay-seat-1");
    assert_eq!(sub.current.expect("plan").extra_seats, 1);
    let again = platform
        .orgs()
        .buy_seats(pb::BuySeatsRequest {
            account_id: account.clone(),
            seats: 1,
            payment_ref: "pay-seat-1".into(),
        })
        .await
        .expect("BuySeats again")
        .into_inner();
    assert!(!again.subscription.expect("subscription").created);
    assert_eq!(
        seats(&again.seats),
        (3, 4),
        "the same payment is one purchase"
    );
    let charges = amounts(&admin.billing_events(&account).await, "CHARGE");
    assert_eq!(charges.iter().filter(|c| **c == SEAT_PRICE).count(), 1);
    let denied = expect_err(
        "an account key buying seats",
        alice
            .client
            .orgs()
            .buy_seats(pb::BuySeatsRequest {
                account_id: account.clone(),
                seats: 1,
                payment_ref: "pay-seat-2".into(),
            })
            .await,
    );
    assert_status(&denied, Code::PermissionDenied, "ROLE");
    let dave = add(
        &bob.client,
        &account,
        "dave@acme.test",
        pb::MemberRole::Member,
    )
    .await
    .expect("the bought seat takes the fourth");
    assert_eq!(seats(&dave.seats), (4, 4));

    // Only an owner asks for the account's deletion.
    let denied = expect_err(
        "a plain member deleting the account",
        carol
            .client
            .admin()
            .delete_account(pb::DeleteAccountRequest {
                account_id: String::new(),
            })
            .await,
    );
    assert_status(&denied, Code::PermissionDenied, "ROLE");

    // Removing a member revokes its key at once: its next call is UNAUTHENTICATED.
    carol.client.balance("").await;
    let removed = bob
        .client
        .orgs()
        .remove_member(pb::RemoveMemberRequest {
            account_id: account.clone(),
            member_id: carol.id.clone(),
        })
        .await
        .expect("RemoveMember")
        .into_inner();
    assert_eq!(removed.revoked_keys, 1);
    assert_eq!(seats(&removed.seats), (3, 4));
    let gone = expect_err(
        "a removed member's call",
        carol
            .client
            .billing()
            .get_balance(pb::GetBalanceRequest {
                account_id: String::new(),
            })
            .await,
    );
    assert_status(&gone, Code::Unauthenticated, "API_KEY_INVALID");
    let gone = carol
        .client
        .create_job_raw(job_request("", 32, 32, 3, 8, 2))
        .await
        .expect_err("a removed member submits nothing");
    assert_eq!(gone.code(), Code::Unauthenticated);
    // Its jobs stay the account's, still filed under it.
    assert_eq!(jobs_of(&admin, &account, &carol.id).await.len(), 1);

    // The last owner stays: neither removed nor demoted.
    let last = expect_err(
        "removing the last owner",
        platform
            .orgs()
            .remove_member(pb::RemoveMemberRequest {
                account_id: account.clone(),
                member_id: alice.id.clone(),
            })
            .await,
    );
    assert_status(&last, Code::FailedPrecondition, "LAST_OWNER");
    let last = expect_err(
        "demoting the last owner",
        alice
            .client
            .orgs()
            .update_member_role(pb::UpdateMemberRoleRequest {
                account_id: account.clone(),
                member_id: alice.id.clone(),
                role: pb::MemberRole::Admin as i32,
            })
            .await,
    );
    assert_status(&last, Code::FailedPrecondition, "LAST_OWNER");

    // Another account's member is not found from here.
    let other = platform.create_account("elsewhere").await;
    let not_found = expect_err(
        "another account's member",
        platform
            .orgs()
            .remove_member(pb::RemoveMemberRequest {
                account_id: other,
                member_id: bob.id.clone(),
            })
            .await,
    );
    assert_status(&not_found, Code::NotFound, "MEMBER_NOT_FOUND");

    assert_ledger_verifies(&server.data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_lists_changes_and_removes_members() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("cli-team").await;
    let (ok, out) = server
        .cli(&[
            "--account",
            &account,
            "members",
            "add",
            "olga@team.test",
            "--role",
            "owner",
        ])
        .await;
    assert!(ok, "{out}");
    assert!(out.contains("secret     kin_"), "{out}");
    assert!(out.contains("seats      1 of 1 taken"), "{out}");
    let (ok, out) = server
        .cli(&["--account", &account, "members", "add", "pat@team.test"])
        .await;
    assert!(!ok, "a second member without a plan: {out}");
    assert!(
        out.contains("SEATS_EXHAUSTED") || out.contains("seats"),
        "{out}"
    );

    admin
        .subscribe(&account, TEAM_PLAN)
        .await
        .expect("Subscribe");
    let (ok, out) = server
        .cli(&["--account", &account, "members", "add", "pat@team.test"])
        .await;
    assert!(ok, "{out}");
    let pat = members(&admin, &account)
        .await
        .members
        .into_iter()
        .find(|m| m.name == "pat@team.test")
        .expect("pat listed");
    assert_eq!(pat.role, pb::MemberRole::Member as i32);
    let (ok, out) = server
        .cli(&["--account", &account, "members", "role", &pat.id, "admin"])
        .await;
    assert!(ok && out.contains("admin"), "{out}");
    let (ok, out) = server
        .cli(&["--account", &account, "members", "list"])
        .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("olga@team.test") && out.contains("pat@team.test"),
        "{out}"
    );
    assert!(out.contains("seats      2 of 3 taken"), "{out}");
    let (ok, out) = server
        .cli(&["--account", &account, "members", "remove", &pat.id])
        .await;
    assert!(ok && out.contains("revoked    1 keys"), "{out}");
    let (ok, out) = server
        .cli(&["--account", &account, "members", "list", "--all"])
        .await;
    assert!(ok && out.contains("REMOVED"), "{out}");
}
