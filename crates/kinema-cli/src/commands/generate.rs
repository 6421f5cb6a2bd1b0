use std::io::IsTerminal;

use anyhow::{bail, Context};
use kinema_proto::v1 as pb;
use tonic::Code;

use super::follow;
use crate::cli::{Connection, GenerateArgs, Priority};
use crate::client::Clients;
use crate::{embedded, print};

/// The account the embedded server generates for.
const LOCAL_ACCOUNT: &str = "local";
/// Credits granted to the local account when it cannot cover a job.
const LOCAL_TOP_UP: i64 = 100;

mod offline;

pub async fn run(conn: &Connection, args: GenerateArgs) -> anyhow::Result<()> {
    if args.model_dir.is_some() {
        // Offline: the model runs in this process, no server, no credits.
        return tokio::task::spawn_blocking(move || offline::run(&args)).await?;
    }
    match &conn.server {
        Some(_) => {
            let mut c = Clients::from_flags(conn).await?;
            generate(&mut c, &args, false).await
        }
        None => {
            let (server, admin_key) =
                embedded::start(&args.data_dir, args.models_file.clone()).await?;
            eprintln!(
                "embedded server on {} (data in {})",
                server.addr,
                args.data_dir.display()
            );
            let result = async {
                let mut c =
                    Clients::connect(&format!("http://{}", server.addr), &admin_key, "").await?;
                c.account = local_account(&mut c).await?;
                generate(&mut c, &args, true).await
            }
            .await;
            server.shutdown();
            server.wait().await?;
            result
        }
    }
}

async fn local_account(c: &mut Clients) -> anyhow::Result<String> {
    let found = c
        .admin
        .get_account(pb::GetAccountRequest {
            account_id: String::new(),
            external_id: LOCAL_ACCOUNT.into(),
        })
        .await;
    match found {
        Ok(a) => Ok(a.into_inner().id),
        Err(s) if s.code() == Code::NotFound => {
            let a = c
                .admin
                .create_account(pb::CreateAccountRequest {
                    name: "Local account".into(),
                    external_id: LOCAL_ACCOUNT.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(a.id)
        }
        Err(s) => Err(s.into()),
    }
}

/// An input image file's bytes, as the server takes them (it decodes them).
fn read_image(path: Option<&std::path::Path>, flag: &str) -> anyhow::Result<Vec<u8>> {
    match path {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("{flag}: reading {}", path.display()))
        }
        None => Ok(Vec::new()),
    }
}

async fn generate(c: &mut Clients, args: &GenerateArgs, top_up: bool) -> anyhow::Result<()> {
    let request = pb::CreateJobRequest {
        image: read_image(args.image.as_deref(), "--image")?,
        last_image: read_image(args.last_image.as_deref(), "--last-image")?,
        account_id: c.account.clone(),
        model: args.model.clone(),
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        width: args.width,
        height: args.height,
        num_frames: args.frames,
        fps: args.fps,
        steps: args.steps,
        guidance_scale: args.guidance,
        guidance_scale_2: args.guidance_2,
        seed: args.seed,
        idempotency_key: args.idempotency_key.clone(),
        output: args.format.clone().unwrap_or_default(),
        preview: args.preview.clone().unwrap_or_default(),
        priority: match args.priority {
            Priority::Low => pb::JobPriority::Low,
            Priority::Normal => pb::JobPriority::Normal,
            Priority::High => pb::JobPriority::High,
        } as i32,
        ..Default::default()
    };
    let estimate = c
        .jobs
        .estimate_cost(pb::EstimateCostRequest {
            job: Some(request.clone()),
        })
        .await?
        .into_inner();
    if top_up {
        let balance = c
            .billing
            .get_balance(pb::GetBalanceRequest {
                account_id: c.account.clone(),
            })
            .await?
            .into_inner();
        if balance.available < estimate.credits {
            let grant = LOCAL_TOP_UP.max(estimate.credits);
            c.billing
                .grant_credits(pb::GrantCreditsRequest {
                    account_id: c.account.clone(),
                    credits: grant,
                    expires_at: None,
                    memo: "embedded server: local top-up".into(),
                })
                .await?;
            println!("granted    {grant} credits to the local account (embedded server)");
        }
    }
    let job = c.jobs.create_job(request).await?.into_inner();
    println!("job        {}", job.id);
    println!(
        "spec       {} {}x{}, {} frames @ {} fps, {} steps, seed {}",
        job.model, job.width, job.height, job.num_frames, job.fps, job.steps, job.seed
    );
    for (flag, image) in [("image", &job.image), ("last image", &job.last_image)] {
        if let Some(i) = image {
            println!(
                "{flag:<10} {}x{} (fitted), sha256 {}",
                i.width, i.height, i.sha256
            );
        }
    }
    println!(
        "quote      {} credits ({} tier, {:.2} s of video)",
        job.quoted_credits,
        estimate.resolution_tier,
        estimate.video_millis as f64 / 1000.0
    );
    let show_bar = !args.quiet && std::io::stderr().is_terminal();
    let job = follow::watch(c, &job.id, show_bar).await?;
    println!("state      {}", print::state(job.state));
    println!("debited    {} credits", job.debited_credits);
    if job.refunded_credits > 0 {
        println!("refunded   {} credits", job.refunded_credits);
    }
    let balance = c
        .billing
        .get_balance(pb::GetBalanceRequest {
            account_id: c.account.clone(),
        })
        .await?
        .into_inner();
    println!(
        "balance    {} credits available ({} total, {} held)",
        balance.available, balance.total, balance.held
    );
    if job.state != pb::JobState::Succeeded as i32 {
        let why = job
            .failure
            .map(|f| format!("{}: {}", f.code, f.message))
            .unwrap_or_else(|| print::state(job.state));
        bail!("job {} did not succeed: {why}", job.id);
    }
    let bytes = follow::download(c, &job, pb::ArtifactKind::Video, &args.output).await?;
    println!("video      {} ({} bytes)", args.output.display(), bytes);
    if let Some(poster) = &args.poster {
        follow::download(c, &job, pb::ArtifactKind::Poster, poster).await?;
        println!("poster     {}", poster.display());
    }
    if let Some(preview) = job
        .artifacts
        .iter()
        .find(|a| a.kind == pb::ArtifactKind::Preview as i32)
    {
        let path = preview_path(args, &preview.mime);
        follow::download(c, &job, pb::ArtifactKind::Preview, &path).await?;
        println!("preview    {}", path.display());
    }
    if let Some(u) = &job.usage {
        println!(
            "timings    text {} ms, denoise {} ms, decode {} ms, encode {} ms, store {} ms, total {} ms on {}",
            u.encode_text_ms, u.denoise_ms, u.decode_ms, u.encode_video_ms, u.store_ms, u.total_ms, u.device
        );
        let gib = |b: Option<u64>| b.map(|b| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64));
        if let (Some(t), Some(d), Some(v)) = (
            gib(u.encode_text_peak_bytes),
            gib(u.denoise_peak_bytes),
            gib(u.decode_peak_bytes),
        ) {
            println!("peak mem   text {t}, denoise {d}, decode {v}");
        }
    }
    Ok(())
}

/// Where the preview goes: `--preview-out`, else beside the video
/// (`clip.mp4` -> `clip.preview.webp`).
pub(crate) fn preview_path(args: &GenerateArgs, mime: &str) -> std::path::PathBuf {
    if let Some(path) = &args.preview_out {
        return path.clone();
    }
    let extension = mime.rsplit('/').next().unwrap_or("bin");
    args.output.with_extension(format!("preview.{extension}"))
}
