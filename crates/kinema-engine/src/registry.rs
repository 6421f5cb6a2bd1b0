use std::collections::BTreeMap;
use std::sync::Arc;

use kinema_diffusion::{Pipeline, PipelineError};
use kinema_ledger::{ModelPrice, TierPrice};

use crate::{ModelDefaults, ModelLimits, ModelManifest};

/// Builds a model's pipeline on a device (`cpu`, `cuda:0`).
type Constructor = Arc<dyn Fn(&str) -> Result<Arc<dyn Pipeline>, PipelineError> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("loading model {model}: {source}")]
    Load {
        model: String,
        #[source]
        source: PipelineError,
    },
}

struct Entry {
    manifest: ModelManifest,
    construct: Constructor,
}

/// Model ids to manifests and constructors. The engine never matches on a model name:
/// it asks the registry. Loaded models are kept per device by each worker's
/// [`crate::ModelCache`], not here.
pub struct ModelRegistry {
    models: BTreeMap<String, Entry>,
}

impl ModelRegistry {
    pub fn empty() -> Self {
        Self {
            models: BTreeMap::new(),
        }
    }

    /// The models built into this binary.
    pub fn builtin() -> Self {
        let mut registry = Self::empty();
        registry.register(testsrc_manifest(), |_device| {
            Ok(Arc::new(kinema_testsrc::TestSource::new()) as Arc<dyn Pipeline>)
        });
        registry
    }

    pub fn register(
        &mut self,
        manifest: ModelManifest,
        construct: impl Fn(&str) -> Result<Arc<dyn Pipeline>, PipelineError> + Send + Sync + 'static,
    ) {
        self.models.insert(
            manifest.id.clone(),
            Entry {
                manifest,
                construct: Arc::new(construct),
            },
        );
    }

    pub fn manifest(&self, id: &str) -> Option<&ModelManifest> {
        self.models.get(id).map(|e| &e.manifest)
    }

    pub fn manifests(&self) -> impl Iterator<Item = &ModelManifest> {
        self.models.values().map(|e| &e.manifest)
    }

    /// Constructs the model's pipeline on `device`. Blocking (loading weights is):
    /// call it off the async runtime. Every call loads anew.
    pub fn load(&self, id: &str, device: &str) -> Result<Arc<dyn Pipeline>, RegistryError> {
        let entry = self
            .models
            .get(id)
            .ok_or_else(|| RegistryError::UnknownModel(id.to_string()))?;
        (entry.construct)(device).map_err(|source| RegistryError::Load {
            model: id.to_string(),
            source,
        })
    }
}

/// `testsrc`: the procedural test source, priced like any model so every billing path
/// runs on it.
fn testsrc_manifest() -> ModelManifest {
    ModelManifest {
        id: kinema_testsrc::MODEL_ID.to_string(),
        family: "testsrc".into(),
        description: "Procedural test source (moving bars, frame counter, prompt hash) for \
                      smoke tests without GPU or weights. Not a generative model."
            .into(),
        // It blends an input image into its frames (`kinema_testsrc`): image jobs run
        // end to end without a generative model.
        capabilities: vec![
            crate::capability::T2V.into(),
            crate::capability::I2V.into(),
            "test-source".into(),
        ],
        // The test source runs alone: its jobs' timing stays one job at a time.
        max_batch: 1,
        batch_item_bytes: 0,
        limits: ModelLimits {
            min_width: 16,
            max_width: 1920,
            min_height: 16,
            max_height: 1920,
            size_multiple: 16,
            min_frames: 1,
            max_frames: 241,
            frames_modulo: 1,
            min_steps: 1,
            max_steps: 200,
            max_fps: 60,
            max_prompt_chars: 2000,
        },
        defaults: ModelDefaults {
            width: 320,
            height: 192,
            num_frames: 33,
            fps: 16,
            steps: 8,
            guidance_scale: 5.0,
            flow_shift: None,
            output: kinema_media::VideoOutput::default(),
            preview: None,
        },
        price: ModelPrice {
            tiers: vec![
                TierPrice {
                    tier: "480p".into(),
                    max_side: 854,
                    credits_per_second: 2,
                },
                TierPrice {
                    tier: "720p".into(),
                    max_side: 1280,
                    credits_per_second: 4,
                },
                TierPrice {
                    tier: "1080p".into(),
                    max_side: 1920,
                    credits_per_second: 8,
                },
            ],
            default_steps: 8,
        },
        memory_bytes: 64 << 20,
        job_timeout: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobSpec;

    fn spec() -> JobSpec {
        JobSpec {
            prompt: "a red fox".into(),
            ..JobSpec::default()
        }
    }

    #[test]
    fn testsrc_defaults_resolve_and_load() {
        let registry = ModelRegistry::builtin();
        let m = registry.manifest("testsrc").unwrap();
        let r = m.resolve(&spec(), true).unwrap();
        assert_eq!(
            (r.width, r.height, r.num_frames, r.fps, r.steps),
            (320, 192, 33, 16, 8)
        );
        // the test source runs its jobs alone
        let job = m
            .resolve_job(&spec(), &crate::JobExtras::default(), true)
            .unwrap();
        assert_eq!(m.batch_key(&job.params), None);
        assert_eq!(m.batch_capacity(u64::MAX), 1);
        assert!(registry.load("testsrc", "cpu").is_ok());
        assert!(matches!(
            registry.load("nope", "cpu"),
            Err(RegistryError::UnknownModel(_))
        ));
    }

    #[test]
    fn bad_specs_name_each_field() {
        let registry = ModelRegistry::builtin();
        let m = registry.manifest("testsrc").unwrap();
        let fields = |s: JobSpec| -> Vec<&'static str> {
            m.resolve(&s, true)
                .unwrap_err()
                .into_iter()
                .map(|v| v.field)
                .collect()
        };
        assert_eq!(
            fields(JobSpec {
                width: Some(0),
                ..spec()
            }),
            ["width"]
        );
        assert_eq!(
            fields(JobSpec {
                height: Some(100_000),
                ..spec()
            }),
            ["height"]
        );
        assert_eq!(
            fields(JobSpec {
                width: Some(330),
                ..spec()
            }),
            ["width"]
        );
        assert_eq!(
            fields(JobSpec {
                steps: Some(0),
                ..spec()
            }),
            ["steps"]
        );
        assert_eq!(
            fields(JobSpec {
                num_frames: Some(0),
                ..spec()
            }),
            ["num_frames"]
        );
        assert_eq!(
            fields(JobSpec {
                fps: Some(0),
                ..spec()
            }),
            ["fps"]
        );
        assert_eq!(
            fields(JobSpec {
                prompt: "  ".into(),
                ..spec()
            }),
            ["prompt"]
        );
        assert_eq!(
            fields(JobSpec {
                prompt: "x".repeat(2001),
                ..spec()
            }),
            ["prompt"]
        );
        assert_eq!(
            fields(JobSpec {
                guidance_scale: Some(f32::NAN),
                ..spec()
            }),
            ["guidance_scale"]
        );
        assert!(m
            .resolve(
                &JobSpec {
                    prompt: String::new(),
                    ..spec()
                },
                false
            )
            .is_ok());
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let rgb: Vec<u8> = (0..width * height)
            .flat_map(|i| [(i % 251) as u8, 90, 200])
            .collect();
        let image = kinema_params::DecodedImage { width, height, rgb };
        kinema_params::InputImage::encode(&image)
            .unwrap()
            .png
            .unwrap()
            .to_vec()
    }

    fn with_images<'a>(image: &'a [u8], last_image: &'a [u8]) -> crate::JobExtras<'a> {
        crate::JobExtras {
            images: crate::RequestImages {
                image,
                last_image,
                limits: kinema_params::ImageLimits::default(),
            },
            guidance_scale_2: None,
            seed: 9,
        }
    }

    fn refused(m: &ModelManifest, s: &JobSpec, extras: &crate::JobExtras<'_>) -> Vec<&'static str> {
        m.resolve_job(s, extras, true)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn an_image_is_fitted_to_the_video_and_never_batched() {
        let m = testsrc_manifest();
        let image = png(200, 100);
        // Size unset: it follows the image at the default area (320x192).
        let job = m
            .resolve_job(&spec(), &with_images(&image, &[]), true)
            .unwrap();
        let stored = job.params.image.as_ref().unwrap();
        assert_eq!((job.params.width, job.params.height), (336, 160));
        assert_eq!((stored.width, stored.height), (336, 160));
        assert_eq!(job.params.seed, 9);
        let pixels = stored.pixels().unwrap().unwrap();
        assert_eq!(pixels.rgb.len(), 336 * 160 * 3);
        // Size set: the image is fitted to it.
        let sized = JobSpec {
            width: Some(64),
            height: Some(64),
            ..spec()
        };
        let job = m
            .resolve_job(&sized, &with_images(&image, &[]), true)
            .unwrap();
        let stored = job.params.image.as_ref().unwrap();
        assert_eq!((stored.width, stored.height), (64, 64));
        // A batching model still never batches image jobs.
        let batching = ModelManifest {
            max_batch: 8,
            ..testsrc_manifest()
        };
        let with_image = batching
            .resolve_job(&sized, &with_images(&image, &[]), true)
            .unwrap();
        assert_eq!(batching.batch_key(&with_image.params), None);
        let text = batching
            .resolve_job(&sized, &crate::JobExtras::default(), true)
            .unwrap();
        assert!(batching.batch_key(&text.params).is_some());
    }

    #[test]
    fn images_are_refused_where_the_model_takes_none_or_needs_one() {
        let image = png(32, 32);
        let text_only = ModelManifest {
            capabilities: vec![crate::capability::T2V.into()],
            ..testsrc_manifest()
        };
        assert_eq!(
            refused(&text_only, &spec(), &with_images(&image, &[])),
            ["image"]
        );
        let image_only = ModelManifest {
            capabilities: vec![crate::capability::I2V.into()],
            ..testsrc_manifest()
        };
        assert_eq!(
            refused(&image_only, &spec(), &crate::JobExtras::default()),
            ["image"]
        );
        assert!(image_only
            .resolve_job(&spec(), &with_images(&image, &[]), true)
            .is_ok());
        // testsrc: a first frame, never a last one.
        let m = testsrc_manifest();
        assert_eq!(
            refused(&m, &spec(), &with_images(&image, &image)),
            ["last_image"]
        );
        let flf = ModelManifest {
            capabilities: vec![
                crate::capability::I2V.into(),
                crate::capability::FLF2V.into(),
            ],
            ..testsrc_manifest()
        };
        let both = flf
            .resolve_job(&spec(), &with_images(&image, &image), true)
            .unwrap();
        assert!(both.params.image.is_some() && both.params.last_image.is_some());
        assert_eq!(
            refused(&flf, &spec(), &with_images(&[], &image)),
            ["image", "last_image"]
        );
        // Undecodable, over a cap, and every other violation reported together.
        assert_eq!(
            refused(
                &m,
                &JobSpec {
                    steps: Some(0),
                    ..spec()
                },
                &with_images(b"garbage", &[])
            ),
            ["image", "steps"]
        );
        let tight = crate::JobExtras {
            images: crate::RequestImages {
                limits: kinema_params::ImageLimits {
                    max_bytes: 10,
                    ..Default::default()
                },
                ..with_images(&image, &[]).images
            },
            ..crate::JobExtras::default()
        };
        assert_eq!(refused(&m, &spec(), &tight), ["image"]);
        let nan = crate::JobExtras {
            guidance_scale_2: Some(f32::NAN),
            ..crate::JobExtras::default()
        };
        assert_eq!(refused(&m, &spec(), &nan), ["guidance_scale_2"]);
    }
}
