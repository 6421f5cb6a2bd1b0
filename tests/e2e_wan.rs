//! End to end with a real model: the tiny random Wan 2.1 (tests/wan/fixtures/tiny/model,
//! the same code path as the 1.3B) served by the real `kinema serve` binary — listed,
//! quoted, submitted, watched step by step, downloaded and probed — and run offline by
//! `kinema generate --model-dir`, which must reproduce diffusers' frames.

mod common;

use common::*;
use kinema_proto::v1 as pb;
use tonic::Code;

const MODEL_ID: &str = wan::TINY_WAN;
const PROMPT: &str = "A cat walks on the grass, realistic style.";

fn wan_request(account: &str, seed: u64) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        account_id: account.into(),
        model: MODEL_ID.into(),
        prompt: PROMPT.into(),
        negative_prompt: "色调艳丽，过曝，静态".into(),
        width: Some(48),
        height: Some(32),
        num_frames: Some(5),
        fps: Some(8),
        steps: Some(3),
        guidance_scale: Some(5.0),
        seed: Some(seed),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_wan_job_through_kinema_serve() {
    let dir = TestDir::new();
    wan::write_tiny_wan_models_file(&dir.data_dir(), 3);
    let server = Server::start(&dir, Opts::faults()).await;
    let admin = server.admin().await;

    // ListModels serves the manifest built from the model folder and models.toml.
    let models = admin
        .jobs()
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("ListModels")
        .into_inner()
        .models;
    let wan = models
        .iter()
        .find(|m| m.id == MODEL_ID)
        .unwrap_or_else(|| panic!("{MODEL_ID} is listed: {models:?}"));
    assert!(models.iter().any(|m| m.id == "testsrc"), "built-ins stay");
    assert_eq!(wan.family, "wan");
    assert_eq!(wan.capabilities, ["t2v"]);
    let l = wan.limits.as_ref().unwrap();
    assert_eq!(
        (l.size_multiple, l.frames_modulo, l.max_width, l.max_frames),
        (16, 4, 128, 17)
    );
    let d = wan.defaults.as_ref().unwrap();
    assert_eq!((d.width, d.height, d.num_frames, d.steps), (48, 32, 5, 3));
    assert_eq!(d.flow_shift, Some(3.0), "from scheduler_config.json");
    assert!(wan.memory_bytes > 0, "memory need is listed");
    assert_eq!(wan.prices[0].credits_per_second, 4);

    let account = admin.create_account("wan-studio").await;
    admin.grant(&account, 100).await;

    // Wan's limits are enforced at submission: 4k+1 frames, sizes multiple of 16.
    let bad = expect_err(
        "6 frames",
        admin
            .create_job_raw(pb::CreateJobRequest {
                num_frames: Some(6),
                ..wan_request(&account, 1)
            })
            .await,
    );
    assert_invalid_field(&bad, "num_frames");
    let bad = expect_err(
        "width 40",
        admin
            .create_job_raw(pb::CreateJobRequest {
                width: Some(40),
                ..wan_request(&account, 1)
            })
            .await,
    );
    assert_invalid_field(&bad, "width");

    let estimate = admin
        .jobs()
        .estimate_cost(pb::EstimateCostRequest {
            job: Some(wan_request(&account, 42)),
        })
        .await
        .expect("EstimateCost")
        .into_inner();
    // 4 credits/s x 5 frames / 8 fps = 2.5 -> 3
    assert_eq!(
        (estimate.credits, estimate.resolution_tier.as_str()),
        (3, "tiny")
    );

    // Keep the worker busy with a testsrc job so the watch below opens while the Wan
    // job is still queued and sees every one of its events.
    let blocker_account = admin.create_account("blocker").await;
    admin.grant(&blocker_account, 1000).await;
    let blocker = admin
        .create_job(with_meta(
            job_request(&blocker_account, 16, 16, 1, 8, 200),
            &[("kinema.step_delay_ms", "100")],
        ))
        .await;
    admin.wait_step(&blocker_account, &blocker.id, 1).await;

    let job = admin.create_job(wan_request(&account, 42)).await;
    assert_eq!(state(&job), JobState::Queued);
    assert_eq!(job.quoted_credits, estimate.credits);
    let mut watch = admin.watch(&account, &job.id).await;
    admin.cancel(&blocker_account, &blocker.id).await;
    let done = watch.until(is_terminal).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));

    // Every denoising step reported, in order; stages in order.
    let events = &watch.events;
    let steps: Vec<u32> = events
        .iter()
        .filter(|e| e.kind == JobEventKind::Progress as i32)
        .map(|e| e.job.as_ref().unwrap().progress.as_ref().unwrap().step)
        .collect();
    assert_eq!(steps, [1, 2, 3], "progress events");
    let mut stages: Vec<i32> = events
        .iter()
        .map(|e| e.job.as_ref().unwrap())
        .filter(|j| j.state == JobState::Running as i32)
        .map(|j| j.stage)
        .collect();
    stages.dedup();
    assert_eq!(
        stages,
        [
            JobStage::EncodingText,
            JobStage::Denoising,
            JobStage::Decoding,
            JobStage::EncodingVideo,
            JobStage::Storing,
        ]
        .map(|s| s as i32)
        .to_vec()
    );
    assert_eq!(
        (done.debited_credits, done.refunded_credits),
        (estimate.credits, 0)
    );
    let usage = done.usage.as_ref().expect("usage");
    assert_eq!(usage.device, "cpu");

    // Download and probe: H.264, 48x32, 5 frames at 8 fps.
    let (video, total) = admin
        .download(&account, &job.id, pb::ArtifactKind::Video, 0)
        .await
        .expect("download");
    assert_eq!(video.len() as u64, total);
    let path = dir.path().join("wan.mp4");
    std::fs::write(&path, &video).unwrap();
    let probe = ffprobe(&path);
    assert_eq!(probe["codec_name"], "h264", "{probe}");
    assert_eq!(probe["pix_fmt"], "yuv420p", "{probe}");
    assert_eq!(
        (probe["width"].as_u64(), probe["height"].as_u64()),
        (Some(48), Some(32))
    );
    assert_eq!(probe["r_frame_rate"], "8/1", "{probe}");
    assert_eq!(probe["nb_read_frames"], "5", "{probe}");
    let (poster, _) = admin
        .download(&account, &job.id, pb::ArtifactKind::Poster, 0)
        .await
        .expect("poster");
    assert!(poster.starts_with(b"\x89PNG"), "poster is a PNG");

    // Deterministic for a seed: the same request gives the same video.
    let again = admin.create_job(wan_request(&account, 42)).await;
    let (_, again) = admin.wait_terminal(&account, &again.id).await;
    assert_eq!(
        state(&again),
        JobState::Succeeded,
        "{}",
        describe_job(&again)
    );
    let (video2, _) = admin
        .download(&account, &again.id, pb::ArtifactKind::Video, 0)
        .await
        .expect("download");
    // Byte-identical: x264 is capped below its AVX-512 kernels, which read
    // uninitialised memory (see kinema-media's mp4.rs).
    assert_eq!(
        sha256_hex(&video),
        sha256_hex(&video2),
        "same seed, same MP4 bytes"
    );
    let balance = admin.balance(&account).await;
    assert_eq!(balance.total, 100 - 2 * estimate.credits);
}

#[test]
fn serve_refuses_a_model_it_cannot_read() {
    let dir = TestDir::new();
    let data = dir.data_dir();
    let out = wan::kinema_offline(
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--model",
            "broken=/nonexistent/wan-model",
        ],
        &[],
    );
    assert!(!out.status.success(), "serve must fail");
    let err = wan::stderr(&out);
    assert!(
        err.contains("broken") && err.contains("nonexistent"),
        "{err}"
    );
}

/// `kinema generate --model-dir` with diffusers' initial latents reproduces diffusers'
/// frames (tests/wan/fixtures/tiny/pipeline.safetensors) within 1e-3, and writes an MP4.
#[test]
fn offline_generate_matches_diffusers() {
    let dir = TestDir::new();
    let fixtures = wan::tiny_wan_model().parent().unwrap().to_path_buf();
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("case.json")).unwrap())
            .unwrap();
    // The model by repo id from an (offline) hub cache holding it.
    let cache = dir.path().join("hub");
    let repo = cache.join("models--kinema--wan-tiny");
    let hash = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots")).unwrap();
    std::fs::write(repo.join("refs/main"), hash).unwrap();
    std::os::unix::fs::symlink(wan::tiny_wan_model(), repo.join("snapshots").join(hash)).unwrap();

    let frames_file = dir.path().join("frames.safetensors");
    let video = dir.path().join("offline.mp4");
    let n = |k: &str| case[k].as_u64().unwrap().to_string();
    let (w, h, f, steps) = (n("width"), n("height"), n("num_frames"), n("steps"));
    let guidance = case["guidance_scale"].as_f64().unwrap().to_string();
    let out = wan::kinema_offline(
        &[
            "generate",
            "--model-dir",
            "kinema/wan-tiny",
            "--prompt",
            case["prompt"].as_str().unwrap(),
            "--negative-prompt",
            case["negative_prompt"].as_str().unwrap(),
            "--width",
            &w,
            "--height",
            &h,
            "--frames",
            &f,
            "--steps",
            &steps,
            "--guidance",
            &guidance,
            "--fps",
            "8",
            "--device",
            "cpu",
            "--init-latents",
            fixtures.join("pipeline.safetensors").to_str().unwrap(),
            "--save-frames",
            frames_file.to_str().unwrap(),
            "--output",
            video.to_str().unwrap(),
            "--quiet",
        ],
        &[("HF_HUB_CACHE", cache.as_path())],
    );
    assert!(
        out.status.success(),
        "kinema generate failed:\n{}",
        wan::stderr(&out)
    );

    let want = candle_core::safetensors::load(
        fixtures.join("pipeline.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let diff = wan::saved_frames_max_diff(&frames_file, &want["frames"]);
    assert!(diff < 1e-3, "frames differ from diffusers by {diff}");

    let probe = ffprobe(&video);
    assert_eq!(probe["codec_name"], "h264", "{probe}");
    assert_eq!(probe["width"].as_u64(), Some(48));
    assert_eq!(probe["height"].as_u64(), Some(32));
    assert_eq!(probe["nb_read_frames"], "5", "{probe}");
}

#[test]
fn offline_generate_explains_bad_requests() {
    let model = wan::tiny_wan_model();
    let model = model.to_str().unwrap();
    let base = [
        "generate",
        "--model-dir",
        model,
        "--prompt",
        "a cat",
        "--quiet",
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        wan::kinema_offline(&args, &[])
    };
    let cuda = run(&["--device", "cuda:0", "--output", "/dev/null"]);
    assert!(!cuda.status.success());
    if !cfg!(feature = "cuda") {
        let err = wan::stderr(&cuda);
        assert!(err.contains("`cuda` cargo feature"), "{err}");
    }
    let frames = run(&["--frames", "6", "--width", "48", "--height", "32"]);
    assert!(!frames.status.success());
    assert!(
        wan::stderr(&frames).contains("--frames"),
        "{}",
        wan::stderr(&frames)
    );
    let latents = run(&[
        "--frames",
        "9",
        "--width",
        "48",
        "--height",
        "32",
        "--init-latents",
        wan::tiny_wan_model()
            .parent()
            .unwrap()
            .join("pipeline.safetensors")
            .to_str()
            .unwrap(),
    ]);
    assert!(!latents.status.success());
    assert!(
        wan::stderr(&latents).contains("--init-latents"),
        "{}",
        wan::stderr(&latents)
    );
    let _ = Code::Ok;
}
