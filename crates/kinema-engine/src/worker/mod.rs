//! One worker loop per device: it leases queued jobs its device can hold, one at a
//! time, and runs them (`src/run/`). The [`WorkerPool`] holds every device's worker and
//! is what the server talks to: wake, cancel, drain, list.
//!
//! One job per file: `config` (what every worker of a pool shares, device slots),
//! `stop_flags` (a running job's stop switches), `status` (what `ListWorkers` shows),
//! `pool` (the pool: build, spawn, wake, cancel, drain), `recovery` (jobs whose worker
//! was lost), `sampling` (GPU memory and utilisation), `lease_loop` (one worker's loop:
//! lease, batch, run, hand off).

mod config;
mod lease_loop;
mod pool;
mod recovery;
mod sampling;
mod status;
mod stop_flags;

pub use config::{default_max_batch, DeviceSlot, WorkerConfig, LOCAL_OWNERS};
pub use pool::{DrainError, PoolHandle, Worker, WorkerPool};
pub use status::{WorkerState, WorkerStatus};
pub(crate) use stop_flags::{StopFlags, NO_STEP};
