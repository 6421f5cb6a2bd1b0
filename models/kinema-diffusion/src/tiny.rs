//! Deterministic random weights for tiny test models.
//!
//! Every tensor is filled by a counter-based generator, `offset + scale * u` with `u`
//! in [-1, 1) drawn from splitmix64 over `fnv1a64(name) + (i + 1) * golden` (top 24
//! bits). The Python fixture script (`tests/wan/make_fixtures.py`) fills the reference
//! models the same way, so a model too large to commit is committed as a manifest
//! (`weights.json`) and regenerated bit for bit here.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::weights::{read_json, LoadError};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

pub fn fnv1a64(text: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// `n` values of the generator for tensor `name`, as `offset + scale * u`.
pub fn det_values(name: &str, n: usize, offset: f64, scale: f64) -> Vec<f32> {
    let key = fnv1a64(name);
    (1..=n as u64)
        .map(|i| {
            let mut z = key.wrapping_add(i.wrapping_mul(GOLDEN));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0;
            (offset + scale * u) as f32
        })
        .collect()
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct ManifestEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: f64,
    pub scale: f64,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Manifest {
    pub generator: String,
    pub tensors: Vec<ManifestEntry>,
}

pub const GENERATOR: &str = "splitmix64-fnv1a64-v1";

/// Writes `out` (a safetensors file) from the manifest at `manifest`.
pub fn materialize(manifest: &Path, out: &Path) -> Result<(), LoadError> {
    let m: Manifest = read_json(manifest)?;
    if m.generator != GENERATOR {
        return Err(LoadError::Invalid {
            path: manifest.to_path_buf(),
            message: format!("unknown generator {:?}", m.generator),
        });
    }
    let candle = |source| LoadError::Candle {
        path: out.to_path_buf(),
        source,
    };
    let mut tensors = HashMap::with_capacity(m.tensors.len());
    for e in &m.tensors {
        let n = e.shape.iter().product();
        let v = det_values(&e.name, n, e.offset, e.scale);
        let t = Tensor::from_vec(v, e.shape.as_slice(), &Device::Cpu).map_err(candle)?;
        tensors.insert(e.name.clone(), t);
    }
    candle_core::safetensors::save(&tensors, out).map_err(candle)
}

/// The largest absolute element-wise difference of two tensors of one shape, in f32:
/// how every parity check compares a model's output with its reference.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    let d = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?;
    d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}
