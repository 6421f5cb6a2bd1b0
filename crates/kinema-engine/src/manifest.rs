use kinema_ledger::ModelPrice;
use kinema_media::{PreviewOptions, VideoOutput, VideoSpec};

/// What a model accepts. Requests outside these are refused at submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLimits {
    pub min_width: u32,
    pub max_width: u32,
    pub min_height: u32,
    pub max_height: u32,
    pub size_multiple: u32,
    pub min_frames: u32,
    pub max_frames: u32,
    /// Frame counts above 1 must be `frames_modulo * k + 1` (Wan: 4); 1 allows any.
    pub frames_modulo: u32,
    pub min_steps: u32,
    pub max_steps: u32,
    pub max_fps: u32,
    pub max_prompt_chars: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelDefaults {
    pub width: u32,
    pub height: u32,
    pub num_frames: u32,
    pub fps: u32,
    pub steps: u32,
    pub guidance_scale: f32,
    /// The sampler's flow shift, for flow-matching models.
    pub flow_shift: Option<f32>,
    /// How the video is encoded (default H.264 yuv420p in MP4, what every browser
    /// plays).
    pub output: VideoOutput,
    /// An animated preview beside the video; none by default.
    pub preview: Option<PreviewOptions>,
}

/// A model as the catalogue describes it: identity, limits, defaults and price.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelManifest {
    pub id: String,
    pub family: String,
    pub description: String,
    pub capabilities: Vec<String>,
    pub limits: ModelLimits,
    pub defaults: ModelDefaults,
    pub price: ModelPrice,
    /// Memory a worker needs to run the model at its default size (weights plus peak
    /// working memory), in bytes; an estimate.
    pub memory_bytes: u64,
    /// The most same-shape jobs the model denoises as one batch; 1: never batched.
    pub max_batch: u32,
    /// Memory each job beyond the first of a batch adds at the default size (its rows
    /// of the denoiser's activations), in bytes; an estimate.
    pub batch_item_bytes: u64,
    /// How long one job of this model may run (model loading not counted); overrides
    /// the server's `--job-timeout`.
    pub job_timeout: Option<std::time::Duration>,
}

/// A job's generation settings as requested: `None` means "the model's default".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSpec {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub num_frames: Option<u32>,
    pub fps: Option<u32>,
    pub steps: Option<u32>,
    pub guidance_scale: Option<f32>,
    /// The video output in its text form (`h265:crf=24`, see
    /// [`kinema_media::VideoOutput`]); `None` or empty: the model's default.
    pub output: Option<String>,
    /// The preview in its text form (`webp`, `gif:max=240`), or `none`; `None` or
    /// empty: the model's default.
    pub preview: Option<String>,
}

/// What a request's `preview` says when it names none.
pub const NO_PREVIEW: &str = "none";

/// Settings with every default filled in and every limit checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSpec {
    pub width: u32,
    pub height: u32,
    pub num_frames: u32,
    pub fps: u32,
    pub steps: u32,
    pub guidance_scale: f32,
    /// Checked against this server's FFmpeg and the video's size.
    pub output: VideoOutput,
    pub preview: Option<PreviewOptions>,
}

/// One reason a request field is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: String,
}

impl ModelManifest {
    /// The key under which a job with these settings may share a batch (the model, its
    /// size, frames and steps: [`kinema_diffusion::BatchKey`]); `None` for a model that
    /// does not batch.
    pub fn batch_key(&self, spec: &ResolvedSpec) -> Option<String> {
        (self.max_batch > 1).then(|| {
            kinema_diffusion::BatchKey {
                width: spec.width,
                height: spec.height,
                num_frames: spec.num_frames,
                steps: spec.steps,
            }
            .for_model(&self.id)
        })
    }

    /// How many jobs may share a batch on a device with `free_bytes` of memory beyond
    /// the model's own need (at least 1, at most `max_batch`).
    pub fn batch_capacity(&self, free_bytes: u64) -> usize {
        let by_memory = match free_bytes.checked_div(self.batch_item_bytes) {
            Some(extra) => 1 + extra,
            None => u64::MAX,
        };
        by_memory.min(self.max_batch.max(1) as u64) as usize
    }

    /// Fills defaults and checks every limit, reporting all violations at once.
    /// `check_prompt` is off for cost estimates, which need no prompt.
    pub fn resolve(
        &self,
        spec: &JobSpec,
        check_prompt: bool,
    ) -> Result<ResolvedSpec, Vec<FieldViolation>> {
        let l = &self.limits;
        let d = &self.defaults;
        let resolved = ResolvedSpec {
            width: spec.width.unwrap_or(d.width),
            height: spec.height.unwrap_or(d.height),
            num_frames: spec.num_frames.unwrap_or(d.num_frames),
            fps: spec.fps.unwrap_or(d.fps),
            steps: spec.steps.unwrap_or(d.steps),
            guidance_scale: spec.guidance_scale.unwrap_or(d.guidance_scale),
            output: d.output,
            preview: d.preview,
        };
        let mut bad = Vec::new();
        let mut violation =
            |field, description: String| bad.push(FieldViolation { field, description });
        let mut resolved = resolved;
        match spec.output.as_deref().filter(|s| !s.trim().is_empty()) {
            None => {}
            Some(text) => match text.parse::<VideoOutput>() {
                Ok(output) => resolved.output = output,
                Err(e) => violation("output", e.to_string()),
            },
        }
        match spec
            .preview
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => {}
            Some(text) if text.eq_ignore_ascii_case(NO_PREVIEW) => resolved.preview = None,
            Some(text) => match text.parse::<PreviewOptions>() {
                Ok(preview) => resolved.preview = Some(preview),
                Err(e) => violation("preview", e.to_string()),
            },
        }
        for (field, value, min, max) in [
            ("width", resolved.width, l.min_width, l.max_width),
            ("height", resolved.height, l.min_height, l.max_height),
        ] {
            if value < min || value > max {
                violation(
                    field,
                    format!("{value} is outside {min}..={max} for {}", self.id),
                );
            } else if value % l.size_multiple != 0 {
                violation(
                    field,
                    format!(
                        "{value} is not a multiple of {} as {} needs",
                        l.size_multiple, self.id
                    ),
                );
            }
        }
        let frames = resolved.num_frames;
        if frames < l.min_frames || frames > l.max_frames {
            violation(
                "num_frames",
                format!(
                    "{frames} is outside {}..={} for {}",
                    l.min_frames, l.max_frames, self.id
                ),
            );
        } else if l.frames_modulo > 1 && frames > 1 && !(frames - 1).is_multiple_of(l.frames_modulo)
        {
            violation(
                "num_frames",
                format!(
                    "{frames} is not {}k+1 as {} needs",
                    l.frames_modulo, self.id
                ),
            );
        }
        if resolved.fps == 0 || resolved.fps > l.max_fps {
            violation(
                "fps",
                format!("{} is outside 1..={}", resolved.fps, l.max_fps),
            );
        }
        if resolved.steps < l.min_steps || resolved.steps > l.max_steps {
            violation(
                "steps",
                format!(
                    "{} is outside {}..={}",
                    resolved.steps, l.min_steps, l.max_steps
                ),
            );
        }
        if !resolved.guidance_scale.is_finite() || !(0.0..=50.0).contains(&resolved.guidance_scale)
        {
            violation(
                "guidance_scale",
                "must be a finite number in 0..=50".to_string(),
            );
        }
        // What this server's FFmpeg can write at this size (encoder present, pixel
        // format supported, even sides for 4:2:0, ...), once the size itself is one
        // the model takes (a wrong size is reported on its own field, not twice).
        let side_ok = |v: u32, min: u32, max: u32| {
            (min..=max).contains(&v) && v.is_multiple_of(l.size_multiple)
        };
        let geometry_ok = side_ok(resolved.width, l.min_width, l.max_width)
            && side_ok(resolved.height, l.min_height, l.max_height)
            && (1..=l.max_fps).contains(&resolved.fps);
        if geometry_ok {
            let video = VideoSpec {
                width: resolved.width,
                height: resolved.height,
                fps: resolved.fps,
            };
            if let Err(e) = resolved.output.validate(&video) {
                violation("output", e.to_string());
            }
        }
        if let Err(e) = resolved
            .preview
            .as_ref()
            .map_or(Ok(()), |p| p.check_available())
        {
            violation("preview", e.to_string());
        }
        if check_prompt {
            if spec.prompt.trim().is_empty() {
                violation("prompt", "must not be empty".to_string());
            }
            for (field, text) in [
                ("prompt", &spec.prompt),
                ("negative_prompt", &spec.negative_prompt),
            ] {
                let chars = text.chars().count();
                if chars > l.max_prompt_chars as usize {
                    violation(
                        field,
                        format!("{chars} characters; at most {}", l.max_prompt_chars),
                    );
                }
                if text.contains('\0') {
                    violation(field, "must not contain NUL characters".to_string());
                }
            }
        }
        if bad.is_empty() {
            Ok(resolved)
        } else {
            Err(bad)
        }
    }
}
