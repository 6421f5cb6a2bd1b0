use kinema_proto::v1 as pb;

use super::follow;
use crate::cli::JobsCommand;
use crate::client::Clients;
use crate::print;

pub async fn run(mut c: Clients, cmd: JobsCommand) -> anyhow::Result<()> {
    let account_id = c.account.clone();
    match cmd {
        JobsCommand::List { limit, member } => {
            let jobs = c
                .jobs
                .list_jobs(pb::ListJobsRequest {
                    account_id,
                    states: vec![],
                    page_size: limit,
                    page_token: String::new(),
                    member_id: member,
                })
                .await?
                .into_inner()
                .jobs;
            for j in jobs {
                println!(
                    "{}  {:<9}  {:<8} {}x{} {}f  quoted {} debited {} refunded {}  {}",
                    j.id,
                    print::state(j.state),
                    j.model,
                    j.width,
                    j.height,
                    j.num_frames,
                    j.quoted_credits,
                    j.debited_credits,
                    j.refunded_credits,
                    print::time(&j.created_at)
                );
            }
        }
        JobsCommand::Get { job_id } => {
            print::job(
                &c.jobs
                    .get_job(pb::GetJobRequest { account_id, job_id })
                    .await?
                    .into_inner(),
            );
        }
        JobsCommand::Cancel { job_id } => {
            print::job(
                &c.jobs
                    .cancel_job(pb::CancelJobRequest { account_id, job_id })
                    .await?
                    .into_inner(),
            );
        }
        JobsCommand::Watch { job_id } => {
            let job = follow::watch(
                &mut c,
                &job_id,
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )
            .await?;
            print::job(&job);
        }
        JobsCommand::Download {
            job_id,
            output,
            poster,
            preview,
        } => {
            let job = c
                .jobs
                .get_job(pb::GetJobRequest { account_id, job_id })
                .await?
                .into_inner();
            let kind = match (poster, preview) {
                (true, _) => pb::ArtifactKind::Poster,
                (_, true) => pb::ArtifactKind::Preview,
                _ => pb::ArtifactKind::Video,
            };
            let bytes = follow::download(&mut c, &job, kind, &output).await?;
            println!("{} ({bytes} bytes)", output.display());
        }
    }
    Ok(())
}
