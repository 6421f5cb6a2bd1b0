//! Loading Diffusers-format component folders: `config.json` (or
//! `scheduler_config.json`) beside a single `*.safetensors` file or a sharded set
//! named by `*.safetensors.index.json`. Weights are memory-mapped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;

use crate::mmap_release::ReleasingMmaps;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no safetensors weights in {0}")]
    NoWeights(PathBuf),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("loading tensors from {path}: {source}")]
    Candle {
        path: PathBuf,
        source: candle_core::Error,
    },
}

/// Reads and parses a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| LoadError::Json {
        path: path.to_path_buf(),
        source,
    })
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

/// The safetensors files holding a component's weights, in a stable order: the files
/// an index names when there is one (`diffusion_pytorch_model.safetensors.index.json`,
/// `model.safetensors.index.json`, or any other `*.safetensors.index.json`), else the
/// conventional single file, else every `*.safetensors` in the folder.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let preferred_index = [
        "diffusion_pytorch_model.safetensors.index.json",
        "model.safetensors.index.json",
    ];
    let index = preferred_index
        .iter()
        .find(|n| names.iter().any(|m| m == *n))
        .map(|n| n.to_string())
        .or_else(|| {
            names
                .iter()
                .find(|n| n.ends_with(".safetensors.index.json"))
                .cloned()
        });
    if let Some(index) = index {
        let path = dir.join(&index);
        let index: ShardIndex = read_json(&path)?;
        let files: BTreeSet<&String> = index.weight_map.values().collect();
        if files.is_empty() {
            return Err(LoadError::Invalid {
                path,
                message: "empty weight_map".into(),
            });
        }
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            if f.contains('/') || f.contains("..") {
                return Err(LoadError::Invalid {
                    path,
                    message: format!("shard name {f:?} leaves the folder"),
                });
            }
            let p = dir.join(f);
            if !p.is_file() {
                return Err(LoadError::Invalid {
                    path,
                    message: format!("shard {f} is missing"),
                });
            }
            out.push(p);
        }
        return Ok(out);
    }
    for single in ["diffusion_pytorch_model.safetensors", "model.safetensors"] {
        if names.iter().any(|n| n == single) {
            return Ok(vec![dir.join(single)]);
        }
    }
    let all: Vec<PathBuf> = names
        .iter()
        .filter(|n| n.ends_with(".safetensors"))
        .map(|n| dir.join(n))
        .collect();
    if all.is_empty() {
        return Err(LoadError::NoWeights(dir.to_path_buf()));
    }
    Ok(all)
}

/// Number of parameters (tensor elements) in a component folder's safetensors, read
/// from the files' headers only.
pub fn parameter_count(dir: &Path) -> Result<u64, LoadError> {
    use std::io::Read;
    let mut total = 0u64;
    for path in safetensors_files(dir)? {
        let io = |source| LoadError::Io {
            path: path.clone(),
            source,
        };
        let invalid = |message: String| LoadError::Invalid {
            path: path.clone(),
            message,
        };
        let mut f = std::fs::File::open(&path).map_err(io)?;
        let mut len = [0u8; 8];
        f.read_exact(&mut len).map_err(io)?;
        let len = u64::from_le_bytes(len);
        if len > 100 << 20 {
            return Err(invalid(format!("safetensors header of {len} bytes")));
        }
        let mut header = vec![0u8; len as usize];
        f.read_exact(&mut header).map_err(io)?;
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| invalid(format!("safetensors header: {e}")))?;
        for (name, info) in header.iter().filter(|(n, _)| *n != "__metadata__") {
            let shape = info
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| invalid(format!("tensor {name} has no shape")))?;
            total += shape
                .iter()
                .map(|d| d.as_u64().unwrap_or(0))
                .product::<u64>();
        }
    }
    Ok(total)
}

/// A [`VarBuilder`] over a component folder's (memory-mapped) safetensors, converting
/// tensors to `dtype` on `device` as they are fetched; each tensor's mapped pages are
/// released once it is copied out, so loading peaks near the weights' size, not twice
/// it (`mmap_release`).
pub fn component_var_builder(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, LoadError> {
    let files = safetensors_files(dir)?;
    // SAFETY: the files are memory-mapped read-only; like every safetensors loader we
    // rely on nobody truncating them while the model is alive.
    let mmaps =
        unsafe { MmapedSafetensors::multi(&files) }.map_err(|source| LoadError::Candle {
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(VarBuilder::from_backend(
        Box::new(ReleasingMmaps(mmaps)),
        dtype,
        device.clone(),
    ))
}

/// Where a model comes from: a local Diffusers folder, or a Hugging Face repo id
/// (`org/name`, optionally `org/name@revision`) already in the local hub cache.
/// Nothing is downloaded: Kinema resolves models offline (fetch them beforehand with
/// `huggingface-cli download`), so `HF_HUB_OFFLINE` holds by construction.
pub fn resolve_model_source(spec: &str) -> Result<PathBuf, LoadError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let cache = hub_cache_dir().ok_or_else(|| LoadError::Invalid {
        path: path.to_path_buf(),
        message: "not a directory, and no Hugging Face cache dir (HF_HUB_CACHE, HF_HOME or HOME)"
            .into(),
    })?;
    let (repo, revision) = match spec.split_once('@') {
        Some((r, rev)) => (r, rev),
        None => (spec, "main"),
    };
    resolve_in_hub_cache(&cache, repo, revision)
}

/// The hub cache folder: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// The snapshot folder of `repo` (`org/name`) at `revision` (a branch or tag name
/// with a `refs/` entry, or a commit hash) in the hub cache layout
/// `models--org--name/{refs,snapshots}`.
pub fn resolve_in_hub_cache(
    cache: &Path,
    repo: &str,
    revision: &str,
) -> Result<PathBuf, LoadError> {
    let invalid = |path: PathBuf, message: String| LoadError::Invalid { path, message };
    let parts: Vec<&str> = repo.split('/').collect();
    let valid = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if parts.len() != 2 || !parts.iter().all(|p| valid(p)) || !valid(revision) {
        return Err(invalid(
            PathBuf::from(repo),
            "expected a local folder or a repo id org/name[@revision]".into(),
        ));
    }
    let root = cache.join(format!("models--{}--{}", parts[0], parts[1]));
    let is_hash = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
    let commit = if is_hash {
        revision.to_string()
    } else {
        let r = root.join("refs").join(revision);
        std::fs::read_to_string(&r)
            .map_err(|_| {
                invalid(
                    root.clone(),
                    format!("{repo}@{revision} is not in the hub cache (download it first)"),
                )
            })?
            .trim()
            .to_string()
    };
    let snap = root.join("snapshots").join(&commit);
    if !valid(&commit) || !snap.is_dir() {
        return Err(invalid(
            snap,
            format!("snapshot {commit} of {repo} is missing"),
        ));
    }
    Ok(snap)
}

/// A device from its name: `cpu`, `cuda` or `cuda:N`. Naming CUDA in a build without
/// the `cuda` feature is an error that says so (instead of failing at first use).
pub fn parse_device(name: &str) -> Result<Device, String> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let ordinal = match name.split_once(':') {
        None if name.eq_ignore_ascii_case("cuda") => 0,
        Some((kind, n)) if kind.eq_ignore_ascii_case("cuda") => n
            .parse::<usize>()
            .map_err(|_| format!("device {name:?}: expected cuda:N with N a GPU index"))?,
        _ => {
            return Err(format!(
                "unknown device {name:?}: expected cpu, cuda or cuda:N"
            ))
        }
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(format!(
            "device {name:?}: this build has no CUDA support (it was built without the \
             `cuda` cargo feature); rebuild with `--features cuda` or use cpu"
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| format!("device {name:?}: {e}"))
}

/// Whether `name` names a CUDA device (`cuda`, `cuda:N`), without opening it.
pub fn is_cuda_name(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    n == "cuda" || n.starts_with("cuda:")
}

/// The dtype a model runs in: `f32` (the CPU default), `bf16` (the CUDA default), `f16`.
pub fn parse_dtype(name: &str) -> Result<DType, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(format!(
            "unknown dtype {other:?}: expected f32, bf16 or f16"
        )),
    }
}

/// The default dtype on a device: f32 on CPU, bf16 on CUDA.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_dtypes_parse() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("CPU").unwrap().is_cpu());
        assert!(parse_device("tpu").unwrap_err().contains("unknown device"));
        assert!(parse_device("cuda:x").unwrap_err().contains("cuda:N"));
        if !candle_core::utils::cuda_is_available() {
            let e = parse_device("cuda:0").unwrap_err();
            assert!(e.contains("without the `cuda` cargo feature"), "{e}");
        }
        assert!(is_cuda_name("cuda:1") && is_cuda_name("cuda") && !is_cuda_name("cpu"));
        assert_eq!(parse_dtype("bf16").unwrap(), DType::BF16);
        assert!(parse_dtype("f8").is_err());
    }

    #[test]
    fn counts_parameters_from_headers() {
        let tiny =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/wan/fixtures/tiny/model");
        let n = parameter_count(&tiny.join("transformer")).unwrap();
        // the sharded tiny transformer: every tensor of every shard counted once
        let files = safetensors_files(&tiny.join("transformer")).unwrap();
        let mut expect = 0u64;
        for f in files {
            for (_, t) in candle_core::safetensors::load(&f, &Device::Cpu).unwrap() {
                expect += t.elem_count() as u64;
            }
        }
        assert_eq!(n, expect);
    }

    #[test]
    fn resolves_hub_cache_snapshots() {
        let tmp = std::env::temp_dir().join(format!("kinema-hub-{}", std::process::id()));
        let root = tmp.join("models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers");
        let hash = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::create_dir_all(root.join("snapshots").join(hash)).unwrap();
        std::fs::write(root.join("refs/main"), format!("{hash}\n")).unwrap();
        let repo = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers";
        let want = root.join("snapshots").join(hash);
        assert_eq!(resolve_in_hub_cache(&tmp, repo, "main").unwrap(), want);
        assert_eq!(resolve_in_hub_cache(&tmp, repo, hash).unwrap(), want);
        assert!(resolve_in_hub_cache(&tmp, repo, "dev").is_err());
        assert!(resolve_in_hub_cache(&tmp, "../etc", "main").is_err());
        assert!(resolve_in_hub_cache(&tmp, "a/b/c", "main").is_err());
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn finds_sharded_and_single_weights() {
        let tiny =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/wan/fixtures/tiny/model");
        let shards = safetensors_files(&tiny.join("transformer")).unwrap();
        assert!(shards.len() > 1, "the tiny transformer is sharded");
        let single = safetensors_files(&tiny.join("vae")).unwrap();
        assert_eq!(single.len(), 1);
        assert!(matches!(
            safetensors_files(&tiny.join("scheduler")),
            Err(LoadError::NoWeights(_))
        ));
    }
}
