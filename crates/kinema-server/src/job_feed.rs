//! On PostgreSQL, every job change committed by any replica reaches this one: one
//! connection LISTENs to what the `jobs` trigger announces (kinema-store's
//! `job_changes.rs`) and fans it out to this replica's watches. Notifications come in
//! commit order and only for committed changes, so the feed is the watches' one source
//! of events. A lost connection loses what was committed meanwhile: once listening
//! again, the feed tells every watch to re-read its job ([`FeedItem::Resync`]).

use std::sync::Arc;
use std::time::Duration;

use kinema_store::{Heard, JobChange, JobChangeListener, StoreError};
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

/// Changes a watch may fall behind by before it is told it lagged (and re-reads).
const CAPACITY: usize = 4096;
/// Waits between attempts to connect again, doubling up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub enum FeedItem {
    Changed(Arc<JobChange>),
    /// Changes may have been missed: re-read the job from the store.
    Resync,
}

/// This replica's end of the job-change channel.
#[derive(Clone)]
pub struct JobFeed {
    sender: broadcast::Sender<FeedItem>,
}

impl JobFeed {
    /// Starts listening (a change committed after this returns is heard) and follows
    /// the channel until shutdown, connecting again after any loss.
    pub async fn start(
        database_url: &str,
        shutdown: watch::Receiver<bool>,
    ) -> Result<JobFeed, StoreError> {
        let listener = JobChangeListener::connect(database_url).await?;
        let (sender, _) = broadcast::channel(CAPACITY);
        tokio::spawn(follow(
            listener,
            database_url.to_owned(),
            sender.clone(),
            shutdown,
        ));
        info!("listening for job changes from every replica");
        Ok(JobFeed { sender })
    }

    /// Every change heard from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedItem> {
        self.sender.subscribe()
    }
}

async fn follow(
    mut listener: JobChangeListener,
    database_url: String,
    sender: broadcast::Sender<FeedItem>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let heard = tokio::select! {
            heard = listener.next() => heard,
            _ = stopped(&mut shutdown) => return,
        };
        // No receiver is fine: nobody is watching.
        match heard {
            Ok(Heard::Change(change)) => {
                let _ = sender.send(FeedItem::Changed(Arc::from(change)));
            }
            Ok(Heard::Gap(why)) => {
                warn!(%why, "job changes may have been missed; watches re-read their jobs");
                let _ = sender.send(FeedItem::Resync);
            }
            Err(e) => {
                warn!(error = %e, "the job change listener lost its connection; connecting again");
                let Some(again) = reconnect(&database_url, &mut shutdown).await else {
                    return;
                };
                listener = again;
                info!("the job change listener is connected again; watches re-read their jobs");
                let _ = sender.send(FeedItem::Resync);
            }
        }
    }
}

/// A new listener, retried until it connects; `None` on shutdown.
async fn reconnect(
    database_url: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<JobChangeListener> {
    let mut wait = RETRY_FIRST;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(shutdown) => return None,
        }
        match JobChangeListener::connect(database_url).await {
            Ok(listener) => return Some(listener),
            Err(e) => {
                wait = (wait * 2).min(RETRY_MAX);
                warn!(error = %e, retry_in = ?wait, "connecting the job change listener failed");
            }
        }
    }
}

/// Resolves once shutdown is signalled (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
