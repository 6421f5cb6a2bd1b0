//! Models an operator adds to a server: `--model ID=SOURCE` flags and models files
//! (TOML, `[[model]]` tables). Each spec becomes a [`ModelManifest`] (derived from the
//! model directory, with the operator's overrides) and a constructor in the
//! [`ModelRegistry`]; weights are loaded on the first job.
//!
//! ```toml
//! [[model]]
//! id = "wan2.1-t2v-1.3b"
//! source = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"  # a folder, or a repo id in the hf-hub cache
//! device = "cpu"            # or "cuda:0"; dtype defaults to f32 on CPU, bf16 on CUDA
//! vae_dtype = "f32"         # the default whatever `dtype` is; "bf16" halves its memory
//! offload_text_encoder = false  # true: umT5 in host memory, on the device only to encode
//! [model.defaults]          # each optional: the model family's defaults otherwise
//! width = 832
//! height = 480
//! frames = 81
//! steps = 50
//! guidance = 5.0
//! shift = 3.0
//! [model.limits]            # each optional
//! max_frames = 129
//! [model.price]
//! default_steps = 50
//! tiers = [{ tier = "480p", max_side = 854, credits_per_second = 10 }]
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::DType;
use kinema_diffusion::weights::{default_dtype, parse_device, parse_dtype, resolve_model_source};
use kinema_diffusion::{Pipeline, PipelineError};
use kinema_ledger::{ModelPrice, TierPrice};
use kinema_media::{PreviewOptions, VideoOutput};
use kinema_wan::info::{WanModelInfo, WanTask};
use kinema_wan::pipeline::WanPipeline;
use kinema_wan::pipeline_i2v::WanImageToVideoPipeline;
use kinema_wan::Precision;
use serde::Deserialize;

use crate::{JobSpec, ModelDefaults, ModelLimits, ModelManifest, ModelRegistry};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("models file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("model {id:?}: {message}")]
    Model { id: String, message: String },
}

fn model_error(id: &str, message: impl std::fmt::Display) -> CatalogError {
    CatalogError::Model {
        id: id.to_string(),
        message: message.to_string(),
    }
}

/// One model as an operator describes it. Everything but `id` and `source` is
/// optional: the family's defaults and what the model directory says fill the rest.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub id: String,
    /// Model family; only `wan` (Wan 2.1 text-to-video) so far.
    #[serde(default = "default_family")]
    pub family: String,
    /// A Diffusers model folder, or a Hugging Face repo id (`org/name[@revision]`)
    /// already in the local hub cache.
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `cpu` (default), `cuda` or `cuda:N`.
    #[serde(default)]
    pub device: Option<String>,
    /// `f32`, `bf16` or `f16`; default f32 on CPU, bf16 on CUDA.
    #[serde(default)]
    pub dtype: Option<String>,
    /// The VAE's dtype: `f32` (default, as the reference keeps Wan's VAE), `bf16`, `f16`.
    #[serde(default)]
    pub vae_dtype: Option<String>,
    /// Keep the text encoder in host memory, copied to the device for each request's
    /// prompts (the device holds it only while encoding).
    #[serde(default)]
    pub offload_text_encoder: bool,
    #[serde(default)]
    pub defaults: DefaultsSpec,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub price: Option<ModelPrice>,
    /// Memory a worker needs for this model at its default size; estimated from the
    /// model (weights + working memory) when not given.
    #[serde(default)]
    pub memory_gib: Option<f64>,
    /// The most same-shape jobs denoised as one batch (1: never batched); default 8,
    /// and the server's `--max-batch` caps it.
    #[serde(default)]
    pub max_batch: Option<u32>,
    /// Seconds one job of this model may run (model loading not counted); overrides
    /// the server's `--job-timeout`.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

fn default_family() -> String {
    "wan".into()
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frames: Option<u32>,
    pub fps: Option<u32>,
    pub steps: Option<u32>,
    pub guidance: Option<f32>,
    /// Flow shift of the sampler (Wan: 3.0 for 480p, 5.0 suggested for 720p).
    pub shift: Option<f32>,
    /// How the video is encoded unless a job says otherwise, in the text form of
    /// `kinema_media::VideoOutput` (`h264`, `h265:crf=24`, `vp9:pix=yuv444p`, ...);
    /// default `h264` (yuv420p MP4).
    pub output: Option<String>,
    /// An animated preview made for every job unless it says otherwise (`webp`,
    /// `gif:max=240`); default none.
    pub preview: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub min_width: Option<u32>,
    pub max_width: Option<u32>,
    pub min_height: Option<u32>,
    pub max_height: Option<u32>,
    pub min_frames: Option<u32>,
    pub max_frames: Option<u32>,
    pub min_steps: Option<u32>,
    pub max_steps: Option<u32>,
    pub max_fps: Option<u32>,
    pub max_prompt_chars: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsFile {
    #[serde(default)]
    model: Vec<ModelSpec>,
}

/// A model's default video output, checked against this FFmpeg now so that a
/// models file naming an encoder the server lacks fails at start.
fn default_output(id: &str, text: Option<&str>) -> Result<VideoOutput, CatalogError> {
    let output = match text {
        None => VideoOutput::default(),
        Some(t) => t
            .parse()
            .map_err(|e| model_error(id, format!("defaults.output: {e}")))?,
    };
    output
        .check_available()
        .map_err(|e| model_error(id, format!("defaults.output: {e}")))?;
    Ok(output)
}

/// A model's default preview (`none` or absent: none), checked like its output.
fn default_preview(id: &str, text: Option<&str>) -> Result<Option<PreviewOptions>, CatalogError> {
    let Some(text) = text.filter(|t| !t.eq_ignore_ascii_case(crate::manifest::NO_PREVIEW)) else {
        return Ok(None);
    };
    let preview: PreviewOptions = text
        .parse()
        .map_err(|e| model_error(id, format!("defaults.preview: {e}")))?;
    preview
        .check_available()
        .map_err(|e| model_error(id, format!("defaults.preview: {e}")))?;
    Ok(Some(preview))
}

/// `ID=SOURCE` (the `--model` flag): a model with every default.
pub fn parse_model_flag(flag: &str) -> Result<ModelSpec, String> {
    let (id, source) = flag
        .split_once('=')
        .ok_or_else(|| format!("{flag:?}: expected ID=SOURCE (a model folder or repo id)"))?;
    let (id, source) = (id.trim(), source.trim());
    if id.is_empty() || source.is_empty() {
        return Err(format!("{flag:?}: expected ID=SOURCE with neither empty"));
    }
    Ok(ModelSpec {
        id: id.into(),
        family: default_family(),
        source: source.into(),
        ..ModelSpec::default()
    })
}

/// Parses a models file. A relative `source` that names a folder beside the file is
/// taken relative to the file; anything else stays as written (a repo id, or a path
/// relative to the working directory).
pub fn parse_models_file(path: &Path) -> Result<Vec<ModelSpec>, CatalogError> {
    let err = |message: String| CatalogError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: ModelsFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(file
        .model
        .into_iter()
        .map(|mut m| {
            let beside = base.join(&m.source);
            if Path::new(&m.source).is_relative() && beside.is_dir() {
                m.source = beside.to_string_lossy().into_owned();
            }
            m
        })
        .collect())
}

impl ModelRegistry {
    /// The built-in models plus `specs`. Every spec's model directory is read now (so
    /// a wrong path fails at startup); weights load on first use.
    pub fn with_models(specs: &[ModelSpec]) -> Result<Self, CatalogError> {
        let mut registry = Self::builtin();
        for spec in specs {
            registry.add_spec(spec)?;
        }
        Ok(registry)
    }

    /// Registers one operator-described model.
    pub fn add_spec(&mut self, spec: &ModelSpec) -> Result<(), CatalogError> {
        if spec.id.trim().is_empty()
            || !spec
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(model_error(
                &spec.id,
                "ids are non-empty ASCII letters, digits, '-', '_' and '.'",
            ));
        }
        if self.manifest(&spec.id).is_some() {
            return Err(model_error(&spec.id, "registered twice"));
        }
        match spec.family.as_str() {
            "wan" => {
                let (manifest, load) = wan_model(spec)?;
                self.register(manifest, load);
                Ok(())
            }
            other => Err(model_error(
                &spec.id,
                format!("unknown family {other:?} (known: wan)"),
            )),
        }
    }
}

/// The manifest a spec gives (its model folder read, nothing loaded), as a server
/// would list it.
pub fn manifest_for(spec: &ModelSpec) -> Result<ModelManifest, CatalogError> {
    match spec.family.as_str() {
        "wan" => Ok(wan_model(spec)?.0),
        other => Err(model_error(
            &spec.id,
            format!("unknown family {other:?} (known: wan)"),
        )),
    }
}

/// A Wan folder (Wan 2.1 text-to-video `WanPipeline`, or image-to-video
/// `WanImageToVideoPipeline`: Wan 2.1 I2V / FLF2V, Wan 2.2 I2V-A14B): the manifest from
/// the model folder and the spec, and the constructor that loads it.
#[allow(clippy::type_complexity)]
fn wan_model(
    spec: &ModelSpec,
) -> Result<
    (
        ModelManifest,
        impl Fn(&str) -> Result<Arc<dyn Pipeline>, PipelineError> + Send + Sync + 'static,
    ),
    CatalogError,
> {
    let id = spec.id.as_str();
    let dir = resolve_model_source(&spec.source).map_err(|e| model_error(id, e))?;
    let info = WanModelInfo::inspect(&dir).map_err(|e| model_error(id, e))?;
    let device_name = spec.device.clone().unwrap_or_else(|| "cpu".into());
    let device = parse_device(&device_name).map_err(|e| model_error(id, e))?;
    let dtype = match &spec.dtype {
        Some(d) => parse_dtype(d).map_err(|e| model_error(id, e))?,
        None => default_dtype(&device),
    };
    let vae_dtype = match &spec.vae_dtype {
        Some(d) => parse_dtype(d).map_err(|e| model_error(id, e))?,
        None => DType::F32,
    };

    let d = &spec.defaults;
    let shift = d.shift.unwrap_or(info.scheduler.shift() as f32);
    let defaults = ModelDefaults {
        width: d.width.unwrap_or(832),
        height: d.height.unwrap_or(480),
        num_frames: d.frames.unwrap_or(81),
        fps: d.fps.unwrap_or(16),
        steps: d.steps.unwrap_or(50),
        guidance_scale: d.guidance.unwrap_or(5.0),
        flow_shift: Some(shift),
        output: default_output(id, d.output.as_deref())?,
        preview: default_preview(id, d.preview.as_deref())?,
    };
    if !(shift.is_finite() && shift > 0.0) {
        return Err(model_error(
            id,
            format!("flow shift {shift} must be positive"),
        ));
    }
    let l = &spec.limits;
    let multiple = info.size_multiple();
    let limits = ModelLimits {
        min_width: l.min_width.unwrap_or(multiple),
        max_width: l.max_width.unwrap_or(1280),
        min_height: l.min_height.unwrap_or(multiple),
        max_height: l.max_height.unwrap_or(1280),
        size_multiple: multiple,
        min_frames: l.min_frames.unwrap_or(1),
        max_frames: l.max_frames.unwrap_or(129),
        frames_modulo: info.frames_modulo(),
        min_steps: l.min_steps.unwrap_or(1),
        max_steps: l.max_steps.unwrap_or(100),
        max_fps: l.max_fps.unwrap_or(60),
        max_prompt_chars: l.max_prompt_chars.unwrap_or(4000),
    };
    let price = spec.price.clone().unwrap_or_else(|| ModelPrice {
        tiers: vec![
            TierPrice {
                tier: "480p".into(),
                max_side: 854,
                credits_per_second: 10,
            },
            TierPrice {
                tier: "720p".into(),
                max_side: 1280,
                credits_per_second: 20,
            },
        ],
        default_steps: defaults.steps,
    });
    let estimate = info.memory_estimate(
        Precision::new(dtype).with_vae(vae_dtype),
        defaults.width,
        defaults.height,
        defaults.num_frames,
    );
    let offload_text_encoder = spec.offload_text_encoder;
    let memory_bytes = match spec.memory_gib {
        Some(g) if g.is_finite() && g > 0.0 => (g * (1u64 << 30) as f64) as u64,
        Some(g) => return Err(model_error(id, format!("memory_gib {g} must be positive"))),
        None if offload_text_encoder => estimate.total_with_text_encoder_offloaded(),
        None => estimate.total(),
    };
    let job_timeout = match spec.timeout_secs {
        Some(t) => Some(crate::parse_secs(&t.to_string()).map_err(|e| model_error(id, e))?),
        None => None,
    };
    let manifest = ModelManifest {
        id: id.to_string(),
        family: "wan".into(),
        description: spec.description.clone().unwrap_or_else(|| {
            let params = if info.params.transformer_2 > 0 {
                format!(
                    "{} + {} transformer parameters",
                    human_count(info.params.transformer),
                    human_count(info.params.transformer_2)
                )
            } else {
                format!(
                    "{} transformer parameters",
                    human_count(info.params.transformer)
                )
            };
            format!(
                "{}, {params} ({}, {} on {device_name})",
                wan_kind(&info),
                spec.source,
                dtype.as_str()
            )
        }),
        capabilities: info.capabilities().iter().map(|c| c.to_string()).collect(),
        max_batch: match info.task {
            // image jobs do not batch
            WanTask::ImageToVideo { .. } => 1,
            WanTask::TextToVideo => spec
                .max_batch
                .unwrap_or(kinema_wan::pipeline::DEFAULT_MAX_BATCH as u32),
        },
        // a batched item adds its conditional and unconditional rows
        batch_item_bytes: estimate.transformer_activations,
        limits,
        defaults,
        price,
        memory_bytes,
        job_timeout,
    };
    // The defaults must be a request the model accepts.
    manifest
        .resolve(
            &JobSpec {
                prompt: "defaults check".into(),
                ..JobSpec::default()
            },
            true,
        )
        .map_err(|violations| {
            let why: Vec<String> = violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect();
            model_error(
                id,
                format!("its defaults break its limits: {}", why.join("; ")),
            )
        })?;
    if manifest.price.tiers.is_empty() || manifest.price.default_steps == 0 {
        return Err(model_error(
            id,
            "a price needs at least one tier and default_steps > 0",
        ));
    }
    tracing::info!(
        model = id,
        dir = %dir.display(),
        device = %device_name,
        dtype = dtype.as_str(),
        vae_dtype = vae_dtype.as_str(),
        memory_gib = memory_bytes as f64 / (1u64 << 30) as f64,
        "registered Wan model"
    );
    // Loads onto the device of the worker that runs it; `device` in the spec only
    // decides the dtype default and the memory estimate when that is not given.
    let dtype_override = spec.dtype.is_some().then_some(dtype);
    let task = info.task;
    let load = move |target: &str| {
        let device = parse_device(target).map_err(PipelineError::Model)?;
        let dtype = dtype_override.unwrap_or_else(|| default_dtype(&device));
        let precision = Precision::new(dtype).with_vae(vae_dtype);
        let loading = |e: kinema_wan::WanError| {
            PipelineError::Model(format!("loading {}: {e}", dir.display()))
        };
        if let WanTask::ImageToVideo { .. } = task {
            let mut p = WanImageToVideoPipeline::load(&dir, &device, precision).map_err(loading)?;
            if offload_text_encoder {
                p.offload_text_encoder().map_err(loading)?;
            }
            p.scheduler = p.scheduler.clone().with_shift(shift as f64);
            return Ok(Arc::new(p) as Arc<dyn Pipeline>);
        }
        let mut p = WanPipeline::load(&dir, &device, precision).map_err(loading)?;
        if offload_text_encoder {
            p.offload_text_encoder().map_err(loading)?;
        }
        p.scheduler = p.scheduler.clone().with_shift(shift as f64);
        Ok(Arc::new(p) as Arc<dyn Pipeline>)
    };
    Ok((manifest, load))
}

/// What a Wan folder is, for its description.
fn wan_kind(info: &WanModelInfo) -> &'static str {
    match info.task {
        WanTask::TextToVideo if info.index.expand_timesteps => {
            "Wan 2.2 text- and image-to-video (TI2V)"
        }
        WanTask::TextToVideo if info.index.two_experts() => {
            "Wan 2.2 text-to-video, two experts (A14B)"
        }
        WanTask::TextToVideo => "Wan 2.1 text-to-video",
        WanTask::ImageToVideo { last_image: true } => "Wan 2.1 first-last-frame-to-video",
        WanTask::ImageToVideo { .. } if info.index.two_experts() => {
            "Wan 2.2 image-to-video, two experts (A14B)"
        }
        WanTask::ImageToVideo { .. } => "Wan 2.1 image-to-video",
    }
}

/// `1.42B`, `30.1M`, `5.2K`, `12`.
fn human_count(n: u64) -> String {
    let f = n as f64;
    match n {
        1_000_000_000.. => format!("{:.2}B", f / 1e9),
        1_000_000.. => format!("{:.1}M", f / 1e6),
        1_000.. => format!("{:.1}K", f / 1e3),
        _ => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/wan/fixtures/tiny/model")
    }

    fn tiny_spec() -> ModelSpec {
        ModelSpec {
            defaults: DefaultsSpec {
                width: Some(48),
                height: Some(32),
                frames: Some(5),
                steps: Some(2),
                ..DefaultsSpec::default()
            },
            ..parse_model_flag(&format!("wan-tiny={}", tiny_dir().display())).unwrap()
        }
    }

    /// The Wan 2.2 fixture folders: TI2V (text- and image-to-video) and A14B (two
    /// experts).
    fn wan22_spec(id: &str, fixture: &str) -> ModelSpec {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/wan/fixtures")
            .join(fixture)
            .join("model");
        ModelSpec {
            defaults: DefaultsSpec {
                width: Some(96),
                height: Some(32),
                frames: Some(9),
                steps: Some(2),
                ..DefaultsSpec::default()
            },
            ..parse_model_flag(&format!("{id}={}", dir.display())).unwrap()
        }
    }

    #[test]
    fn wan22_manifests() {
        let ti2v = manifest_for(&wan22_spec("ti2v", "wan22-ti2v")).unwrap();
        assert_eq!(ti2v.family, "wan");
        assert_eq!(ti2v.capabilities, ["t2v", "i2v"]);
        // 16x VAE x patch 2
        assert_eq!(ti2v.limits.size_multiple, 32);
        assert_eq!(ti2v.defaults.flow_shift, Some(5.0));
        assert!(ti2v.description.contains("TI2V"), "{}", ti2v.description);

        let a14b = manifest_for(&wan22_spec("a14b", "wan22-a14b")).unwrap();
        assert_eq!(a14b.family, "wan");
        assert_eq!(a14b.capabilities, ["t2v"]);
        assert_eq!(a14b.limits.size_multiple, 16);
        // residency counts both experts: the A14B folder is the tiny T2V plus a second
        // transformer of the same size
        let info = WanModelInfo::inspect(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/wan/fixtures/wan22-a14b/model"),
        )
        .unwrap();
        assert!(info.params.transformer_2 > 0);
        let single = WanModelInfo {
            params: kinema_wan::info::ParamCounts {
                transformer_2: 0,
                ..info.params
            },
            ..info.clone()
        };
        let dtype = default_dtype(&parse_device("cpu").unwrap());
        assert_eq!(
            a14b.memory_bytes - single.memory_estimate(dtype, 96, 32, 9).total(),
            info.params.transformer_2 * dtype.size_in_bytes() as u64
        );
    }

    #[test]
    fn counts_read_as_people_write_them() {
        assert_eq!(human_count(1_418_996_800), "1.42B");
        assert_eq!(human_count(30_100_000), "30.1M");
        assert_eq!(human_count(5_200), "5.2K");
        assert_eq!(human_count(12), "12");
    }

    #[test]
    fn model_flags_parse() {
        let m = parse_model_flag("wan=Wan-AI/Wan2.1-T2V-1.3B-Diffusers").unwrap();
        assert_eq!(
            (m.id.as_str(), m.source.as_str(), m.family.as_str()),
            ("wan", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "wan")
        );
        assert!(parse_model_flag("no-source").is_err());
        assert!(parse_model_flag("=x").is_err());
        assert!(parse_model_flag("x=").is_err());
    }

    #[test]
    fn wan_manifest_from_the_tiny_model() {
        let registry = ModelRegistry::with_models(&[tiny_spec()]).unwrap();
        let m = registry.manifest("wan-tiny").unwrap();
        assert_eq!(m.family, "wan");
        assert_eq!(m.capabilities, ["t2v"]);
        assert_eq!((m.limits.size_multiple, m.limits.frames_modulo), (16, 4));
        assert_eq!(
            m.defaults.flow_shift,
            Some(3.0),
            "from scheduler_config.json"
        );
        assert_eq!(
            (
                m.defaults.width,
                m.defaults.height,
                m.defaults.num_frames,
                m.defaults.steps
            ),
            (48, 32, 5, 2)
        );
        assert!(m.memory_bytes > 0);
        assert_eq!(m.price.default_steps, 2);
        // Wan batches same-shape jobs; each further item needs its activations
        assert_eq!(m.max_batch, 8);
        assert!(m.batch_item_bytes > 0 && m.batch_item_bytes < m.memory_bytes);
        let job = m
            .resolve_job(
                &JobSpec {
                    prompt: "x".into(),
                    ..JobSpec::default()
                },
                &crate::JobExtras::default(),
                true,
            )
            .unwrap();
        assert_eq!(
            m.batch_key(&job.params).as_deref(),
            Some("wan-tiny/48x32x5/2")
        );
        assert_eq!(m.batch_capacity(0), 1);
        assert_eq!(m.batch_capacity(2 * m.batch_item_bytes), 3);
        assert_eq!(m.batch_capacity(u64::MAX), 8);
        // 4k+1 frames and multiples of 16 are enforced by the manifest
        let bad = m
            .resolve(
                &JobSpec {
                    prompt: "x".into(),
                    num_frames: Some(6),
                    width: Some(40),
                    ..JobSpec::default()
                },
                true,
            )
            .unwrap_err();
        let fields: Vec<&str> = bad.iter().map(|v| v.field).collect();
        assert_eq!(fields, ["width", "num_frames"]);
        // testsrc stays
        assert!(registry.manifest("testsrc").is_some());
    }

    #[test]
    fn bad_specs_fail_at_startup() {
        let dup = ModelRegistry::with_models(&[tiny_spec(), tiny_spec()]);
        assert!(matches!(dup, Err(CatalogError::Model { .. })));
        let missing = ModelSpec {
            source: "/nonexistent/wan".into(),
            ..tiny_spec()
        };
        assert!(ModelRegistry::with_models(&[missing]).is_err());
        let family = ModelSpec {
            family: "ltx".into(),
            ..tiny_spec()
        };
        let e = ModelRegistry::with_models(&[family]).err().unwrap();
        assert!(e.to_string().contains("unknown family"), "{e}");
        let odd = ModelSpec {
            defaults: DefaultsSpec {
                frames: Some(6),
                ..tiny_spec().defaults
            },
            ..tiny_spec()
        };
        let e = ModelRegistry::with_models(&[odd]).err().unwrap();
        assert!(e.to_string().contains("num_frames"), "{e}");
        let cuda = ModelSpec {
            device: Some("cuda:0".into()),
            ..tiny_spec()
        };
        if !candle_core::utils::cuda_is_available() {
            let e = ModelRegistry::with_models(&[cuda]).err().unwrap();
            assert!(e.to_string().contains("`cuda` cargo feature"), "{e}");
        }
    }

    /// The quick start serves this file: it must stay loadable as the tree changes.
    #[test]
    fn bundled_models_file_serves_the_tiny_model() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/bundled.toml");
        let specs = parse_models_file(&file).unwrap();
        let registry = ModelRegistry::with_models(&specs).unwrap();
        let m = registry.manifest("wan2.1-tiny").unwrap();
        assert_eq!((m.defaults.width, m.defaults.height), (320, 192));
        assert!(m.defaults.num_frames <= m.limits.max_frames);
        assert!(Path::new(&specs[0].source)
            .join("model_index.json")
            .is_file());
    }

    #[test]
    fn models_file_resolves_sources_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(tiny_dir(), tmp.path().join("tiny")).unwrap();
        let file = tmp.path().join("models.toml");
        std::fs::write(
            &file,
            r#"
[[model]]
id = "wan-tiny"
source = "tiny"
description = "tiny random Wan"
memory_gib = 0.5
timeout_secs = 90
[model.defaults]
width = 48
height = 32
frames = 5
steps = 2
guidance = 4.0
shift = 5.0
[model.limits]
max_width = 64
max_height = 64
max_frames = 9
[model.price]
default_steps = 2
tiers = [{ tier = "tiny", max_side = 64, credits_per_second = 3 }]
"#,
        )
        .unwrap();
        let specs = parse_models_file(&file).unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(
            Path::new(&specs[0].source),
            tmp.path().join("tiny").as_path()
        );
        let registry = ModelRegistry::with_models(&specs).unwrap();
        let m = registry.manifest("wan-tiny").unwrap();
        assert_eq!(m.description, "tiny random Wan");
        assert_eq!(m.memory_bytes, 512 << 20);
        assert_eq!(m.job_timeout, Some(std::time::Duration::from_secs(90)));
        assert_eq!(m.defaults.flow_shift, Some(5.0));
        assert_eq!(m.defaults.guidance_scale, 4.0);
        assert_eq!((m.limits.max_width, m.limits.max_frames), (64, 9));
        assert_eq!(m.price.tiers[0].credits_per_second, 3);

        std::fs::write(&file, "[[model]]\nid = \"x\"\nsource = \"y\"\nbogus = 1\n").unwrap();
        let e = parse_models_file(&file).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    fn i2v_spec(config: &str, id: &str) -> ModelSpec {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/wan/fixtures")
            .join(config)
            .join("model");
        ModelSpec {
            defaults: DefaultsSpec {
                width: Some(48),
                height: Some(32),
                frames: Some(5),
                steps: Some(2),
                ..DefaultsSpec::default()
            },
            ..parse_model_flag(&format!("{id}={}", dir.display())).unwrap()
        }
    }

    #[test]
    fn image_to_video_folders_register_with_their_capabilities() {
        let registry = ModelRegistry::with_models(&[
            i2v_spec("i2v-tiny", "wan-i2v"),
            i2v_spec("i2v-flf2v", "wan-flf2v"),
            i2v_spec("i2v-a14b", "wan22-i2v"),
        ])
        .unwrap();
        let m = registry.manifest("wan-i2v").unwrap();
        assert_eq!(m.capabilities, ["i2v"]);
        assert_eq!(m.max_batch, 1, "image jobs do not batch");
        assert!(
            m.description.contains("image-to-video"),
            "{}",
            m.description
        );
        let m = registry.manifest("wan-flf2v").unwrap();
        assert_eq!(m.capabilities, ["i2v", "flf2v"]);
        let m = registry.manifest("wan22-i2v").unwrap();
        assert_eq!(m.capabilities, ["i2v"]);
        assert!(m.description.contains("Wan 2.2"), "{}", m.description);
        // both experts resident: more memory than one transformer's model
        let one = WanModelInfo::inspect(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/wan/fixtures/i2v-a14b/model"),
        )
        .unwrap();
        assert!(one.params.transformer_2 > 0);

        // an image job runs through the registry's loader
        let p = registry.load("wan-i2v", "cpu").unwrap();
        assert_eq!(p.max_batch(), 1);
        let image = kinema_diffusion::RgbImage::new(48, 32, vec![128u8; 48 * 32 * 3]).unwrap();
        let request = kinema_diffusion::GenerationRequest {
            prompt: "a cat".into(),
            width: 48,
            height: 32,
            num_frames: 5,
            steps: 2,
            guidance_scale: 5.0,
            seed: 7,
            image: Some(image),
            ..Default::default()
        };
        let cond = p.encode_prompt(&request).unwrap();
        let latents = p
            .denoise(&request, &cond, &mut |_| {
                kinema_diffusion::StepControl::Continue
            })
            .unwrap();
        let frames = p.decode(&request, latents).unwrap();
        assert_eq!(
            (frames.num_frames, frames.height, frames.width),
            (5, 32, 48)
        );
        // without an image: refused as a bad request
        let no_image = kinema_diffusion::GenerationRequest {
            image: None,
            ..request
        };
        assert!(matches!(
            p.encode_prompt(&no_image),
            Err(PipelineError::InvalidRequest(_))
        ));
    }

    #[test]
    fn the_tiny_wan_model_runs_through_the_registry() {
        let registry = ModelRegistry::with_models(&[tiny_spec()]).unwrap();
        let m = registry.manifest("wan-tiny").unwrap().clone();
        let r = m
            .resolve(
                &JobSpec {
                    prompt: "a cat".into(),
                    ..JobSpec::default()
                },
                true,
            )
            .unwrap();
        let p = registry.load("wan-tiny", "cpu").unwrap();
        let request = kinema_diffusion::GenerationRequest {
            prompt: "a cat".into(),
            negative_prompt: String::new(),
            width: r.width,
            height: r.height,
            num_frames: r.num_frames,
            steps: r.steps,
            guidance_scale: r.guidance_scale,
            seed: 7,
            ..Default::default()
        };
        let cond = p.encode_prompt(&request).unwrap();
        let mut steps = Vec::new();
        let latents = p
            .denoise(&request, &cond, &mut |s| {
                steps.push(s.step);
                kinema_diffusion::StepControl::Continue
            })
            .unwrap();
        assert_eq!(steps, [1, 2]);
        let frames = p.decode(&request, latents).unwrap();
        assert_eq!(
            (frames.num_frames, frames.height, frames.width),
            (5, 32, 48)
        );
        // cancel between steps
        let cond = p.encode_prompt(&request).unwrap();
        let r = p.denoise(&request, &cond, &mut |_| {
            kinema_diffusion::StepControl::Cancel
        });
        assert!(matches!(r, Err(PipelineError::Cancelled { step: 1 })));
    }
}
