//! The reference's `feat_cache`: one slot per causal conv, holding the last frames of its
//! input from the previous chunk, so a video runs chunk by chunk in bounded memory.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use kinema_diffusion::conv3d::CausalConv3d;

use crate::error::Result;

/// Frames each causal conv keeps from the previous chunk.
pub(crate) const CACHE_T: usize = 2;

/// What a causal conv remembers between chunks (the reference's `feat_cache` slot).
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    Empty,
    /// First chunk seen by a temporal upsampler: its time conv was skipped.
    Rep,
    Frames(Tensor),
}

/// One slot per causal conv, visited in a fixed order per chunk.
#[derive(Debug, Clone)]
pub(crate) struct FeatCache {
    pub(crate) slots: Vec<Slot>,
    idx: usize,
}

impl FeatCache {
    pub(crate) fn new() -> Self {
        Self {
            slots: Vec::new(),
            idx: 0,
        }
    }

    /// Starts the next chunk: slots are visited from the first again.
    pub(crate) fn rewind(&mut self) {
        self.idx = 0;
    }

    pub(crate) fn next(&mut self) -> usize {
        if self.idx == self.slots.len() {
            self.slots.push(Slot::Empty);
        }
        let i = self.idx;
        self.idx += 1;
        i
    }
}

/// The last `CACHE_T` frames of `x`, topped up with the previous slot's last frame. A
/// copy: a view would keep all of `x` alive until the next chunk (at 480p, GBs over the
/// decoder's convs).
pub(crate) fn cache_frames(x: &Tensor, old: &Slot) -> Result<Tensor> {
    let t = x.dim(2)?;
    let take = t.min(CACHE_T);
    let mut c = x.narrow(2, t - take, take)?;
    if take < 2 {
        match old {
            Slot::Frames(prev) => {
                let pt = prev.dim(2)?;
                c = Tensor::cat(&[&prev.narrow(2, pt - 1, 1)?, &c], 2)?;
            }
            Slot::Rep | Slot::Empty => {}
        }
    }
    Ok(c.contiguous()?)
}

/// A causal conv applied with its cache slot.
pub(crate) fn cached_conv(
    conv: &CausalConv3d,
    x: &Tensor,
    cache: &mut FeatCache,
) -> Result<Tensor> {
    let i = cache.next();
    let new = cache_frames(x, &cache.slots[i])?;
    let y = match &cache.slots[i] {
        Slot::Frames(prev) => conv.forward(x, Some(prev))?,
        _ => conv.forward(x, None)?,
    };
    cache.slots[i] = Slot::Frames(new);
    Ok(y)
}

/// A `WanCausalConv3d` with a cubic `k.1` spatial kernel of `k.0` taps in time,
/// `nn.Conv3d` padding `pad` and stride 1.
pub(crate) fn causal_conv(
    vb: VarBuilder,
    i: usize,
    o: usize,
    k: (usize, usize),
    pad: (usize, usize),
) -> Result<CausalConv3d> {
    let w = vb.get((o, i, k.0, k.1, k.1), "weight")?;
    let b = vb.get(o, "bias")?;
    Ok(CausalConv3d::new(&w, Some(b), pad, 1)?)
}
