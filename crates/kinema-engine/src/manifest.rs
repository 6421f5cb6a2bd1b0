use kinema_ledger::ModelPrice;
use kinema_media::{PreviewOptions, VideoOutput, VideoSpec};
use kinema_params::{DecodedImage, GenerationParams, ImageLimits, ImageSlot, InputImage, SizeRule};

/// What a model generates from (`ModelManifest::capabilities`; `ListModels` shows them).
pub mod capability {
    /// Text to video: a prompt alone.
    pub const T2V: &str = "t2v";
    /// Image to video: a first frame (`image`) and a prompt.
    pub const I2V: &str = "i2v";
    /// First and last frame (`image` and `last_image`) and a prompt.
    pub const FLF2V: &str = "flf2v";
}

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
    /// [`capability`]'s words: `t2v`, `i2v`, `flf2v` (and `test-source` for the test
    /// source). A model with `i2v` but not `t2v` requires an input image.
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

/// The input images a request sent, encoded as sent (empty: none), and the caps
/// they are held to.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestImages<'a> {
    pub image: &'a [u8],
    pub last_image: &'a [u8],
    pub limits: ImageLimits,
}

/// What [`ModelManifest::resolve_job`] adds to a [`JobSpec`]: the fields the offline
/// path does not take.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobExtras<'a> {
    pub images: RequestImages<'a>,
    pub guidance_scale_2: Option<f32>,
    pub seed: u64,
}

/// A request resolved: the job's parameters (input images decoded, fitted and
/// PNG-encoded) and the checked output settings in their typed form.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedJob {
    pub params: GenerationParams,
    pub spec: ResolvedSpec,
}

impl ModelManifest {
    /// Whether the model lists `capability` ([`capability`]).
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// Whether the model takes a first frame.
    pub fn takes_image(&self) -> bool {
        self.has_capability(capability::I2V) || self.has_capability(capability::FLF2V)
    }

    /// Whether the model generates without one (image-to-video-only models do not).
    pub fn needs_image(&self) -> bool {
        self.takes_image() && !self.has_capability(capability::T2V)
    }

    /// How the video's size follows an input image when the request names none: the
    /// image's aspect ratio at the model's default area, within its limits.
    pub fn size_rule(&self) -> SizeRule {
        let l = &self.limits;
        SizeRule {
            area: self.defaults.width as u64 * self.defaults.height as u64,
            multiple: l.size_multiple,
            min_width: l.min_width,
            max_width: l.max_width,
            min_height: l.min_height,
            max_height: l.max_height,
        }
    }

    /// Resolves a request into the job's parameters, reporting every violation at
    /// once: [`ModelManifest::resolve`]'s checks, plus the input images (decodable,
    /// within the caps, taken by this model; required by an image-only model) and the
    /// second guidance scale. With an image and neither `width` nor `height` set, the
    /// size follows the image ([`kinema_params::fit_size`]); each image is then
    /// fitted to exactly the video's size (cover, centre crop) and PNG-encoded.
    pub fn resolve_job(
        &self,
        spec: &JobSpec,
        extras: &JobExtras<'_>,
        check_prompt: bool,
    ) -> Result<ResolvedJob, Vec<FieldViolation>> {
        let mut bad = Vec::new();
        let images = &extras.images;
        let mut decoded: Vec<(ImageSlot, DecodedImage)> = Vec::new();
        for (slot, bytes, allowed) in [
            (ImageSlot::Image, images.image, self.takes_image()),
            (
                ImageSlot::LastImage,
                images.last_image,
                self.has_capability(capability::FLF2V),
            ),
        ] {
            if bytes.is_empty() {
                continue;
            }
            if !allowed {
                let what = match slot {
                    ImageSlot::Image => "an input image",
                    ImageSlot::LastImage => "a last frame",
                };
                bad.push(FieldViolation {
                    field: slot.as_str(),
                    description: format!(
                        "{} does not take {what} (capabilities: {})",
                        self.id,
                        self.capabilities.join(", ")
                    ),
                });
                continue;
            }
            match kinema_params::decode(bytes, &images.limits) {
                Ok(image) => decoded.push((slot, image)),
                Err(e) => bad.push(FieldViolation {
                    field: slot.as_str(),
                    description: format!("the image {e}"),
                }),
            }
        }
        if images.image.is_empty() && self.needs_image() {
            bad.push(FieldViolation {
                field: ImageSlot::Image.as_str(),
                description: format!("{} generates from an input image: none was given", self.id),
            });
        }
        if images.image.is_empty()
            && !images.last_image.is_empty()
            && self.has_capability(capability::FLF2V)
        {
            bad.push(FieldViolation {
                field: ImageSlot::LastImage.as_str(),
                description: "a last frame needs a first frame (`image`) too".into(),
            });
        }
        if let Some(g) = extras.guidance_scale_2 {
            if !g.is_finite() || !(0.0..=50.0).contains(&g) {
                bad.push(FieldViolation {
                    field: "guidance_scale_2",
                    description: "must be a finite number in 0..=50".to_string(),
                });
            }
        }
        // The size follows the first frame when the request leaves it to the model.
        let mut sized = spec.clone();
        if let Some((_, first)) = decoded.iter().find(|(s, _)| *s == ImageSlot::Image) {
            if spec.width.is_none() && spec.height.is_none() {
                let (w, h) = kinema_params::fit_size(first.width, first.height, &self.size_rule());
                sized.width = Some(w);
                sized.height = Some(h);
            }
        }
        let resolved = match self.resolve(&sized, check_prompt) {
            Ok(r) => Some(r),
            Err(v) => {
                bad.extend(v);
                None
            }
        };
        let Some(resolved) = resolved.filter(|_| bad.is_empty()) else {
            return Err(bad);
        };
        let mut params = GenerationParams {
            model: self.id.clone(),
            prompt: spec.prompt.clone(),
            negative_prompt: spec.negative_prompt.clone(),
            image: None,
            last_image: None,
            width: resolved.width,
            height: resolved.height,
            num_frames: resolved.num_frames,
            fps: resolved.fps,
            steps: resolved.steps,
            guidance_scale: resolved.guidance_scale,
            guidance_scale_2: extras.guidance_scale_2,
            seed: extras.seed,
            output: resolved.output.to_string(),
            preview: resolved.preview.map(|p| p.to_string()),
        };
        for (slot, image) in decoded {
            let fitted = kinema_params::fit(&image, resolved.width, resolved.height);
            match InputImage::encode(&fitted) {
                Ok(stored) => *params.image_mut(slot) = Some(stored),
                Err(e) => bad.push(FieldViolation {
                    field: slot.as_str(),
                    description: format!("the image {e}"),
                }),
            }
        }
        if bad.is_empty() {
            Ok(ResolvedJob {
                params,
                spec: resolved,
            })
        } else {
            Err(bad)
        }
    }

    /// The key under which a job with these parameters may share a batch (the model,
    /// its size, frames and steps: [`kinema_diffusion::BatchKey`]); `None` for a model
    /// that does not batch, and for a job with input images (a batch denoises its
    /// members as one, and the pipelines take one conditioning image per batch).
    pub fn batch_key(&self, spec: &GenerationParams) -> Option<String> {
        (self.max_batch > 1 && !spec.has_images()).then(|| {
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
