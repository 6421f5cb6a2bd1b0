//! Which models are loaded on one device. A model loads on first use (or at start
//! from a preload list) and stays; when a load needs room within the device's memory
//! budget, the least recently used idle models are evicted. Loads are single-flight:
//! two jobs asking for the same model at once share one load.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use kinema_diffusion::Pipeline;
use tracing::{info, warn};

use crate::{meters, ModelRegistry, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum ResidencyError {
    #[error("model {model} needs {need} bytes; device {device} has a budget of {budget}")]
    TooLarge {
        model: String,
        device: String,
        need: u64,
        budget: u64,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

struct Resident {
    pipeline: Arc<dyn Pipeline>,
    bytes: u64,
    last_used: u64,
}

#[derive(Default)]
struct State {
    resident: HashMap<String, Resident>,
    loading: HashSet<String>,
    /// A logical clock for least-recently-used order.
    tick: u64,
    evictions: u64,
}

/// One resident model, as `ListWorkers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidentModel {
    pub model: String,
    pub bytes: u64,
}

/// The models loaded on one device.
pub struct ModelCache {
    device: String,
    budget: u64,
    registry: Arc<ModelRegistry>,
    state: Mutex<State>,
    loaded: Condvar,
}

impl ModelCache {
    pub fn new(registry: Arc<ModelRegistry>, device: impl Into<String>, budget: u64) -> Self {
        Self {
            device: device.into(),
            budget,
            registry,
            state: Mutex::new(State::default()),
            loaded: Condvar::new(),
        }
    }

    pub fn manifest(&self, model: &str) -> Option<&crate::ModelManifest> {
        self.registry.manifest(model)
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Whether the model could ever be placed here (its memory need fits the budget).
    pub fn can_hold(&self, model: &str) -> bool {
        self.registry
            .manifest(model)
            .is_some_and(|m| m.memory_bytes <= self.budget)
    }

    /// The models this device can hold, or `None` when it can hold every one.
    pub fn placeable_models(&self) -> Option<Vec<String>> {
        let all: Vec<&crate::ModelManifest> = self.registry.manifests().collect();
        let fit: Vec<String> = all
            .iter()
            .filter(|m| m.memory_bytes <= self.budget)
            .map(|m| m.id.clone())
            .collect();
        (fit.len() != all.len()).then_some(fit)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model's pipeline on this device, loading it (and evicting others) if it is
    /// not resident. Blocking: call it off the async runtime.
    pub fn get(&self, model: &str) -> Result<Arc<dyn Pipeline>, ResidencyError> {
        let need = self
            .registry
            .manifest(model)
            .ok_or_else(|| RegistryError::UnknownModel(model.to_string()))?
            .memory_bytes;
        if need > self.budget {
            return Err(ResidencyError::TooLarge {
                model: model.to_string(),
                device: self.device.clone(),
                need,
                budget: self.budget,
            });
        }
        let mut state = self.lock();
        loop {
            state.tick += 1;
            let tick = state.tick;
            if let Some(r) = state.resident.get_mut(model) {
                r.last_used = tick;
                return Ok(r.pipeline.clone());
            }
            if !state.loading.contains(model) {
                break;
            }
            state = self.loaded.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        self.make_room(&mut state, need);
        state.loading.insert(model.to_string());
        drop(state);

        let started = Instant::now();
        let loaded = self.registry.load(model, &self.device);
        let ms = started.elapsed().as_millis() as u64;

        let mut state = self.lock();
        state.loading.remove(model);
        let result = match loaded {
            Ok(pipeline) => {
                state.tick += 1;
                let tick = state.tick;
                state.resident.insert(
                    model.to_string(),
                    Resident {
                        pipeline: pipeline.clone(),
                        bytes: need,
                        last_used: tick,
                    },
                );
                meters::model_loaded(&self.device, model, ms);
                info!(device = %self.device, model, ms, resident = ?resident_names(&state), "model loaded");
                Ok(pipeline)
            }
            Err(e) => Err(e.into()),
        };
        self.report(&state);
        drop(state);
        self.loaded.notify_all();
        result
    }

    /// Evicts least recently used models no job is using until `need` more bytes fit.
    fn make_room(&self, state: &mut State, need: u64) {
        loop {
            let used: u64 = state.resident.values().map(|r| r.bytes).sum();
            if used.saturating_add(need) <= self.budget {
                return;
            }
            // A pipeline only the cache holds is idle; one a running job holds stays.
            let victim = state
                .resident
                .iter()
                .filter(|(_, r)| Arc::strong_count(&r.pipeline) == 1)
                .min_by_key(|(_, r)| r.last_used)
                .map(|(id, _)| id.clone());
            let Some(victim) = victim else {
                warn!(device = %self.device, need, used, budget = self.budget, "no idle model to evict; loading over budget");
                return;
            };
            state.resident.remove(&victim);
            state.evictions += 1;
            meters::model_evicted(&self.device, &victim);
            info!(device = %self.device, model = %victim, "model evicted (least recently used)");
        }
    }

    fn report(&self, state: &State) {
        let bytes = state.resident.values().map(|r| r.bytes).sum();
        meters::resident(&self.device, bytes, state.resident.len());
    }

    /// Resident models, most recently used first.
    pub fn resident(&self) -> Vec<ResidentModel> {
        let state = self.lock();
        let mut v: Vec<(&String, &Resident)> = state.resident.iter().collect();
        v.sort_by_key(|(_, r)| std::cmp::Reverse(r.last_used));
        v.into_iter()
            .map(|(id, r)| ResidentModel {
                model: id.clone(),
                bytes: r.bytes,
            })
            .collect()
    }

    pub fn evictions(&self) -> u64 {
        self.lock().evictions
    }
}

fn resident_names(state: &State) -> Vec<&str> {
    state.resident.keys().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::ModelManifest;

    /// A registry of testsrc clones with the given memory needs, whose constructor
    /// counts its calls and takes a while (so concurrent requests overlap).
    fn registry(models: &[(&str, u64)], calls: Arc<AtomicU32>) -> Arc<ModelRegistry> {
        let base = ModelRegistry::builtin();
        let testsrc = base.manifest("testsrc").unwrap().clone();
        let mut r = ModelRegistry::empty();
        for (id, bytes) in models {
            let manifest = ModelManifest {
                id: id.to_string(),
                memory_bytes: *bytes,
                ..testsrc.clone()
            };
            let calls = calls.clone();
            r.register(manifest, move |_device| {
                calls.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                Ok(Arc::new(kinema_testsrc::TestSource::new()) as Arc<dyn Pipeline>)
            });
        }
        Arc::new(r)
    }

    #[test]
    fn concurrent_requests_for_one_model_load_it_once() {
        let calls = Arc::new(AtomicU32::new(0));
        let cache = Arc::new(ModelCache::new(
            registry(&[("a", 10)], calls.clone()),
            "cpu",
            100,
        ));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || cache.get("a").map(|_| ()))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            cache.resident(),
            [ResidentModel {
                model: "a".into(),
                bytes: 10
            }]
        );
    }

    #[test]
    fn the_least_recently_used_idle_model_makes_room() {
        let calls = Arc::new(AtomicU32::new(0));
        let cache = ModelCache::new(
            registry(
                &[("a", 40), ("b", 40), ("c", 40), ("huge", 101)],
                calls.clone(),
            ),
            "cpu",
            100,
        );
        drop(cache.get("a").unwrap());
        drop(cache.get("b").unwrap());
        drop(cache.get("a").unwrap()); // a is now more recent than b
        drop(cache.get("c").unwrap()); // evicts b
        let names: Vec<String> = cache.resident().into_iter().map(|r| r.model).collect();
        assert_eq!(names, ["c", "a"]);
        assert_eq!(cache.evictions(), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // A model in use is never evicted: with a held, loading b evicts c.
        let held = cache.get("a").unwrap();
        drop(cache.get("b").unwrap());
        let names: Vec<String> = cache.resident().into_iter().map(|r| r.model).collect();
        assert_eq!(names, ["b", "a"]);
        drop(held);

        assert!(matches!(
            cache.get("huge"),
            Err(ResidencyError::TooLarge {
                need: 101,
                budget: 100,
                ..
            })
        ));
        assert!(!cache.can_hold("huge") && cache.can_hold("a"));
        assert_eq!(
            cache.placeable_models().unwrap(),
            ["a", "b", "c"].map(String::from)
        );
    }
}
