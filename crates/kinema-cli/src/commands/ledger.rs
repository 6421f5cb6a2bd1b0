use anyhow::{bail, Context};
use kinema_store::{Store, StorePolicy};

use crate::cli::{LedgerCommand, VerifyArgs};

pub async fn run(cmd: LedgerCommand) -> anyhow::Result<()> {
    match cmd {
        LedgerCommand::Verify(args) => verify(args).await,
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            let path = args.data_dir.join(kinema_server::DATABASE_FILE);
            format!("sqlite://{}", path.display())
        }
    };
    let policy = StorePolicy {
        refund_on_cancel: !args.no_refund_on_cancel,
        ..StorePolicy::default()
    };
    let store = Store::open_read_only(&url, policy)
        .await
        .with_context(|| format!("opening {}", redact(&url)))?;
    let report = store
        .verify_ledger(args.only_account.as_deref())
        .await
        .context("reading the ledger")?;
    store.close().await;
    println!(
        "checked {} entries, {} lots, {} jobs, {} accounts",
        report.entries_checked,
        report.lots.len(),
        report.jobs.len(),
        report.accounts.len()
    );
    if report.is_clean() {
        println!("ledger is consistent");
        return Ok(());
    }
    for p in &report.problems {
        println!("problem: {p}");
    }
    bail!(
        "the ledger has {} problem(s); each is listed above",
        report.problems.len()
    )
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}
