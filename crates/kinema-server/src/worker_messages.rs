//! The worker protocol's messages and the store's types, both ways: the control plane
//! sends a leased job as a `LeasedJob`, a worker node turns it back into the job its
//! engine runs; usage records travel as JSON so no field is lost on the way.

use kinema_engine::{GenerationParams, InputImage};
use kinema_proto::v1 as pb;
use kinema_store as store;

use crate::convert::{job_state, millis, stage, store_job_state, timestamp};

/// What a worker node needs of a job to run it.
pub fn leased_job(j: &store::Job) -> pb::LeasedJob {
    let p = &j.params;
    pb::LeasedJob {
        id: j.id.clone(),
        state: job_state(j.state) as i32,
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
        output: p.output.clone(),
        preview: p.preview.clone().unwrap_or_default(),
        image: p.image.as_ref().map(leased_image),
        last_image: p.last_image.as_ref().map(leased_image),
        metadata: j.metadata.clone(),
        attempts: j.attempts,
        handed_back: j.handed_back,
        run_alone: j.run_alone,
        batch_key: j.batch_key.clone().unwrap_or_default(),
        cancel_requested: j.cancel_requested,
        created_at: Some(timestamp(j.created_at)),
        account_id: j.account_id.clone(),
        quoted_credits: j.quoted,
    }
}

/// An input image as a lease sends it: the stored PNG with its hash and size.
fn leased_image(i: &InputImage) -> pb::LeasedImage {
    pb::LeasedImage {
        png: i.png.as_deref().map(<[u8]>::to_vec).unwrap_or_default(),
        sha256: i.sha256.clone(),
        width: i.width,
        height: i.height,
    }
}

/// The input image a node runs, from its lease; one sent without its bytes is refused
/// (the job cannot run without them).
fn input_image(i: &pb::LeasedImage) -> Result<InputImage, String> {
    if i.png.is_empty() {
        return Err("a leased input image came without its bytes".into());
    }
    Ok(InputImage {
        width: i.width,
        height: i.height,
        sha256: i.sha256.clone(),
        png: Some(i.png.clone().into()),
    })
}

/// The job a worker node's engine runs, from what the control plane sent. Money and
/// queue fields the worker never reads keep their defaults.
pub fn store_job(j: &pb::LeasedJob, owner: &str) -> Result<store::Job, String> {
    let state = pb::JobState::try_from(j.state)
        .ok()
        .and_then(store_job_state)
        .ok_or_else(|| format!("job {} has an unknown state {}", j.id, j.state))?;
    Ok(store::Job {
        seq: 0,
        id: j.id.clone(),
        account_id: j.account_id.clone(),
        external_id: None,
        idempotency_key: None,
        params: GenerationParams {
            model: j.model.clone(),
            prompt: j.prompt.clone(),
            negative_prompt: j.negative_prompt.clone(),
            image: j.image.as_ref().map(input_image).transpose()?,
            last_image: j.last_image.as_ref().map(input_image).transpose()?,
            width: j.width,
            height: j.height,
            num_frames: j.num_frames,
            fps: j.fps,
            steps: j.steps,
            guidance_scale: j.guidance_scale,
            guidance_scale_2: j.guidance_scale_2,
            seed: j.seed,
            output: j.output.clone(),
            preview: (!j.preview.is_empty()).then(|| j.preview.clone()),
        },
        callback_url: String::new(),
        metadata: j.metadata.clone(),
        state,
        stage: None,
        progress_step: 0,
        progress_total: j.steps,
        quoted: j.quoted_credits,
        held: 0,
        debited: 0,
        refunded: 0,
        failure: None,
        cancel_requested: j.cancel_requested,
        attempts: j.attempts,
        handed_back: j.handed_back,
        usage: store::Usage::default(),
        created_at: j.created_at.as_ref().map(millis).unwrap_or_default(),
        started_at: None,
        finished_at: None,
        artifacts: Vec::new(),
        queue_position: None,
        priority: store::JobPriority::Normal,
        batch_key: (!j.batch_key.is_empty()).then(|| j.batch_key.clone()),
        run_alone: j.run_alone,
        billing: store::JobBilling::Credits,
        price: None,
        charged_minor: 0,
        lease_owner: Some(owner.to_string()),
        prompt_expires_at: None,
        prompt_purged_at: None,
        member_id: None,
    })
}

pub fn job_stage(s: store::Stage) -> pb::JobStage {
    stage(s)
}

pub fn store_stage(s: i32) -> Option<store::Stage> {
    Some(match pb::JobStage::try_from(s).ok()? {
        pb::JobStage::EncodingText => store::Stage::EncodingText,
        pb::JobStage::Denoising => store::Stage::Denoising,
        pb::JobStage::Decoding => store::Stage::Decoding,
        pb::JobStage::EncodingVideo => store::Stage::EncodingVideo,
        pb::JobStage::Storing => store::Stage::Storing,
        pb::JobStage::Unspecified => return None,
    })
}

pub fn store_artifact_kind(k: i32) -> Option<store::ArtifactKind> {
    Some(match pb::ArtifactKind::try_from(k).ok()? {
        pb::ArtifactKind::Video => store::ArtifactKind::Video,
        pb::ArtifactKind::Poster => store::ArtifactKind::Poster,
        pb::ArtifactKind::Preview => store::ArtifactKind::Preview,
        pb::ArtifactKind::Unspecified => return None,
    })
}

pub fn failure(f: &store::Failure) -> pb::JobFailure {
    pb::JobFailure {
        code: f.code.clone(),
        message: f.message.clone(),
        retryable: f.retryable,
    }
}

pub fn store_failure(f: &pb::JobFailure) -> store::Failure {
    store::Failure {
        code: f.code.clone(),
        message: f.message.clone(),
        retryable: f.retryable,
    }
}

pub fn usage_json(u: &store::Usage) -> String {
    serde_json::to_string(u).unwrap_or_else(|_| "{}".into())
}

/// A usage record as a worker sent it; empty is none.
pub fn store_usage(json: &str) -> Result<store::Usage, String> {
    if json.trim().is_empty() {
        return Ok(store::Usage::default());
    }
    serde_json::from_str(json).map_err(|e| format!("usage_json: {e}"))
}
