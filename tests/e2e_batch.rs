//! Batching through the real `kinema serve` with the tiny Wan model: same-shape jobs
//! queued while the worker is busy run as one batch, each with its own progress,
//! cancel, failure and money: one member cancelled mid-batch is refunded while the
//! others go on, one failing at decode fails alone with its own refund, the rest
//! succeed with one debit each and no refund.

mod common;

use common::*;
use kinema_proto::v1 as pb;

const MODEL_ID: &str = wan::TINY_WAN;

/// A tiny Wan job slowed to `delay_ms` per step (its own share of each batched step).
fn wan_request(account: &str, i: u64, extra: &[(&str, &str)]) -> pb::CreateJobRequest {
    let delay = [("kinema.step_delay_ms", "150")];
    with_meta(
        pb::CreateJobRequest {
            account_id: account.into(),
            model: MODEL_ID.into(),
            prompt: format!("scene {i}: a lighthouse in a storm"),
            negative_prompt: if i.is_multiple_of(2) {
                "blurry".into()
            } else {
                String::new()
            },
            width: Some(48),
            height: Some(32),
            num_frames: Some(5),
            fps: Some(8),
            steps: Some(6),
            guidance_scale: Some(if i == 2 { 1.0 } else { 5.0 }),
            seed: Some(100 + i),
            ..Default::default()
        },
        &[&delay[..], extra].concat(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_shape_jobs_run_as_one_batch_each_with_its_own_end_and_money() {
    let dir = TestDir::new();
    wan::write_tiny_wan_models_file(&dir.data_dir(), 6);
    let server = Server::start(
        &dir,
        Opts {
            fault_injection: true,
            extra_args: &["--max-batch", "4"],
            ..Opts::default()
        },
    )
    .await;
    let admin = server.admin().await;
    let account = admin.create_account("batch-studio").await;
    admin.grant(&account, 1000).await;

    // Keep the worker busy so the Wan jobs queue up behind it.
    let blocker = admin
        .create_job(with_meta(
            job_request(&account, 16, 16, 1, 8, 200),
            &[("kinema.step_delay_ms", "100")],
        ))
        .await;
    admin.wait_step(&account, &blocker.id, 1).await;

    let mut jobs = Vec::new();
    for i in 0..4u64 {
        let extra: &[(&str, &str)] = if i == 3 {
            &[("kinema.fail_at", "decode")]
        } else {
            &[]
        };
        jobs.push(admin.create_job(wan_request(&account, i, extra)).await);
    }
    let mut watch = admin.watch(&account, &jobs[0].id).await;
    admin.cancel(&account, &blocker.id).await;

    // Member 1 is cancelled mid-batch; the others go on.
    let at = admin.wait_step(&account, &jobs[1].id, 2).await;
    assert!(
        at.progress.as_ref().unwrap().step < 6,
        "{}",
        describe_job(&at)
    );
    admin.cancel(&account, &jobs[1].id).await;

    let mut done = Vec::new();
    for j in &jobs {
        done.push(admin.wait_terminal(&account, &j.id).await.1);
    }
    let states: Vec<JobState> = done.iter().map(state).collect();
    assert_eq!(
        states,
        [
            JobState::Succeeded,
            JobState::Cancelled,
            JobState::Succeeded,
            JobState::Failed
        ],
        "{:#?}",
        done.iter().map(describe_job).collect::<Vec<_>>()
    );
    for j in &done {
        let usage = j.usage.as_ref().expect("usage");
        assert_eq!(usage.batch_size, 4, "batched: {}", describe_job(j));
        assert_eq!(usage.attempts, 1, "{}", describe_job(j));
    }
    let failure = done[3].failure.as_ref().expect("failure");
    assert_eq!(failure.code, "MODEL_ERROR");
    // The cancelled member stopped within a step of the cancel.
    let cancelled_at = done[1].progress.as_ref().unwrap().step;
    assert!(cancelled_at < 6, "{}", describe_job(&done[1]));

    // Member 0 reported every step in order, on its own stream.
    let last = watch.until(is_terminal).await;
    assert_eq!(state(&last), JobState::Succeeded);
    let steps: Vec<u32> = watch
        .events
        .iter()
        .filter(|e| e.kind == JobEventKind::Progress as i32)
        .map(|e| e.job.as_ref().unwrap().progress.as_ref().unwrap().step)
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6], "progress events of member 0");

    // Money: one debit each; a refund only for the cancelled and the failed member.
    for (j, refunded) in done.iter().zip([false, true, false, true]) {
        let entries = admin.ledger(&account, Some(&j.id)).await;
        let want = if refunded {
            vec![
                LedgerEntryKind::Hold,
                LedgerEntryKind::Debit,
                LedgerEntryKind::Refund,
            ]
        } else {
            vec![LedgerEntryKind::Hold, LedgerEntryKind::Debit]
        };
        assert_eq!(kinds(&entries), want, "{}: {entries:#?}", describe_job(j));
        assert_eq!(j.debited_credits, j.quoted_credits, "{}", describe_job(j));
        let refund = if refunded { j.debited_credits } else { 0 };
        assert_eq!(j.refunded_credits, refund, "{}", describe_job(j));
    }

    // The succeeded members have their videos.
    for j in [&done[0], &done[2]] {
        let (video, total) = admin
            .download(&account, &j.id, pb::ArtifactKind::Video, 0)
            .await
            .expect("download");
        assert!(total > 0 && video.len() as u64 == total);
    }
}
