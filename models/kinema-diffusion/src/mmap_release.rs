//! A [`VarBuilder`] backend over memory-mapped safetensors that hands each tensor's
//! pages back to the kernel once the tensor has been copied out.
//!
//! candle copies every tensor out of the map (converting its dtype, moving it to the
//! device), but the pages it read stay mapped, and so counted in the process's RSS,
//! until the map is dropped with the builder: loading peaked at twice the weights
//! (10.8 GB for the 1.3B transformer in f32). Releasing the pages of each tensor as
//! it is loaded (`madvise(MADV_DONTNEED)`: the mapping is read-only, so a
//! later read faults the same bytes in from the file again) bounds the peak at the
//! weights plus one tensor.

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

pub(crate) struct ReleasingMmaps(pub(crate) MmapedSafetensors);

impl ReleasingMmaps {
    fn load(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let tensor = self.0.load(name, dev)?.to_dtype(dtype)?;
        // `load` copied the bytes (CPU tensors own their storage), so the mapped
        // pages are no longer needed.
        release_pages(self.0.get(name)?.data());
        Ok(tensor)
    }
}

impl SimpleBackend for ReleasingMmaps {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        expect_shape(self.load(name, dtype, dev)?, s, name)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.get(name).is_ok()
    }
}

/// `tensor` when it has shape `s`, else candle's shape-mismatch error naming the
/// tensor (what `VarBuilder` backends answer for a wrong shape).
pub(crate) fn expect_shape(tensor: Tensor, s: Shape, name: &str) -> Result<Tensor> {
    if tensor.shape() != &s {
        Err(candle_core::Error::UnexpectedShape {
            msg: format!("shape mismatch for {name}"),
            expected: s,
            got: tensor.shape().clone(),
        }
        .bt())?
    }
    Ok(tensor)
}

/// Drops the whole pages inside `bytes` (a slice of a read-only file
/// mapping) from this process's resident set.
#[cfg(target_os = "linux")]
fn release_pages(bytes: &[u8]) {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return,
    };
    let start = (bytes.as_ptr() as usize).next_multiple_of(page);
    let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
    if end > start {
        // SAFETY: [start, end) lies inside `bytes`, i.e. inside a live mapping of a
        // file mapped read-only; MADV_DONTNEED only drops those
        // pages from the page tables, and any later read refaults identical bytes
        // from the file. Failure is harmless (the pages simply stay resident).
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn release_pages(_: &[u8]) {}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use candle_core::{DType, Device, Tensor};

    use crate::weights::component_var_builder;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        crate::tiny::max_abs_diff(a, b).unwrap()
    }

    #[test]
    fn sharded_tensors_load_as_stored_and_again_after_release() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/wan/fixtures/tiny/model/transformer");
        let vb = component_var_builder(&dir, DType::F32, &Device::Cpu).unwrap();
        let mut stored = HashMap::new();
        for f in crate::weights::safetensors_files(&dir).unwrap() {
            stored.extend(candle_core::safetensors::load(&f, &Device::Cpu).unwrap());
        }
        assert!(stored.len() > 10);
        for (name, want) in &stored {
            assert!(vb.contains_tensor(name), "{name}");
            // the second fetch reads pages the first one released
            for _ in 0..2 {
                let got = vb.get(want.shape(), name).unwrap();
                assert_eq!(max_diff(&got, want), 0.0, "{name}");
            }
        }
        assert!(!vb.contains_tensor("no.such.tensor"));
        let (name, t) = stored.iter().next().unwrap();
        let wrong: Vec<usize> = t.dims().iter().map(|d| d + 1).collect();
        assert!(vb.get(wrong.as_slice(), name).is_err());
    }

    /// Resident bytes of this process's mappings of `file` (`/proc/self/smaps`).
    #[cfg(target_os = "linux")]
    fn mapped_rss(file: &Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = file.to_str().unwrap();
        let mut inside = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                inside = line.ends_with(name);
            } else if inside && first == "Rss:" {
                kib += line
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
        }
        kib * 1024
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn loaded_tensors_leave_no_mapped_pages_behind() {
        let dir = std::env::temp_dir().join(format!("kinema-mmap-release-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("diffusion_pytorch_model.safetensors");
        let n = 1 << 20; // 4 MiB of f32
        let big = Tensor::arange(0f32, n as f32, &Device::Cpu).unwrap();
        let small = Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
        candle_core::safetensors::save(
            &HashMap::from([("big".to_string(), big.clone()), ("small".into(), small)]),
            &file,
        )
        .unwrap();
        let vb = component_var_builder(&dir, DType::F32, &Device::Cpu).unwrap();
        let got = vb.get(n, "big").unwrap();
        assert_eq!(max_diff(&got, &big), 0.0);
        // Without the release all 4 MiB would stay resident in the mapping; what may
        // remain is the header's page and the tensor's partial edge pages.
        let rss = mapped_rss(&file);
        assert!(rss <= 64 << 10, "{rss} bytes of the file still mapped");
        drop(vb);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
