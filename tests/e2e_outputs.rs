//! Video outputs a platform chooses: a job's `output` (codec, container, pixel format,
//! quality) and `preview`, through the real server, checked with ffprobe; what this
//! server's FFmpeg cannot do is refused before anything is held.

mod common;

use common::*;
use kinema_proto::v1 as pb;

/// A small testsrc job with these output settings.
fn job(account: &str, output: &str, preview: &str) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        output: output.into(),
        preview: preview.into(),
        ..job_request(account, 96, 64, 9, 8, 1)
    }
}

/// Runs the job to success and saves its `kind` artifact; returns the job and path.
async fn run(
    client: &Client,
    dir: &TestDir,
    req: pb::CreateJobRequest,
    kind: pb::ArtifactKind,
) -> (pb::Job, std::path::PathBuf) {
    let account = req.account_id.clone();
    let job = client.create_job(req).await;
    let (_, done) = client.wait_terminal(&account, &job.id).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    let (data, total) = client
        .download(&account, &done.id, kind, 0)
        .await
        .expect("download");
    assert_eq!(data.len() as u64, total);
    let path = dir.path().join(format!("{}-{}", done.id, kind as i32));
    std::fs::write(&path, &data).unwrap();
    (done, path)
}

fn artifact(job: &pb::Job, kind: pb::ArtifactKind) -> &pb::Artifact {
    job.artifacts
        .iter()
        .find(|a| a.kind == kind as i32)
        .unwrap_or_else(|| panic!("no {kind:?} artifact in {}", describe_job(job)))
}

/// The container ffprobe sees (`format_name`).
fn container_of(path: &std::path::Path) -> String {
    let out = std::process::Command::new(FFPROBE)
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=format_name",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("running ffprobe");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    json["format"]["format_name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_output_is_what_ffprobe_describes() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("outputs").await;
    admin.grant(&account, 10_000).await;

    // (output asked, codec, pix_fmt, container, mime)
    let cases = [
        (
            "",
            "h264",
            "yuv420p",
            "mov,mp4,m4a,3gp,3g2,mj2",
            "video/mp4",
        ),
        (
            "h264:pix=yuv444p:crf=18",
            "h264",
            "yuv444p",
            "mov,mp4,m4a,3gp,3g2,mj2",
            "video/mp4",
        ),
        (
            "h265:pix=yuv420p10le",
            "hevc",
            "yuv420p10le",
            "mov,mp4,m4a,3gp,3g2,mj2",
            "video/mp4",
        ),
        (
            "vp9:preset=ultrafast",
            "vp9",
            "yuv420p",
            "matroska,webm",
            "video/webm",
        ),
        (
            "av1:preset=ultrafast",
            "av1",
            "yuv420p",
            "mov,mp4,m4a,3gp,3g2,mj2",
            "video/mp4",
        ),
    ];
    for (output, codec, pix, container, mime) in cases {
        let req = job(&account, output, "");
        let (done, path) = run(&admin, &dir, req, pb::ArtifactKind::Video).await;
        let probe = ffprobe(&path);
        assert_eq!(probe["codec_name"], codec, "{output:?}: {probe}");
        assert_eq!(probe["pix_fmt"], pix, "{output:?}: {probe}");
        assert_eq!(
            (probe["width"].as_u64(), probe["height"].as_u64()),
            (Some(96), Some(64))
        );
        assert_eq!(probe["nb_read_frames"], "9", "{output:?}: {probe}");
        assert_eq!(container_of(&path), container, "{output:?}");
        assert_eq!(artifact(&done, pb::ArtifactKind::Video).mime, mime);
        // The job says what it was encoded as, defaults written out.
        let expected = if output.is_empty() {
            "h264"
        } else {
            codec_head(output)
        };
        assert!(
            done.output.starts_with(expected),
            "{output:?} -> {:?}",
            done.output
        );
        assert!(done
            .artifacts
            .iter()
            .all(|a| a.kind != pb::ArtifactKind::Preview as i32));
    }
    assert_ledger_verifies(&server.data_dir);
}

fn codec_head(output: &str) -> &str {
    output.split(':').next().unwrap_or(output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_is_stored_beside_the_video() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("previews").await;
    admin.grant(&account, 10_000).await;
    for (preview, codec, mime) in [
        ("gif:max=48", "gif", "image/gif"),
        ("webp", "webp", "image/webp"),
    ] {
        let req = job(&account, "", preview);
        let (done, path) = run(&admin, &dir, req, pb::ArtifactKind::Preview).await;
        assert_eq!(done.preview, preview);
        assert_eq!(artifact(&done, pb::ArtifactKind::Preview).mime, mime);
        assert!(artifact(&done, pb::ArtifactKind::Video).bytes > 0);
        if codec == "gif" {
            // FFmpeg reads GIFs back (not animated WebP): 48 px on the long side.
            let probe = ffprobe(&path);
            assert_eq!(probe["codec_name"], "gif");
            assert_eq!(
                (probe["width"].as_u64(), probe["height"].as_u64()),
                (Some(48), Some(32))
            );
        } else {
            let data = std::fs::read(&path).unwrap();
            assert_eq!((&data[..4], &data[8..12]), (&b"RIFF"[..], &b"WEBP"[..]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_the_server_cannot_make_are_refused_holding_nothing() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("refusals").await;
    admin.grant(&account, 1_000).await;
    for (output, preview, field) in [
        ("h266", "", "output"),
        ("h264:crf=99", "", "output"),
        ("vp9:container=mp4", "", "output"),
        ("h264:pix=rgb24", "", "output"),
        ("", "png", "preview"),
        ("", "gif:max=0", "preview"),
    ] {
        let refused = admin.create_job_raw(job(&account, output, preview)).await;
        assert_invalid_field(
            &expect_err(&format!("{output:?} {preview:?}"), refused),
            field,
        );
    }
    // The older enum still asks for MP4, and refuses a WebM output with it.
    let mut webm_as_mp4 = job(&account, "vp9", "");
    webm_as_mp4.output_format = pb::OutputFormat::Mp4 as i32;
    let refused = admin.create_job_raw(webm_as_mp4).await;
    assert_invalid_field(&expect_err("vp9 as MP4", refused), "output_format");
    let balance = admin.balance(&account).await;
    assert_eq!((balance.total, balance.held), (1_000, 0));

    // ListModels says what this FFmpeg can write.
    let models = admin
        .jobs()
        .list_models(pb::ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner();
    for expected in ["h264", "h265", "vp9", "av1"] {
        assert!(
            models.outputs.iter().any(|o| codec_head(o) == expected),
            "{expected} in {:?}",
            models.outputs
        );
    }
    let testsrc = models.models.iter().find(|m| m.id == "testsrc").unwrap();
    assert_eq!(testsrc.defaults.as_ref().unwrap().output, "h264");
}
