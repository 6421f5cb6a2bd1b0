//! Store and engine types to their `kinema.v1` messages.

use kinema_engine::{JobEvent, JobEventKind, ModelManifest};
use kinema_proto::v1 as pb;
use kinema_store as store;

pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn millis(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos) / 1_000_000)
}

pub fn job_state(s: store::JobState) -> pb::JobState {
    match s {
        store::JobState::Queued => pb::JobState::Queued,
        store::JobState::Running => pb::JobState::Running,
        store::JobState::Succeeded => pb::JobState::Succeeded,
        store::JobState::Failed => pb::JobState::Failed,
        store::JobState::Cancelled => pb::JobState::Cancelled,
    }
}

pub fn store_job_state(s: pb::JobState) -> Option<store::JobState> {
    match s {
        pb::JobState::Unspecified => None,
        pb::JobState::Queued => Some(store::JobState::Queued),
        pb::JobState::Running => Some(store::JobState::Running),
        pb::JobState::Succeeded => Some(store::JobState::Succeeded),
        pb::JobState::Failed => Some(store::JobState::Failed),
        pb::JobState::Cancelled => Some(store::JobState::Cancelled),
    }
}

fn priority(p: store::JobPriority) -> pb::JobPriority {
    match p {
        store::JobPriority::Low => pb::JobPriority::Low,
        store::JobPriority::Normal => pb::JobPriority::Normal,
        store::JobPriority::High => pb::JobPriority::High,
    }
}

/// A request's priority; unset is NORMAL, an unknown value `None`.
pub fn store_priority(p: i32) -> Option<store::JobPriority> {
    match pb::JobPriority::try_from(p).ok()? {
        pb::JobPriority::Unspecified | pb::JobPriority::Normal => Some(store::JobPriority::Normal),
        pb::JobPriority::Low => Some(store::JobPriority::Low),
        pb::JobPriority::High => Some(store::JobPriority::High),
    }
}

pub fn stage(s: store::Stage) -> pb::JobStage {
    match s {
        store::Stage::EncodingText => pb::JobStage::EncodingText,
        store::Stage::Denoising => pb::JobStage::Denoising,
        store::Stage::Decoding => pb::JobStage::Decoding,
        store::Stage::EncodingVideo => pb::JobStage::EncodingVideo,
        store::Stage::Storing => pb::JobStage::Storing,
    }
}

pub fn artifact_kind(k: store::ArtifactKind) -> pb::ArtifactKind {
    match k {
        store::ArtifactKind::Video => pb::ArtifactKind::Video,
        store::ArtifactKind::Poster => pb::ArtifactKind::Poster,
        store::ArtifactKind::Preview => pb::ArtifactKind::Preview,
    }
}

/// Whole-job progress: text encoding 5%, denoising 80% by step, the rest after.
fn progress_fraction(job: &store::Job) -> f32 {
    let denoise = if job.progress_total == 0 {
        0.0
    } else {
        job.progress_step as f32 / job.progress_total as f32
    };
    match (job.state, job.stage) {
        (store::JobState::Succeeded, _) => 1.0,
        (store::JobState::Queued, _) | (_, None) => 0.0,
        (_, Some(store::Stage::EncodingText)) => 0.0,
        (_, Some(store::Stage::Denoising)) => 0.05 + 0.8 * denoise,
        (_, Some(store::Stage::Decoding)) => 0.85,
        (_, Some(store::Stage::EncodingVideo)) => 0.9,
        (_, Some(store::Stage::Storing)) => 0.97,
    }
}

/// An input image as GetJob shows it: its stored PNG's hash and size, never the bytes.
pub fn input_image_info(i: &kinema_engine::InputImage) -> pb::InputImageInfo {
    pb::InputImageInfo {
        sha256: i.sha256.clone(),
        width: i.width,
        height: i.height,
    }
}

pub fn job(j: &store::Job) -> pb::Job {
    let ts = |ms: Option<i64>| ms.map(timestamp);
    let p = &j.params;
    pb::Job {
        id: j.id.clone(),
        account_id: j.account_id.clone(),
        external_id: j.external_id.clone().unwrap_or_default(),
        state: job_state(j.state) as i32,
        stage: j.stage.map(stage).unwrap_or(pb::JobStage::Unspecified) as i32,
        progress: Some(pb::JobProgress {
            step: j.progress_step,
            total_steps: j.progress_total,
            fraction: progress_fraction(j),
        }),
        queue_position: j.queue_position,
        quoted_credits: j.quoted,
        debited_credits: j.debited,
        refunded_credits: j.refunded,
        failure: j.failure.as_ref().map(|f| pb::JobFailure {
            code: f.code.clone(),
            message: f.message.clone(),
            retryable: f.retryable,
        }),
        artifacts: j
            .artifacts
            .iter()
            .map(|a| pb::Artifact {
                kind: artifact_kind(a.kind) as i32,
                mime: a.mime.clone(),
                bytes: a.bytes,
                sha256: a.sha256.clone(),
                expires_at: Some(timestamp(a.expires_at)),
            })
            .collect(),
        created_at: Some(timestamp(j.created_at)),
        started_at: ts(j.started_at),
        finished_at: ts(j.finished_at),
        usage: Some(pb::JobUsage {
            device: j.usage.device.clone(),
            attempts: j.attempts,
            encode_text_ms: j.usage.encode_text_ms,
            denoise_ms: j.usage.denoise_ms,
            decode_ms: j.usage.decode_ms,
            encode_video_ms: j.usage.encode_video_ms,
            store_ms: j.usage.store_ms,
            total_ms: j.usage.total_ms,
            scheduler_gap_us: j.usage.scheduler_gap_us,
            batch_size: j.usage.batch_size,
            encode_text_peak_bytes: j.usage.encode_text_peak_bytes,
            denoise_peak_bytes: j.usage.denoise_peak_bytes,
            decode_peak_bytes: j.usage.decode_peak_bytes,
        }),
        model: p.model.clone(),
        prompt: p.prompt.clone(),
        negative_prompt: p.negative_prompt.clone(),
        width: p.width,
        height: p.height,
        num_frames: p.num_frames,
        fps: p.fps,
        steps: p.steps,
        guidance_scale: p.guidance_scale,
        guidance_scale_2: p.guidance_scale_2,
        seed: p.seed,
        output_format: pb::OutputFormat::Unspecified as i32,
        output: p.output.clone(),
        preview: p.preview.clone().unwrap_or_default(),
        image: p.image.as_ref().map(input_image_info),
        last_image: p.last_image.as_ref().map(input_image_info),
        prompt_expires_at: ts(j.prompt_expires_at),
        prompt_purged_at: ts(j.prompt_purged_at),
        member_id: j.member_id.clone().unwrap_or_default(),
        idempotency_key: j.idempotency_key.clone().unwrap_or_default(),
        metadata: j.metadata.clone(),
        cancel_requested: j.cancel_requested,
        priority: priority(j.priority) as i32,
        price_minor: j.price.map(|p| p.minor).unwrap_or_default(),
        price_currency: j
            .price
            .map(|p| p.currency.as_str().to_string())
            .unwrap_or_default(),
        charged_minor: j.charged_minor,
        callback_url: j.callback_url.clone(),
        callbacks: Vec::new(),
    }
}

/// One callback delivery, as GetJob shows it.
pub fn callback_delivery(d: &store::CallbackDelivery) -> pb::CallbackDelivery {
    let state = match d.state {
        store::CallbackState::Pending => pb::CallbackDeliveryState::Pending,
        store::CallbackState::Delivered => pb::CallbackDeliveryState::Delivered,
        store::CallbackState::Failed => pb::CallbackDeliveryState::Failed,
    };
    pb::CallbackDelivery {
        event_id: d.id.clone(),
        event: d.event.as_str().to_string(),
        state: state as i32,
        attempts: u32::try_from(d.attempts).unwrap_or(u32::MAX),
        last_status: d
            .last_status
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or_default(),
        last_error: d.last_error.clone(),
        created_at: Some(timestamp(d.created_at)),
        next_attempt_at: (d.state == store::CallbackState::Pending)
            .then(|| timestamp(d.next_attempt_at)),
        delivered_at: d.delivered_at.map(timestamp),
        failed_at: d.failed_at.map(timestamp),
    }
}

pub fn job_event(e: &JobEvent) -> pb::JobEvent {
    let kind = match e.kind {
        JobEventKind::StateChanged => pb::JobEventKind::StateChanged,
        JobEventKind::StageChanged => pb::JobEventKind::StageChanged,
        JobEventKind::Progress => pb::JobEventKind::Progress,
    };
    pb::JobEvent {
        kind: kind as i32,
        job: Some(job(&e.job)),
        time: Some(timestamp(e.at_ms)),
    }
}

pub fn snapshot_event(j: &store::Job, at_ms: i64) -> pb::JobEvent {
    pb::JobEvent {
        kind: pb::JobEventKind::Snapshot as i32,
        job: Some(job(j)),
        time: Some(timestamp(at_ms)),
    }
}

/// Every video output this server's FFmpeg can encode, in their text form (probed
/// once).
pub fn supported_outputs() -> Vec<String> {
    static OUTPUTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    OUTPUTS
        .get_or_init(|| {
            kinema_media::supported_outputs()
                .iter()
                .map(|s| s.output.to_string())
                .collect()
        })
        .clone()
}

/// A model as ListModels shows it; `images`: the server's caps on input images, shown
/// for models that take one.
pub fn model(m: &ModelManifest, images: &kinema_engine::ImageLimits) -> pb::ModelInfo {
    let takes_image = m.takes_image();
    let l = &m.limits;
    let d = &m.defaults;
    pb::ModelInfo {
        id: m.id.clone(),
        family: m.family.clone(),
        description: m.description.clone(),
        capabilities: m.capabilities.clone(),
        limits: Some(pb::ModelLimits {
            min_width: l.min_width,
            max_width: l.max_width,
            min_height: l.min_height,
            max_height: l.max_height,
            size_multiple: l.size_multiple,
            min_frames: l.min_frames,
            max_frames: l.max_frames,
            frames_modulo: l.frames_modulo,
            min_steps: l.min_steps,
            max_steps: l.max_steps,
            max_fps: l.max_fps,
            max_prompt_chars: l.max_prompt_chars,
            max_image_bytes: if takes_image {
                images.max_bytes as u64
            } else {
                0
            },
            max_image_pixels: if takes_image { images.max_pixels } else { 0 },
        }),
        defaults: Some(pb::ModelDefaults {
            width: d.width,
            height: d.height,
            num_frames: d.num_frames,
            fps: d.fps,
            steps: d.steps,
            guidance_scale: d.guidance_scale,
            flow_shift: d.flow_shift,
            output: d.output.to_string(),
            preview: d.preview.map(|p| p.to_string()).unwrap_or_default(),
        }),
        prices: m
            .price
            .tiers
            .iter()
            .map(|t| pb::TierPrice {
                tier: t.tier.clone(),
                max_side: t.max_side,
                credits_per_second: t.credits_per_second,
            })
            .collect(),
        memory_bytes: m.memory_bytes,
    }
}

pub fn lot(l: &store::Lot) -> pb::Lot {
    pb::Lot {
        id: l.id,
        source: l.source.clone(),
        original: l.original,
        remaining: l.remaining,
        expires_at: l.expires_at.map(timestamp),
        created_at: Some(timestamp(l.created_at)),
    }
}

pub fn balance(account_id: &str, b: &store::Balance) -> pb::Balance {
    pb::Balance {
        account_id: account_id.to_string(),
        total: b.total,
        held: b.held,
        available: b.available,
        lots: b.lots.iter().map(lot).collect(),
    }
}

fn entry_kind(k: store::EntryKind) -> pb::LedgerEntryKind {
    use pb::LedgerEntryKind as P;
    use store::EntryKind as S;
    match k {
        S::Grant => P::Grant,
        S::Purchase => P::Purchase,
        S::Trial => P::Trial,
        S::SubscriptionGrant => P::SubscriptionGrant,
        S::Hold => P::Hold,
        S::Release => P::Release,
        S::Debit => P::Debit,
        S::Refund => P::Refund,
        S::Expire => P::Expire,
        S::Forfeit => P::Forfeit,
        S::Adjust => P::Adjust,
    }
}

pub fn entry(e: &store::LedgerEntry) -> pb::LedgerEntry {
    pb::LedgerEntry {
        id: e.id,
        account_id: e.account_id.clone(),
        kind: entry_kind(e.kind) as i32,
        amount: e.amount,
        allocations: e
            .allocations
            .iter()
            .map(|a| pb::LotAllocation {
                lot_id: a.lot_id,
                amount: a.amount,
            })
            .collect(),
        job_id: e.job_id.clone().unwrap_or_default(),
        actor: e.actor.clone(),
        balance_after: e.balance_after,
        held_after: e.held_after,
        created_at: Some(timestamp(e.created_at)),
        memo: e.memo.clone(),
        member_id: e.member_id.clone().unwrap_or_default(),
    }
}

fn account_status(s: store::AccountStatus) -> pb::AccountStatus {
    match s {
        store::AccountStatus::Active => pb::AccountStatus::Active,
        store::AccountStatus::Suspended => pb::AccountStatus::Suspended,
        store::AccountStatus::Terminated => pb::AccountStatus::Terminated,
        store::AccountStatus::Deleted => pb::AccountStatus::Deleted,
    }
}

/// An account as stored (no postpaid or trial detail).
pub fn account(a: &store::Account) -> pb::Account {
    pb::Account {
        id: a.id.clone(),
        name: a.name.clone(),
        status: account_status(a.status) as i32,
        created_at: Some(timestamp(a.created_at)),
        external_id: a.external_id.clone().unwrap_or_default(),
        billing: match a.billing {
            store::BillingMode::Prepaid => pb::BillingMode::Prepaid,
            store::BillingMode::Postpaid => pb::BillingMode::Postpaid,
        } as i32,
        status_reason: a.status_reason.clone(),
        status_changed_at: a.status_changed_at.map(timestamp),
        postpaid: None,
        trial_started_at: None,
        trial_ends_at: None,
    }
}

/// An account as of now: the status the clock gives it, its postpaid balance, its trial.
pub fn account_view(v: &store::AccountView) -> pb::Account {
    let mut a = account(&v.account);
    a.status = account_status(v.status) as i32;
    a.postpaid = v.postpaid.as_ref().map(|(pp, st)| postpaid(pp, st));
    if let Some(t) = &v.trial {
        a.trial_started_at = Some(timestamp(t.started_at));
        a.trial_ends_at = Some(timestamp(t.ends_at));
    }
    a
}

pub fn money(m: &kinema_ledger::Money) -> pb::Money {
    pb::Money {
        minor: m.minor,
        currency: m.currency.as_str().to_string(),
    }
}

pub fn postpaid(
    pp: &kinema_ledger::PostpaidAccount,
    status: &kinema_ledger::PostpaidStatus,
) -> pb::PostpaidStatus {
    use kinema_ledger::PostpaidStatus as S;
    let mut out = pb::PostpaidStatus {
        balance: Some(money(&pp.balance)),
        arrears_since: pp.arrears_since.map(timestamp),
        terminated_at: pp.terminated_at.map(timestamp),
        ..Default::default()
    };
    let phase = match *status {
        S::Active => pb::PostpaidPhase::Active,
        S::InArrears { suspends_at, .. } => {
            out.suspends_at = Some(timestamp(suspends_at));
            pb::PostpaidPhase::InArrears
        }
        S::Suspended { terminates_at, .. } => {
            out.terminates_at = Some(timestamp(terminates_at));
            pb::PostpaidPhase::Suspended
        }
        S::Terminated { at } => {
            out.terminated_at = Some(timestamp(at));
            pb::PostpaidPhase::Terminated
        }
    };
    out.phase = phase as i32;
    out
}

pub fn interval(i: kinema_ledger::PlanInterval) -> pb::PlanInterval {
    match i {
        kinema_ledger::PlanInterval::Monthly => pb::PlanInterval::Monthly,
        kinema_ledger::PlanInterval::Annual => pb::PlanInterval::Annual,
    }
}

fn scheduled(h: &kinema_ledger::PriceHistory, now: i64) -> Vec<pb::PriceChange> {
    h.scheduled_after(now)
        .into_iter()
        .map(|p| pb::PriceChange {
            price: Some(money(&p.price)),
            announced_at: Some(timestamp(p.announced_at)),
            effective_at: Some(timestamp(p.effective_at)),
        })
        .collect()
}

pub fn catalog(
    c: &crate::commerce::CommerceConfig,
    cat: &kinema_ledger::Catalogue,
    now: i64,
) -> pb::Catalog {
    let price =
        |h: &kinema_ledger::PriceHistory| kinema_ledger::price_at(h, now).ok().map(|m| money(&m));
    pb::Catalog {
        packs: cat
            .packs
            .iter()
            .map(|p| {
                let (validity, validity_months) = match p.validity {
                    kinema_ledger::Validity::Never => (None, 0),
                    kinema_ledger::Validity::Millis(ms) => (Some(duration(ms)), 0),
                    kinema_ledger::Validity::Months(m) => (None, m),
                };
                pb::CatalogPack {
                    id: p.id.clone(),
                    credits: p.credits,
                    validity,
                    validity_months,
                    price: price(&p.prices),
                    scheduled_prices: scheduled(&p.prices, now),
                }
            })
            .collect(),
        plans: cat
            .plans
            .iter()
            .map(|p| pb::CatalogPlan {
                id: p.id.clone(),
                interval: interval(p.interval) as i32,
                credits_per_month: p.credits_per_month,
                price: price(&p.prices),
                scheduled_prices: scheduled(&p.prices, now),
                monthly_counterpart: p.monthly_counterpart.clone().unwrap_or_default(),
                seats: p.seats,
                extra_seat_price: p.extra_seat_price.as_ref().map(money),
            })
            .collect(),
        trial: c.has_trial().then(|| pb::TrialOffer {
            credits: c.trial.credits,
            duration: Some(duration(c.trial.duration_ms)),
        }),
        usage_price_per_credit: Some(money(&c.usage_price)),
        price_notice: Some(duration(c.price_notice_ms)),
    }
}

pub fn duration(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn price_changes(h: &kinema_ledger::PriceHistory, now: i64) -> pb::SchedulePriceChangeResponse {
    pb::SchedulePriceChangeResponse {
        current_price: kinema_ledger::price_at(h, now).ok().map(|m| money(&m)),
        scheduled_prices: scheduled(h, now),
    }
}

pub fn subscription_state(
    account_id: &str,
    change: &store::SubscriptionChange,
) -> pb::SubscriptionResponse {
    let state = &change.state;
    pb::SubscriptionResponse {
        account_id: account_id.to_string(),
        current: state.current.as_ref().map(|c| pb::Subscription {
            id: c.id.clone(),
            plan_id: c.plan_id.clone(),
            interval: interval(c.interval) as i32,
            started_at: Some(timestamp(c.anchor)),
            period: c.period,
            period_start: Some(timestamp(c.period_start)),
            period_end: Some(timestamp(c.period_end)),
            credits_per_month: c.credits_per_month,
            paid: Some(money(&c.paid)),
            cancellation: c.cancellation.map(|x| pb::Cancellation {
                requested_at: Some(timestamp(x.requested_at)),
                ends_at: Some(timestamp(x.ends_at)),
                kind: match x.kind {
                    kinema_ledger::CancellationKind::Requested => "requested",
                    kinema_ledger::CancellationKind::Switch => "switch",
                }
                .to_string(),
            }),
            renews: c.ends_at().is_none_or(|e| e > c.period_end),
            extra_seats: c.extra_seats,
        }),
        queued: state.queued.as_ref().map(|q| pb::QueuedPlan {
            id: q.id.clone(),
            plan_id: q.plan_id.clone(),
            interval: interval(q.interval) as i32,
            paid: Some(money(&q.paid)),
            bought_at: Some(timestamp(q.bought_at)),
            starts_at: state.queued_starts_at().map(timestamp),
        }),
        events: change.events.iter().map(billing_event).collect(),
        lots: change.lots.iter().map(lot).collect(),
        created: change.created,
    }
}

pub fn billing_event(e: &store::BillingEvent) -> pb::BillingEvent {
    pb::BillingEvent {
        id: e.id,
        account_id: e.account_id.clone(),
        kind: e.kind.as_str().to_string(),
        amount: e.amount.as_ref().map(money),
        subscription_id: e.subscription_id.clone().unwrap_or_default(),
        plan_id: e.plan_id.clone().unwrap_or_default(),
        job_id: e.job_id.clone().unwrap_or_default(),
        payment_ref: e.payment_ref.clone().unwrap_or_default(),
        effective_at: Some(timestamp(e.effective_at)),
        created_at: Some(timestamp(e.created_at)),
        detail: e.detail.clone(),
    }
}

pub fn role(r: store::Role) -> pb::KeyRole {
    match r {
        store::Role::Admin => pb::KeyRole::Admin,
        store::Role::Platform => pb::KeyRole::Platform,
        store::Role::Account => pb::KeyRole::Account,
        store::Role::Worker => pb::KeyRole::Worker,
    }
}

pub fn api_key(k: &store::ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.clone(),
        role: role(k.role) as i32,
        account_id: k.account_id.clone().unwrap_or_default(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        created_at: Some(timestamp(k.created_at)),
        last_used_at: k.last_used_at.map(timestamp),
        revoked_at: k.revoked_at.map(timestamp),
        member_id: k.member_id.clone().unwrap_or_default(),
    }
}

pub fn member_role(r: store::MemberRole) -> pb::MemberRole {
    match r {
        store::MemberRole::Owner => pb::MemberRole::Owner,
        store::MemberRole::Admin => pb::MemberRole::Admin,
        store::MemberRole::Member => pb::MemberRole::Member,
    }
}

pub fn member(m: &store::Member) -> pb::Member {
    pb::Member {
        id: m.id.clone(),
        account_id: m.account_id.clone(),
        role: member_role(m.role) as i32,
        name: m.name.clone(),
        created_at: Some(timestamp(m.created_at)),
        removed_at: m.removed_at.map(timestamp),
    }
}

pub fn seats(s: &store::Seats) -> pb::Seats {
    pb::Seats {
        seats: s.seats,
        used: s.used,
    }
}

pub fn worker(w: &kinema_engine::WorkerStatus) -> pb::Worker {
    let state = match w.state {
        kinema_engine::WorkerState::Idle => pb::WorkerState::Idle,
        kinema_engine::WorkerState::Busy => pb::WorkerState::Busy,
        kinema_engine::WorkerState::Draining => pb::WorkerState::Draining,
    };
    pb::Worker {
        owner: w.owner.clone(),
        device: w.device.name.clone(),
        device_model: w.device.model.clone(),
        memory_total_bytes: w.device.total_bytes,
        memory_free_bytes: w.device.free_bytes,
        memory_budget_bytes: w.memory_budget,
        compute_capability: w
            .device
            .compute_capability
            .map(|(major, minor)| format!("{major}.{minor}"))
            .unwrap_or_default(),
        resident_models: w
            .resident
            .iter()
            .map(|r| pb::ResidentModel {
                model: r.model.clone(),
                bytes: r.bytes,
            })
            .collect(),
        current_job_ids: w.current_jobs.clone(),
        state: state as i32,
        jobs_done: w.jobs_done,
        last_heartbeat: (w.last_heartbeat_ms > 0).then(|| timestamp(w.last_heartbeat_ms)),
        evictions: w.evictions,
        sample: w.sample.map(|s| pb::DeviceSample {
            memory_used_bytes: s.used_bytes,
            memory_total_bytes: s.total_bytes,
            utilization_percent: s.utilization_percent,
        }),
    }
}

pub fn policy_decision(d: &store::PolicyDecision) -> pb::PolicyDecision {
    pb::PolicyDecision {
        id: d.id,
        account_id: d.account_id.clone(),
        key_id: d.key_id.clone(),
        decision: policy_decision_kind(d.decision) as i32,
        category: d.category.clone(),
        field: d.field.clone(),
        rule: d.rule.clone(),
        source: d.source.as_str().to_string(),
        policy_version: d.policy_version.clone(),
        counted: d.counted,
        suspended_account: d.suspended,
        note: d.note.clone(),
        job_id: d.job_id.clone().unwrap_or_default(),
        created_at: Some(timestamp(d.created_at)),
    }
}

pub fn policy_decision_kind(v: store::PolicyVerdict) -> pb::PolicyDecisionKind {
    match v {
        store::PolicyVerdict::Allowed => pb::PolicyDecisionKind::Allowed,
        store::PolicyVerdict::Refused => pb::PolicyDecisionKind::Refused,
        store::PolicyVerdict::Unavailable => pb::PolicyDecisionKind::Unavailable,
    }
}
