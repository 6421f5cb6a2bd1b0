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
        capabilities: vec!["test-source".into()],
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
        assert_eq!(m.batch_key(&r), None);
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
}
