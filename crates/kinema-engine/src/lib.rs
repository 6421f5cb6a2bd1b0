//! The worker side of Kinema: which models exist and what they accept, the worker
//! loop that leases jobs and runs them through a model's pipeline, media encoding and
//! artifact storage, progress events, cancellation and failure classification.

mod batch;
mod catalog;
mod clock;
mod control;
mod devices;
mod events;
mod failure;
mod faults;
mod generation;
mod idle_gap;
mod manifest;
pub mod meters;
mod registry;
mod residency;
mod run;
mod timeouts;
mod worker;

pub use catalog::{
    manifest_for, parse_model_flag, parse_models_file, CatalogError, DefaultsSpec, LimitsSpec,
    ModelSpec,
};
pub use clock::{Clock, SystemClock, TestClock};
pub use control::JobControl;
pub use devices::{
    cpu_info, default_devices, discover, parse_devices, DeviceError, DeviceInfo, DeviceRequest,
    DeviceSample, DeviceSampler,
};
pub use events::{JobEvent, JobEventKind, JobEvents};
pub use failure::{FailureCode, JobFailure};
pub use faults::{FaultPlan, FaultStage};
pub use kinema_params::{GenerationParams, ImageLimits, ImageSlot, InputImage};
pub use manifest::{
    capability, FieldViolation, JobExtras, JobSpec, ModelDefaults, ModelLimits, ModelManifest,
    RequestImages, ResolvedJob, ResolvedSpec,
};
pub use registry::{ModelRegistry, RegistryError};
pub use residency::{ModelCache, ResidencyError, ResidentModel};
pub use run::pipeline_request;
pub use timeouts::{parse_secs, Timeouts};
pub use worker::{
    default_max_batch, DeviceSlot, DrainError, PoolHandle, Worker, WorkerConfig, WorkerPool,
    WorkerState, WorkerStatus, LOCAL_OWNERS,
};
