//! Per-job stop switches: cancel, interrupt (shutdown or drain), time limits, and the
//! steps at which they were seen.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;

/// Per-job stop switches the step callback reads between steps.
#[derive(Debug)]
pub(crate) struct StopFlags {
    pub cancel: AtomicBool,
    /// Shutdown or drain: stop and requeue rather than cancel.
    pub interrupt: AtomicBool,
    /// Why a time limit stopped the job.
    pub timed_out: OnceLock<String>,
    /// The last denoising step completed.
    pub step: AtomicU32,
    /// The step completed when the cancel was first seen (NO_STEP: not seen).
    pub cancel_seen_at: AtomicU32,
    /// The step the denoising loop stopped after (NO_STEP: it did not stop early).
    pub stopped_at: AtomicU32,
}

pub(crate) const NO_STEP: u32 = u32::MAX;

impl Default for StopFlags {
    fn default() -> Self {
        Self {
            cancel: AtomicBool::new(false),
            interrupt: AtomicBool::new(false),
            timed_out: OnceLock::new(),
            step: AtomicU32::new(0),
            cancel_seen_at: AtomicU32::new(NO_STEP),
            stopped_at: AtomicU32::new(NO_STEP),
        }
    }
}

impl StopFlags {
    pub fn request_cancel(&self) {
        let _ = self.cancel_seen_at.compare_exchange(
            NO_STEP,
            self.step.load(Ordering::SeqCst),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn time_out(&self, why: String) {
        let _ = self.timed_out.set(why);
    }

    pub fn stopped(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
            || self.interrupt.load(Ordering::SeqCst)
            || self.timed_out.get().is_some()
    }
}
