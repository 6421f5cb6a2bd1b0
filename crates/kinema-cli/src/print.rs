//! Human-readable output of the CLI.

use kinema_proto::v1 as pb;
use tonic_types::StatusExt;

/// `error: a: b: c`, and for gRPC statuses the code and ErrorInfo reason. Many
/// errors both show their cause in their message and return it as `source()`; a cause
/// the message before it already ends with is not repeated.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let text = match cause.downcast_ref::<tonic::Status>() {
            Some(status) => status_text(status),
            None => cause.to_string(),
        };
        if !previous.is_empty() && previous.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        previous = text;
    }
    out
}

fn status_text(status: &tonic::Status) -> String {
    let details = status.get_error_details();
    let reason = details
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default();
    let mut text = format!("{:?} {} ({})", status.code(), status.message(), reason);
    if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
        text.push_str(&format!(" retry in {:.1} s", delay.as_secs_f64()));
    }
    text
}

#[cfg(test)]
mod error_chain_tests {
    use super::error_chain;

    /// Like a thiserror `#[error("store: {0}")] Store(#[from] io::Error)` variant.
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "store: {}", self.0)
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::from(Outer(io)).context("starting");
        assert_eq!(error_chain(&e), "starting: store: disk full");
    }

    #[test]
    fn causes_not_in_the_message_are_joined() {
        let e = anyhow::anyhow!("disk full")
            .context("writing job")
            .context("starting");
        assert_eq!(error_chain(&e), "starting: writing job: disk full");
    }
}

pub fn time(ts: &Option<prost_types::Timestamp>) -> String {
    match ts {
        Some(t) => {
            let secs = t.seconds;
            let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            let (y, m, d) = civil_from_days(days);
            format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            )
        }
        None => "-".into(),
    }
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (era * 400 + yoe + i64::from(m <= 2), m, d)
}

pub fn state(s: i32) -> String {
    pb::JobState::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("JOB_STATE_").to_string())
        .unwrap_or_else(|_| s.to_string())
}

pub fn priority(p: i32) -> String {
    pb::JobPriority::try_from(p)
        .map(|p| {
            p.as_str_name()
                .trim_start_matches("JOB_PRIORITY_")
                .to_string()
        })
        .unwrap_or_else(|_| p.to_string())
}

pub fn stage(s: i32) -> String {
    pb::JobStage::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("JOB_STAGE_").to_string())
        .unwrap_or_else(|_| s.to_string())
}

pub fn job(j: &pb::Job) {
    println!("job        {}", j.id);
    println!("account    {}", j.account_id);
    println!("state      {}", state(j.state));
    if let Some(p) = &j.progress {
        println!(
            "progress   {} step {}/{} ({:.0}%)",
            stage(j.stage),
            p.step,
            p.total_steps,
            p.fraction * 100.0
        );
    }
    if let Some(q) = j.queue_position {
        println!("queue      {q} ahead");
    }
    println!("priority   {}", priority(j.priority));
    println!(
        "spec       {} {}x{}, {} frames @ {} fps, {} steps, guidance {}, seed {}",
        j.model, j.width, j.height, j.num_frames, j.fps, j.steps, j.guidance_scale, j.seed
    );
    println!("prompt     {}", j.prompt);
    if let Some(g) = j.guidance_scale_2 {
        println!("guidance 2 {g}");
    }
    for (what, image) in [("image", &j.image), ("last image", &j.last_image)] {
        if let Some(i) = image {
            println!("{what:<10} {}x{}, sha256 {}", i.width, i.height, i.sha256);
        }
    }
    println!(
        "credits    quoted {}, debited {}, refunded {}",
        j.quoted_credits, j.debited_credits, j.refunded_credits
    );
    if let Some(f) = &j.failure {
        println!(
            "failure    {} {} (retryable: {})",
            f.code, f.message, f.retryable
        );
    }
    for a in &j.artifacts {
        let kind = pb::ArtifactKind::try_from(a.kind)
            .map(|k| k.as_str_name())
            .unwrap_or("?");
        println!(
            "artifact   {} {} {} bytes sha256 {} expires {}",
            kind.trim_start_matches("ARTIFACT_KIND_"),
            a.mime,
            a.bytes,
            a.sha256,
            time(&a.expires_at)
        );
    }
    println!("created    {}", time(&j.created_at));
    if j.started_at.is_some() {
        println!("started    {}", time(&j.started_at));
    }
    if j.finished_at.is_some() {
        println!("finished   {}", time(&j.finished_at));
    }
}

pub fn balance(b: &pb::Balance) {
    println!(
        "balance    {} available ({} total, {} held)",
        b.available, b.total, b.held
    );
    for l in &b.lots {
        let expires = if l.expires_at.is_some() {
            time(&l.expires_at)
        } else {
            "never".into()
        };
        println!(
            "  lot {:<6} {:<12} {:>8} of {:<8} expires {}",
            l.id, l.source, l.remaining, l.original, expires
        );
    }
}

pub fn entry(e: &pb::LedgerEntry) {
    let kind = pb::LedgerEntryKind::try_from(e.kind)
        .map(|k| k.as_str_name())
        .unwrap_or("?");
    let lots: Vec<String> = e
        .allocations
        .iter()
        .map(|a| format!("{}:{}", a.lot_id, a.amount))
        .collect();
    println!(
        "{:<6} {} {:<20} {:>8}  balance {:>8} held {:>6}  {} {} {}",
        e.id,
        time(&e.created_at),
        kind.trim_start_matches("LEDGER_ENTRY_KIND_"),
        e.amount,
        e.balance_after,
        e.held_after,
        e.job_id,
        lots.join(","),
        e.actor
    );
}

pub fn money(m: &Option<pb::Money>) -> String {
    match m {
        Some(m) => {
            let sign = if m.minor < 0 { "-" } else { "" };
            let abs = m.minor.unsigned_abs();
            format!("{sign}{}.{:02} {}", abs / 100, abs % 100, m.currency)
        }
        None => "-".into(),
    }
}

pub fn account(a: &pb::Account) {
    let status = pb::AccountStatus::try_from(a.status)
        .map(|s| s.as_str_name().trim_start_matches("ACCOUNT_STATUS_"))
        .unwrap_or("?");
    let billing = pb::BillingMode::try_from(a.billing)
        .map(|s| s.as_str_name().trim_start_matches("BILLING_MODE_"))
        .unwrap_or("?");
    println!("account    {}", a.id);
    println!("name       {}", a.name);
    if a.status_reason.is_empty() {
        println!("status     {status}");
    } else {
        println!("status     {status} ({})", a.status_reason);
    }
    println!("billing    {billing}");
    if !a.external_id.is_empty() {
        println!("external   {}", a.external_id);
    }
    println!("created    {}", time(&a.created_at));
    if a.trial_started_at.is_some() {
        println!(
            "trial      {} .. {}",
            time(&a.trial_started_at),
            time(&a.trial_ends_at)
        );
    }
    if let Some(p) = &a.postpaid {
        let phase = pb::PostpaidPhase::try_from(p.phase)
            .map(|s| s.as_str_name().trim_start_matches("POSTPAID_PHASE_"))
            .unwrap_or("?");
        println!("money      {} ({phase})", money(&p.balance));
        if p.suspends_at.is_some() {
            println!("suspends   {}", time(&p.suspends_at));
        }
        if p.terminates_at.is_some() {
            println!("terminates {}", time(&p.terminates_at));
        }
    }
}

pub fn billing_event(e: &pb::BillingEvent) {
    println!(
        "{:<6} {} {:<24} {:>14}  {} {} {}",
        e.id,
        time(&e.effective_at),
        e.kind,
        if e.amount.is_some() {
            money(&e.amount)
        } else {
            String::new()
        },
        e.plan_id,
        e.job_id,
        e.payment_ref
    );
}

pub fn subscription(s: &pb::SubscriptionResponse) {
    match &s.current {
        Some(c) => {
            println!("plan       {} ({})", c.plan_id, c.id);
            println!(
                "period     {} .. {} (period {}), paid {}",
                time(&c.period_start),
                time(&c.period_end),
                c.period,
                money(&c.paid)
            );
            match &c.cancellation {
                Some(x) => println!("ends       {} ({})", time(&x.ends_at), x.kind),
                None => println!("renews     {}", time(&c.period_end)),
            }
        }
        None => println!("plan       none"),
    }
    if let Some(q) = &s.queued {
        println!(
            "queued     {} ({}), paid {}, starts {}",
            q.plan_id,
            q.id,
            money(&q.paid),
            time(&q.starts_at)
        );
    }
    for e in &s.events {
        print!("  ");
        billing_event(e);
    }
}
