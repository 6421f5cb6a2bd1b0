//! Loading Diffusers-format component folders: `config.json` (or
//! `scheduler_config.json`) beside a single `*.safetensors` file or a sharded set
//! named by `*.safetensors.index.json`. Weights are memory-mapped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;

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

/// A [`VarBuilder`] over a component folder's (memory-mapped) safetensors, converting
/// tensors to `dtype` on `device` as they are fetched.
pub fn component_var_builder(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, LoadError> {
    let files = safetensors_files(dir)?;
    // SAFETY: the files are memory-mapped read-only; like every safetensors loader we
    // rely on nobody truncating them while the model is alive.
    unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }.map_err(|source| {
        LoadError::Candle {
            path: dir.to_path_buf(),
            source,
        }
    })
}
