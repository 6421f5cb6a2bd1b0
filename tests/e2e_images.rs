//! End to end: image-to-video jobs through `kinema serve` (docs/api.md, "Input
//! images"), on `testsrc`, which takes an image (t2v + i2v) and blends it into its
//! frames. A PNG and a JPEG each finish as an MP4, debited once; different images give
//! different videos, the same image and seed the same video; the size follows the
//! image when unset; corrupt, oversized and unsupported images are refused with
//! INVALID_SPEC naming their field, nothing held.

mod common;

use std::io::Cursor;

use common::*;
use image::{ImageFormat, RgbImage};
use kinema_proto::v1 as pb;

/// A `width` x `height` picture: a horizontal gradient of `base`, so PNG and JPEG
/// stay small and two colours give two pictures.
fn picture(width: u32, height: u32, base: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(width, height, |x, _| {
        let t = (x * 255 / width.max(1)) as u8;
        image::Rgb([base[0].saturating_add(t / 4), base[1], base[2]])
    })
}

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format)
        .expect("encoding a test image");
    out.into_inner()
}

fn image_request(account: &str, image: Vec<u8>) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        image,
        ..job_request(account, 64, 48, 5, 8, 2)
    }
}

fn video_sha(job: &pb::Job) -> String {
    job.artifacts
        .iter()
        .find(|a| a.kind == pb::ArtifactKind::Video as i32)
        .unwrap_or_else(|| panic!("no video: {}", describe_job(job)))
        .sha256
        .clone()
}

async fn run_to_end(admin: &Client, account: &str, req: pb::CreateJobRequest) -> pb::Job {
    let job = admin.create_job(req).await;
    let (_, done) = admin.wait_terminal(account, &job.id).await;
    assert_eq!(state(&done), JobState::Succeeded, "{}", describe_job(&done));
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_jobs_run_and_the_image_reaches_the_video() {
    let dir = TestDir::new();
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;
    let account = admin.create_account("studio").await;
    admin.grant(&account, 1_000).await;

    let models = admin
        .jobs()
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    let testsrc = models.iter().find(|m| m.id == "testsrc").unwrap();
    assert!(testsrc.capabilities.iter().any(|c| c == "i2v"));
    assert!(testsrc.capabilities.iter().any(|c| c == "t2v"));
    let limits = testsrc.limits.as_ref().unwrap();
    assert_eq!(
        (limits.max_image_bytes, limits.max_image_pixels),
        (10 << 20, 4096 * 4096)
    );

    let png = encode(&picture(80, 60, [200, 40, 40]), ImageFormat::Png);
    let jpeg = encode(&picture(80, 60, [20, 40, 220]), ImageFormat::Jpeg);

    // Priced as any job of its shape.
    let estimate = admin
        .jobs()
        .estimate_cost(pb::EstimateCostRequest {
            job: Some(image_request(&account, png.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(estimate.credits, expected_quote(64, 48, 5, 8, 2));

    let with_png = run_to_end(&admin, &account, image_request(&account, png.clone())).await;
    let shown = with_png.image.clone().expect("the job shows its image");
    assert_eq!((shown.width, shown.height), (64, 48), "fitted to the video");
    assert_eq!(shown.sha256.len(), 64);
    assert_eq!(with_png.quoted_credits, estimate.credits);
    assert_eq!(
        (with_png.debited_credits, with_png.refunded_credits),
        (with_png.quoted_credits, 0)
    );
    let entries = admin.ledger(&account, Some(&with_png.id)).await;
    assert_eq!(
        kinds(&entries),
        [LedgerEntryKind::Hold, LedgerEntryKind::Debit],
        "held, then debited once"
    );
    let video = with_png
        .artifacts
        .iter()
        .find(|a| a.kind == pb::ArtifactKind::Video as i32)
        .unwrap();
    assert_eq!(video.mime, "video/mp4");
    let (bytes, _) = admin
        .download(&account, &with_png.id, pb::ArtifactKind::Video, 0)
        .await
        .unwrap();
    let mp4 = dir.path().join("png.mp4");
    std::fs::write(&mp4, &bytes).unwrap();
    let probe = ffprobe(&mp4);
    assert_eq!(
        (probe["width"].as_u64(), probe["height"].as_u64()),
        (Some(64), Some(48))
    );

    let with_jpeg = run_to_end(&admin, &account, image_request(&account, jpeg)).await;
    assert_ne!(
        with_jpeg.image.as_ref().unwrap().sha256,
        shown.sha256,
        "another picture"
    );
    assert_ne!(video_sha(&with_jpeg), video_sha(&with_png), "another video");

    let again = run_to_end(&admin, &account, image_request(&account, png.clone())).await;
    assert_eq!(again.image.as_ref().unwrap().sha256, shown.sha256);
    assert_eq!(
        video_sha(&again),
        video_sha(&with_png),
        "the same image and seed give the same video"
    );
    let text_only = run_to_end(&admin, &account, job_request(&account, 64, 48, 5, 8, 2)).await;
    assert!(text_only.image.is_none());
    assert_ne!(video_sha(&text_only), video_sha(&with_png));

    // No size asked for: it follows the image at the model's default area
    // (320x192 for testsrc): a 2:1 image gives 336x160, a 9:16 one 176x320.
    for ((w, h), expected) in [((200, 100), (336, 160)), ((90, 160), (176, 320))] {
        let req = pb::CreateJobRequest {
            width: None,
            height: None,
            ..image_request(
                &account,
                encode(&picture(w, h, [10, 200, 10]), ImageFormat::Png),
            )
        };
        let estimate = admin
            .jobs()
            .estimate_cost(pb::EstimateCostRequest {
                job: Some(req.clone()),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((estimate.width, estimate.height), expected);
        let job = admin.create_job(req).await;
        assert_eq!((job.width, job.height), expected);
        let image = job.image.unwrap();
        assert_eq!((image.width, image.height), expected);
    }
    assert_ledger_verifies(&server.data_dir);
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A decompression bomb's shape: a PNG whose header claims 60,000 x 60,000 pixels in
/// a few dozen bytes.
fn pixel_bomb() -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = 60_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&60_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let empty_zlib = [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01];
    for (kind, data) in [
        (&b"IHDR"[..], &ihdr[..]),
        (&b"IDAT"[..], &empty_zlib[..]),
        (&b"IEND"[..], &[][..]),
    ] {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_are_refused_naming_their_field_with_nothing_held() {
    let dir = TestDir::new();
    let server = Server::start(
        &dir,
        Opts {
            extra_args: &["--max-image-bytes", "20000"],
            ..Opts::default()
        },
    )
    .await;
    let admin = server.admin().await;
    let account = admin.create_account("studio").await;
    admin.grant(&account, 1_000).await;

    let png = encode(&picture(80, 60, [200, 40, 40]), ImageFormat::Png);
    assert!(png.len() < 20_000);
    let noise = RgbImage::from_fn(256, 256, |x, y| {
        let v = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)).wrapping_mul(97);
        image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    });
    let too_big = encode(&noise, ImageFormat::Png);
    assert!(too_big.len() > 20_000);
    let mut truncated = png.clone();
    truncated.truncate(png.len() / 2);
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();

    let cases: Vec<(&str, pb::CreateJobRequest)> = vec![
        (
            "image",
            image_request(&account, b"not an image at all".to_vec()),
        ),
        ("image", image_request(&account, truncated)),
        ("image", image_request(&account, gif)),
        ("image", image_request(&account, too_big)),
        ("image", image_request(&account, pixel_bomb())),
        // testsrc takes a first frame but no last frame (no `flf2v`).
        (
            "last_image",
            pb::CreateJobRequest {
                last_image: png.clone(),
                ..image_request(&account, png.clone())
            },
        ),
        (
            "guidance_scale_2",
            pb::CreateJobRequest {
                guidance_scale_2: Some(f32::NAN),
                ..image_request(&account, png.clone())
            },
        ),
    ];
    for (field, req) in cases {
        let status = expect_err(field, admin.create_job_raw(req.clone()).await);
        assert_invalid_field(&status, field);
        let status = expect_err(
            field,
            admin
                .jobs()
                .estimate_cost(pb::EstimateCostRequest { job: Some(req) })
                .await,
        );
        assert_invalid_field(&status, field);
    }
    let balance = admin.balance(&account).await;
    assert_eq!(
        (balance.held, balance.available),
        (0, 1_000),
        "nothing held"
    );
    assert!(
        admin
            .ledger(&account, None)
            .await
            .iter()
            .all(|e| e.job_id.is_empty()),
        "no job entry"
    );
    let jobs = admin
        .jobs()
        .list_jobs(pb::ListJobsRequest {
            account_id: account.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(jobs.is_empty(), "no job written: {jobs:?}");

    // The same PNG within the caps is taken.
    let job = admin.create_job(image_request(&account, png)).await;
    assert!(job.image.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_node_gets_the_image_with_its_lease() {
    let dir = TestDir::new();
    let server = Server::start(
        &dir,
        Opts {
            extra_args: &["--cpu-workers", "0"],
            lease_ms: Some(2_000),
            ..Opts::default()
        },
    )
    .await;
    let admin = server.admin().await;
    let account = admin.create_account("nodes").await;
    admin.grant(&account, 1_000).await;
    let (_, key) = common::nodes::worker_key(&admin, "node").await;
    let mut node =
        common::nodes::Node::start(&dir, &server.url(), &key, "n", &["--cpu-workers", "1"]);
    common::nodes::remote_devices(&admin, 1).await;

    let png = encode(&picture(80, 60, [200, 40, 40]), ImageFormat::Png);
    let with_image = run_to_end(&admin, &account, image_request(&account, png.clone())).await;
    let again = run_to_end(&admin, &account, image_request(&account, png)).await;
    let text_only = run_to_end(&admin, &account, job_request(&account, 64, 48, 5, 8, 2)).await;
    assert_eq!(video_sha(&with_image), video_sha(&again));
    assert_ne!(
        video_sha(&with_image),
        video_sha(&text_only),
        "the node blended the image it was sent"
    );
    assert_eq!(
        kinds(&admin.ledger(&account, Some(&with_image.id)).await),
        [LedgerEntryKind::Hold, LedgerEntryKind::Debit]
    );
    assert!(node.terminate().await.success());
}

/// The tiny random Wan 2.1 I2V model (tests/wan/fixtures/i2v-tiny/model, the diffusers
/// parity fixture: CLIP vision encoder, 36-channel transformer with image keys/values,
/// first-frame conditioning) and the tiny text-to-video Wan, in one models file.
fn write_wan_i2v_models_file(data_dir: &std::path::Path) {
    let fixture = |name: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/wan/fixtures")
            .join(name)
            .join("model")
            .canonicalize()
            .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
    };
    let entry = |id: &str, source: std::path::PathBuf, (w, h): (u32, u32)| {
        format!(
            r#"[[model]]
id = "{id}"
source = "{}"
[model.defaults]
width = {w}
height = {h}
frames = 5
fps = 8
steps = 2
guidance = 5.0
[model.limits]
max_width = 128
max_height = 128
max_frames = 9
max_steps = 4
[model.price]
default_steps = 2
tiers = [{{ tier = "tiny", max_side = 128, credits_per_second = 4 }}]
"#,
            source.display()
        )
    };
    let toml = entry(WAN_I2V, fixture("i2v-tiny"), (80, 48))
        + "\n"
        + &entry(wan::TINY_WAN, fixture("tiny"), (48, 32));
    std::fs::write(data_dir.join("models.toml"), toml).expect("models.toml");
}

const WAN_I2V: &str = "wan-i2v-tiny";

fn wan_i2v_request(account: &str, image: Vec<u8>, seed: u64) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        account_id: account.into(),
        model: WAN_I2V.into(),
        prompt: "一只猫在草地上散步，写实风格。".into(),
        image,
        num_frames: Some(5),
        fps: Some(8),
        steps: Some(2),
        seed: Some(seed),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_i2v_jobs_through_kinema_serve() {
    let dir = TestDir::new();
    write_wan_i2v_models_file(&dir.data_dir());
    let server = Server::start(&dir, Opts::default()).await;
    let admin = server.admin().await;

    let models = admin
        .jobs()
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("ListModels")
        .into_inner()
        .models;
    let i2v = models
        .iter()
        .find(|m| m.id == WAN_I2V)
        .unwrap_or_else(|| panic!("{WAN_I2V} listed: {models:?}"));
    assert_eq!(i2v.capabilities, ["i2v"]);
    let limits = i2v.limits.as_ref().expect("limits");
    assert!(
        limits.max_image_bytes > 0 && limits.max_image_pixels > 0,
        "{limits:?}"
    );
    let t2v = models.iter().find(|m| m.id == wan::TINY_WAN).expect("t2v");
    assert_eq!(t2v.capabilities, ["t2v"]);

    let account = admin.create_account("i2v-studio").await;
    admin.grant(&account, 500).await;
    // 80x48 like the defaults; the second is 160x96, fitted (scaled to cover, cropped).
    let png_a = encode(&picture(80, 48, [30, 140, 200]), ImageFormat::Png);
    let jpeg_a = encode(&picture(80, 48, [30, 140, 200]), ImageFormat::Jpeg);
    let png_b = encode(&picture(160, 96, [220, 60, 20]), ImageFormat::Png);

    let estimate = admin
        .jobs()
        .estimate_cost(pb::EstimateCostRequest {
            job: Some(wan_i2v_request(&account, png_a.clone(), 7)),
        })
        .await
        .expect("EstimateCost")
        .into_inner();
    // 4 credits/s x 5 frames / 8 fps = 2.5 -> 3
    assert_eq!(estimate.credits, 3);

    let mut videos = Vec::new();
    for (name, image) in [
        ("png-a", png_a.clone()),
        ("png-a-again", png_a.clone()),
        ("png-b", png_b),
        ("jpeg-a", jpeg_a),
    ] {
        let done = run_to_end(&admin, &account, wan_i2v_request(&account, image, 7)).await;
        let image = done.image.as_ref().expect("the job shows its image");
        assert_eq!(
            (image.width, image.height, done.width, done.height),
            (80, 48, 80, 48),
            "{name}"
        );
        assert_eq!(
            (
                done.quoted_credits,
                done.debited_credits,
                done.refunded_credits
            ),
            (estimate.credits, estimate.credits, 0),
            "{name}: debited once, as quoted"
        );
        let entries = admin.ledger(&account, Some(&done.id)).await;
        assert_eq!(
            entries_of(&entries, LedgerEntryKind::Debit).len(),
            1,
            "{name}: {:?}",
            kinds(&entries)
        );
        let (video, _) = admin
            .download(&account, &done.id, pb::ArtifactKind::Video, 0)
            .await
            .expect("download");
        let path = dir.path().join(format!("{name}.mp4"));
        std::fs::write(&path, &video).expect("write video");
        let probe = ffprobe(&path);
        assert_eq!(probe["codec_name"], "h264", "{name}: {probe}");
        assert_eq!(
            (probe["width"].as_u64(), probe["height"].as_u64()),
            (Some(80), Some(48)),
            "{name}"
        );
        assert_eq!(probe["nb_read_frames"], "5", "{name}: {probe}");
        videos.push(video_sha(&done));
    }
    assert_eq!(
        videos[0], videos[1],
        "the same image and seed give the same video"
    );
    assert_ne!(videos[0], videos[2], "another image gives another video");
    assert_ne!(
        videos[0], videos[3],
        "a JPEG of the picture is another image (lossy)"
    );

    // Refused with nothing held: no image for an image-only model, an image for a
    // text-only model, an undecodable one, a pixel bomb.
    let before = admin.balance(&account).await;
    let mut truncated = png_a.clone();
    truncated.truncate(png_a.len() / 2);
    for (what, req) in [
        ("missing", wan_i2v_request(&account, Vec::new(), 1)),
        (
            "to a t2v model",
            pb::CreateJobRequest {
                model: wan::TINY_WAN.into(),
                ..wan_i2v_request(&account, png_a.clone(), 1)
            },
        ),
        ("truncated", wan_i2v_request(&account, truncated, 1)),
        ("pixel bomb", wan_i2v_request(&account, pixel_bomb(), 1)),
    ] {
        let status = expect_err(what, admin.create_job_raw(req).await);
        assert_invalid_field(&status, "image");
    }
    assert_eq!(
        admin.balance(&account).await,
        before,
        "nothing held by refusals"
    );
    assert_ledger_verifies(&dir.data_dir());
}
