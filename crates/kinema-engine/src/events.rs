use kinema_store::Job;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEventKind {
    StateChanged,
    StageChanged,
    Progress,
}

#[derive(Debug, Clone)]
pub struct JobEvent {
    pub kind: JobEventKind,
    pub job: Job,
    pub at_ms: i64,
}

/// Fan-out of every job's events to whoever watches. Watchers that fall behind miss
/// events (the channel is bounded) and are told so; they re-read the job from the
/// store, which is the truth.
#[derive(Debug, Clone)]
pub struct JobEvents {
    sender: broadcast::Sender<JobEvent>,
}

impl JobEvents {
    pub fn new(capacity: usize) -> Self {
        Self {
            sender: broadcast::channel(capacity).0,
        }
    }

    pub fn publish(&self, kind: JobEventKind, job: Job, at_ms: i64) {
        // No receivers is fine: nobody is watching.
        let _ = self.sender.send(JobEvent { kind, job, at_ms });
    }

    /// Whether anyone listens (a remote worker node's events have no audience: its
    /// control plane publishes what the worker reports).
    pub fn is_watched(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.sender.subscribe()
    }
}

impl Default for JobEvents {
    fn default() -> Self {
        Self::new(4096)
    }
}
