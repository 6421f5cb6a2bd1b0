//! Checking a model's code against a weight layout without reading the weights: a
//! [`VarBuilder`] over a component folder's safetensors that answers every request from
//! the files' headers (the name must exist with the requested shape) with a zero tensor
//! broadcast to that shape, and records what was asked. Building a component through it
//! proves the loader finds every tensor of a published layout (shards, index, names,
//! shapes) and shows which of the files' tensors it never asked for, at any model size:
//! the files may be sparse, and nothing of their data is read.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::mmap_release::expect_shape;
use crate::weights::{safetensors_files, LoadError};

/// The names a [`layout_var_builder`] was asked for, and the names its files hold.
#[derive(Debug, Default)]
pub struct LayoutRecord {
    pub requested: Mutex<BTreeSet<String>>,
    pub available: BTreeSet<String>,
}

impl LayoutRecord {
    /// Tensors the files hold that the model never asked for.
    pub fn unused(&self) -> Vec<String> {
        let requested = self.requested.lock().map(|r| r.clone()).unwrap_or_default();
        self.available.difference(&requested).cloned().collect()
    }
}

struct HeaderOnly {
    files: MmapedSafetensors,
    record: Arc<LayoutRecord>,
}

impl HeaderOnly {
    fn zeros(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let view = self.files.get(name)?;
        if let Ok(mut requested) = self.record.requested.lock() {
            requested.insert(name.to_string());
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(view.shape())
    }
}

impl SimpleBackend for HeaderOnly {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        expect_shape(self.zeros(name, dtype, dev)?, s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.zeros(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.files.get(name).is_ok()
    }
}

/// A header-only [`VarBuilder`] over `dir`'s safetensors (found as
/// [`crate::weights::component_var_builder`] finds them), and its record.
pub fn layout_var_builder(
    dir: &Path,
    dtype: DType,
) -> std::result::Result<(VarBuilder<'static>, Arc<LayoutRecord>), LoadError> {
    let files = safetensors_files(dir)?;
    // SAFETY: read-only mappings of files nobody truncates while they are checked;
    // only their headers are read.
    let files =
        unsafe { MmapedSafetensors::multi(&files) }.map_err(|source| LoadError::Candle {
            path: dir.to_path_buf(),
            source,
        })?;
    let available = files.tensors().into_iter().map(|(name, _)| name).collect();
    let record = Arc::new(LayoutRecord {
        requested: Mutex::new(BTreeSet::new()),
        available,
    });
    let backend = HeaderOnly {
        files,
        record: record.clone(),
    };
    Ok((
        VarBuilder::from_backend(Box::new(backend), dtype, Device::Cpu),
        record,
    ))
}
