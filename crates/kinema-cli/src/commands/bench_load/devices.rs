//! Device utilisation and memory over the run, as the server reports them.

use serde::Serialize;

use super::stats::Summary;

#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// Whether the server reported device figures.
    pub reported: bool,
    /// Why not, when it did not.
    pub note: Option<String>,
    pub devices: Vec<DeviceStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceStats {
    pub device: String,
    pub name: String,
    pub samples: usize,
    /// Percent busy, per sample.
    pub utilisation_pct: Option<Summary>,
    pub memory_used_bytes: Option<Summary>,
    pub memory_total_bytes: Option<u64>,
}

impl DeviceReport {
    pub fn not_reported(why: &str) -> DeviceReport {
        DeviceReport {
            reported: false,
            note: Some(why.to_string()),
            devices: Vec::new(),
        }
    }

    pub fn print(&self) {
        if !self.reported {
            println!(
                "devices     not reported ({})",
                self.note.as_deref().unwrap_or("")
            );
            return;
        }
        for d in &self.devices {
            let util = d
                .utilisation_pct
                .map_or("utilisation not reported".to_string(), |u| {
                    format!("utilisation mean {:.0}%, p90 {:.0}%", u.mean, u.p90)
                });
            let mem = match (d.memory_used_bytes, d.memory_total_bytes) {
                (Some(m), Some(t)) if t > 0 => {
                    format!("memory max {:.2} of {:.2} GiB", m.max / GIB, t as f64 / GIB)
                }
                (Some(m), _) => format!("memory max {:.2} GiB", m.max / GIB),
                _ => "memory not reported".to_string(),
            };
            println!(
                "device      {} {}: {util}; {mem} ({} samples)",
                d.device, d.name, d.samples
            );
        }
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// One reading of one device.
#[derive(Debug, Clone)]
struct Sample {
    device: String,
    name: String,
    utilisation_pct: Option<f64>,
    memory_used_bytes: Option<f64>,
    memory_total_bytes: Option<u64>,
}

/// Polls the server's device figures in the background while the load runs.
pub struct Sampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<DeviceReport>,
}

impl Sampler {
    pub fn start(admin: AdminClient, interval: std::time::Duration) -> Sampler {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut admin = admin;
            let mut samples: Vec<Sample> = Vec::new();
            let mut ticker =
                tokio::time::interval(interval.max(std::time::Duration::from_millis(50)));
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.changed() => break,
                }
                match read_devices(&mut admin).await {
                    Ok(s) => samples.extend(s),
                    Err(why) => return DeviceReport::not_reported(&why),
                }
            }
            summarise(&samples)
        });
        Sampler { stop, task }
    }

    pub async fn finish(self) -> DeviceReport {
        let _ = self.stop.send(true);
        self.task
            .await
            .unwrap_or_else(|e| DeviceReport::not_reported(&format!("sampler failed: {e}")))
    }
}

type AdminClient =
    kinema_proto::v1::admin_service_client::AdminServiceClient<crate::client::Authed>;

/// The server's devices now; `Err` says why there are no figures.
async fn read_devices(_admin: &mut AdminClient) -> Result<Vec<Sample>, String> {
    Err("the server has no ListWorkers RPC yet".to_string())
}

fn summarise(samples: &[Sample]) -> DeviceReport {
    let mut devices: Vec<String> = samples.iter().map(|s| s.device.clone()).collect();
    devices.sort();
    devices.dedup();
    let stats: Vec<DeviceStats> = devices
        .into_iter()
        .map(|device| {
            let of = || samples.iter().filter(|s| s.device == device);
            DeviceStats {
                name: of().map(|s| s.name.clone()).next().unwrap_or_default(),
                samples: of().count(),
                utilisation_pct: Summary::of(of().filter_map(|s| s.utilisation_pct)),
                memory_used_bytes: Summary::of(of().filter_map(|s| s.memory_used_bytes)),
                memory_total_bytes: of().filter_map(|s| s.memory_total_bytes).max(),
                device,
            }
        })
        .collect();
    if stats.is_empty() {
        return DeviceReport::not_reported("the server listed no devices");
    }
    DeviceReport {
        reported: true,
        note: None,
        devices: stats,
    }
}
