//! Device utilisation and memory over the run, as the server reports them.

use kinema_proto::v1 as pb;
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
                "devices     utilisation and memory not reported ({})",
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

/// The server's devices now, one reading per device (workers sharing a device
/// report the same figures); `Err` says why there are no figures.
async fn read_devices(admin: &mut AdminClient) -> Result<Vec<Sample>, String> {
    let workers = match admin.list_workers(pb::ListWorkersRequest {}).await {
        Ok(r) => r.into_inner().workers,
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            return Err("the server has no ListWorkers".to_string())
        }
        Err(s) if s.code() == tonic::Code::PermissionDenied => {
            return Err("ListWorkers needs an admin key".to_string())
        }
        Err(s) => return Err(format!("ListWorkers failed: {}", s.message())),
    };
    let mut samples: Vec<Sample> = Vec::new();
    for w in workers {
        if samples.iter().any(|s| s.device == w.device) {
            continue;
        }
        samples.push(Sample {
            utilisation_pct: w.sample.map(|s| f64::from(s.utilization_percent)),
            memory_used_bytes: w.sample.map(|s| s.memory_used_bytes as f64),
            memory_total_bytes: w
                .sample
                .map(|s| s.memory_total_bytes)
                .filter(|t| *t > 0)
                .or((w.memory_total_bytes > 0).then_some(w.memory_total_bytes)),
            device: w.device,
            name: w.device_model,
        });
    }
    Ok(samples)
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
    let sampled = stats
        .iter()
        .any(|d| d.utilisation_pct.is_some() || d.memory_used_bytes.is_some());
    let names: Vec<&str> = stats.iter().map(|d| d.device.as_str()).collect();
    DeviceReport {
        reported: sampled,
        note: (!sampled).then(|| {
            format!(
                "ListWorkers lists {} but no utilisation or memory samples (no NVML: CPU workers)",
                names.join(", ")
            )
        }),
        devices: stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(device: &str, util: Option<f64>, used: Option<f64>) -> Sample {
        Sample {
            device: device.into(),
            name: format!("{device} model"),
            utilisation_pct: util,
            memory_used_bytes: used,
            memory_total_bytes: used.map(|_| 80 << 30),
        }
    }

    #[test]
    fn summarises_per_device() {
        let r = summarise(&[
            sample("cuda:0", Some(50.0), Some(10.0)),
            sample("cuda:1", None, None),
            sample("cuda:0", Some(100.0), Some(30.0)),
        ]);
        assert!(r.reported && r.note.is_none());
        assert_eq!(r.devices.len(), 2);
        let d0 = &r.devices[0];
        assert_eq!((d0.device.as_str(), d0.samples), ("cuda:0", 2));
        assert_eq!(d0.utilisation_pct.unwrap().mean, 75.0);
        assert_eq!(d0.memory_used_bytes.unwrap().max, 30.0);
        assert_eq!(d0.memory_total_bytes, Some(80 << 30));
        assert!(r.devices[1].utilisation_pct.is_none());
    }

    #[test]
    fn cpu_workers_are_listed_but_not_reported() {
        let r = summarise(&[sample("cpu", None, None), sample("cpu", None, None)]);
        assert!(!r.reported);
        assert!(r.note.as_deref().unwrap().contains("cpu"), "{:?}", r.note);
        assert_eq!(r.devices.len(), 1);
        assert!(!summarise(&[]).reported);
    }
}
