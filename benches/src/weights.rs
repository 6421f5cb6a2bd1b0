//! Random weights in the official Diffusers layout, from the `weights.json` manifests
//! `benches/wan/real_size.py manifests` writes (same generator as the parity fixtures:
//! `kinema_diffusion::tiny`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use kinema_diffusion::tiny::{det_values, Manifest, ManifestEntry, GENERATOR};
use kinema_diffusion::weights::read_json;

/// The committed manifests of the real Wan2.1-T2V-1.3B (transformer and VAE).
pub fn default_manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("wan/wan2.1-t2v-1.3b")
}

pub fn read_manifest(component_dir: &Path) -> anyhow::Result<Manifest> {
    let m: Manifest = read_json(&component_dir.join("weights.json"))?;
    anyhow::ensure!(
        m.generator == GENERATOR,
        "unknown generator {:?}",
        m.generator
    );
    Ok(m)
}

pub fn entry_tensor(e: &ManifestEntry) -> candle_core::Result<Tensor> {
    let n = e.shape.iter().product();
    Tensor::from_vec(
        det_values(&e.name, n, e.offset, e.scale),
        e.shape.as_slice(),
        &Device::Cpu,
    )
}

/// The manifest's tensors whose names start with `prefix`, in memory.
pub fn tensors_with_prefix(m: &Manifest, prefix: &str) -> anyhow::Result<HashMap<String, Tensor>> {
    m.tensors
        .iter()
        .filter(|e| e.name.starts_with(prefix))
        .map(|e| Ok((e.name.clone(), entry_tensor(e)?)))
        .collect()
}

/// The tensors of `entries` in `dtype`, generated on every core (the 1.3B transformer's
/// 1.4 G values take ~20 s on one core, well under a second on 16).
fn generate(entries: &[&ManifestEntry], dtype: DType) -> anyhow::Result<HashMap<String, Tensor>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let made: Vec<anyhow::Result<Vec<(String, Tensor)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    entries
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|e| Ok((e.name.clone(), entry_tensor(e)?.to_dtype(dtype)?)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("weight generator panicked")))
            })
            .collect()
    });
    let mut out = HashMap::new();
    for part in made {
        out.extend(part?);
    }
    Ok(out)
}

/// Writes `component` (`transformer`, `vae`) of the manifest dir into `out/component`:
/// its `config.json` and safetensors in `dtype`, sharded like `save_pretrained` (files
/// of at most `shard_bytes`, an index naming them) when they do not fit in one.
pub fn write_component(
    manifest_dir: &Path,
    component: &str,
    out: &Path,
    shard_bytes: u64,
    dtype: DType,
) -> anyhow::Result<(usize, u64)> {
    let src = manifest_dir.join(component);
    let dst = out.join(component);
    std::fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
    std::fs::copy(src.join("config.json"), dst.join("config.json"))?;
    let m = read_manifest(&src)?;
    let size =
        |e: &ManifestEntry| (dtype.size_in_bytes() * e.shape.iter().product::<usize>()) as u64;
    let mut shards: Vec<Vec<&ManifestEntry>> = vec![Vec::new()];
    let mut current = 0u64;
    for e in &m.tensors {
        if current > 0 && current + size(e) > shard_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        current += size(e);
        if let Some(last) = shards.last_mut() {
            last.push(e);
        }
    }
    let total: u64 = m.tensors.iter().map(size).sum();
    let n = shards.len();
    let stem = "diffusion_pytorch_model";
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = if n == 1 {
            format!("{stem}.safetensors")
        } else {
            format!("{stem}-{:05}-of-{n:05}.safetensors", i + 1)
        };
        let tensors = generate(shard, dtype)?;
        candle_core::safetensors::save(&tensors, dst.join(&file))?;
        for e in shard {
            weight_map.insert(e.name.clone(), file.clone());
        }
    }
    if n > 1 {
        let index = serde_json::json!({
            "metadata": { "total_size": total },
            "weight_map": weight_map,
        });
        std::fs::write(
            dst.join(format!("{stem}.safetensors.index.json")),
            serde_json::to_string_pretty(&index)?,
        )?;
    }
    Ok((n, total))
}
