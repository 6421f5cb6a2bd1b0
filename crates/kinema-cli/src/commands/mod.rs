mod accounts;
mod bench;
mod bench_calls;
mod bench_load;
mod credits;
mod follow;
mod generate;
mod jobs;
mod keys;
mod ledger;
mod members;
mod plans;
mod policy;
mod serve;
mod worker;
mod workers;

pub use bench_load::BenchLoadArgs;

use crate::cli::{Cli, Command};
use crate::client::Clients;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Generate(args) => generate::run(&cli.conn, *args).await,
        Command::Jobs(cmd) => jobs::run(Clients::from_flags(&cli.conn).await?, cmd).await,
        Command::Credits(cmd) => credits::run(Clients::from_flags(&cli.conn).await?, cmd).await,
        Command::Keys(cmd) => keys::run(Clients::from_flags(&cli.conn).await?, cmd).await,
        Command::Accounts(cmd) => accounts::run(Clients::from_flags(&cli.conn).await?, cmd).await,
        Command::Members(cmd) => members::run(Clients::from_flags(&cli.conn).await?, cmd).await,
        Command::Ledger(cmd) => ledger::run(cmd).await,
        Command::Bench(cmd) => bench::run(&cli.conn, cmd).await,
        Command::Plans(cmd) => plans::run(Clients::from_flags(&cli.conn).await?, cmd).await,
        Command::Catalog(args) => {
            if args.print_default && args.command.is_none() {
                print!("{}", kinema_server::DEFAULT_CATALOG);
                return Ok(());
            }
            plans::catalog(Clients::from_flags(&cli.conn).await?, args).await
        }
        Command::Models => models(Clients::from_flags(&cli.conn).await?).await,
        Command::Workers(cmd) => workers::run(Clients::from_flags(&cli.conn).await?, cmd).await,
        Command::Worker(args) => worker::run(&cli.conn, *args).await,
        Command::Policy(crate::cli::PolicyCommand::Check { file, text }) => {
            policy::check(&file, &text)
        }
        Command::Policy(cmd) => {
            policy::run(
                Clients::from_flags(&cli.conn).await?,
                &cli.conn.account,
                cmd,
            )
            .await
        }
        Command::Migrate(args) => worker::migrate(args).await,
    }
}

async fn models(mut c: Clients) -> anyhow::Result<()> {
    let models = c
        .jobs
        .list_models(kinema_proto::v1::ListModelsRequest {})
        .await?
        .into_inner()
        .models;
    for m in models {
        println!(
            "{}  ({})  {}",
            m.id,
            m.capabilities.join(", "),
            m.description
        );
        if let (Some(l), Some(d)) = (&m.limits, &m.defaults) {
            println!(
                "  sizes {}..={} x {}..={} (multiple of {}), frames {}..={}{}, steps {}..={}, fps <= {}",
                l.min_width, l.max_width, l.min_height, l.max_height, l.size_multiple, l.min_frames, l.max_frames,
                if l.frames_modulo > 1 { format!(" ({}k+1)", l.frames_modulo) } else { String::new() },
                l.min_steps, l.max_steps, l.max_fps
            );
            println!(
                "  defaults {}x{}, {} frames @ {} fps, {} steps, guidance {}{}",
                d.width,
                d.height,
                d.num_frames,
                d.fps,
                d.steps,
                d.guidance_scale,
                d.flow_shift
                    .map(|s| format!(", flow shift {s}"))
                    .unwrap_or_default()
            );
        }
        if m.memory_bytes > 0 {
            println!(
                "  memory ~{:.1} GiB at the default size",
                m.memory_bytes as f64 / (1u64 << 30) as f64
            );
        }
        for p in &m.prices {
            println!(
                "  {} (side <= {} px): {} credits/s",
                p.tier, p.max_side, p.credits_per_second
            );
        }
    }
    Ok(())
}
