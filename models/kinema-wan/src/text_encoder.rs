//! umT5 encoder (`UMT5EncoderModel`): T5 v1.1 blocks (pre-RMSNorm, gated-GELU FFN, no
//! biases, unscaled attention logits) where EVERY layer owns a relative-position bias
//! table, unlike T5 which shares layer 0's. Runs with the padding mask.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use kinema_diffusion::activation::gelu_tanh;
use kinema_diffusion::attention::{attention, AttentionBudget};
use kinema_diffusion::norm::rms_norm;
use kinema_diffusion::weights::{component_var_builder, read_json};

use crate::error::{Result, WanError};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Umt5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_ff")]
    pub feed_forward_proj: String,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_ff() -> String {
    "gated-gelu".into()
}

impl Umt5Config {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let cfg: Self = read_json(&dir.join("config.json"))?;
        if cfg.feed_forward_proj != "gated-gelu" {
            return Err(WanError::Config {
                what: "text_encoder.feed_forward_proj".into(),
                message: format!("{:?} (only gated-gelu is supported)", cfg.feed_forward_proj),
            });
        }
        Ok(cfg)
    }
}

/// Bidirectional T5 bucket of `relative = key_pos - query_pos`, computed in f32 like
/// the reference so bucket edges land identically.
pub fn relative_position_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = (num_buckets / 2) as i64;
    let mut bucket = if relative > 0 { half } else { 0 };
    let rel = relative.abs();
    let max_exact = half / 2;
    if rel < max_exact {
        bucket += rel;
    } else {
        let ratio = ((rel as f32) / (max_exact as f32)).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32);
        let large = max_exact + (ratio * (half - max_exact) as f32) as i64;
        bucket += large.min(half - 1);
    }
    bucket as usize
}

fn linear_no_bias(vb: VarBuilder, i: usize, o: usize) -> Result<Linear> {
    Ok(candle_nn::linear_no_bias(i, o, vb)?)
}

#[derive(Debug, Clone)]
struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    relative_attention_bias: Embedding,
    heads: usize,
    d_kv: usize,
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: Tensor,
    attn: SelfAttention,
    ff_norm: Tensor,
    wi_0: Linear,
    wi_1: Linear,
    wo: Linear,
}

#[derive(Debug, Clone)]
pub struct Umt5Encoder {
    pub config: Umt5Config,
    embed_tokens: Embedding,
    blocks: Vec<Block>,
    final_layer_norm: Tensor,
    pub budget: AttentionBudget,
}

impl Umt5Encoder {
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = Umt5Config::from_dir(dir)?;
        let vb = component_var_builder(dir, dtype, device)?;
        Self::new(config, vb)
    }

    pub fn new(config: Umt5Config, vb: VarBuilder) -> Result<Self> {
        let c = &config;
        let inner = c.num_heads * c.d_kv;
        // the encoder's table is tied to `shared`; checkpoints store either name
        let emb_vb = if vb.contains_tensor("encoder.embed_tokens.weight") {
            vb.pp("encoder.embed_tokens")
        } else {
            vb.pp("shared")
        };
        let embed_tokens = candle_nn::embedding(c.vocab_size, c.d_model, emb_vb)?;
        let enc = vb.pp("encoder");
        let mut blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let b = enc.pp("block").pp(i);
            let l0 = b.pp("layer").pp(0);
            let sa = l0.pp("SelfAttention");
            let l1 = b.pp("layer").pp(1);
            let ff = l1.pp("DenseReluDense");
            blocks.push(Block {
                attn_norm: l0.pp("layer_norm").get(c.d_model, "weight")?,
                attn: SelfAttention {
                    q: linear_no_bias(sa.pp("q"), c.d_model, inner)?,
                    k: linear_no_bias(sa.pp("k"), c.d_model, inner)?,
                    v: linear_no_bias(sa.pp("v"), c.d_model, inner)?,
                    o: linear_no_bias(sa.pp("o"), inner, c.d_model)?,
                    relative_attention_bias: candle_nn::embedding(
                        c.relative_attention_num_buckets,
                        c.num_heads,
                        sa.pp("relative_attention_bias"),
                    )?,
                    heads: c.num_heads,
                    d_kv: c.d_kv,
                },
                ff_norm: l1.pp("layer_norm").get(c.d_model, "weight")?,
                wi_0: linear_no_bias(ff.pp("wi_0"), c.d_model, c.d_ff)?,
                wi_1: linear_no_bias(ff.pp("wi_1"), c.d_model, c.d_ff)?,
                wo: linear_no_bias(ff.pp("wo"), c.d_ff, c.d_model)?,
            });
        }
        let final_layer_norm = enc.pp("final_layer_norm").get(c.d_model, "weight")?;
        Ok(Self {
            config,
            embed_tokens,
            blocks,
            final_layer_norm,
            budget: AttentionBudget::for_device(vb.device()),
        })
    }

    /// Where the weights live.
    pub fn device(&self) -> &Device {
        self.final_layer_norm.device()
    }

    /// A copy with every weight on `device` (an offloaded encoder is copied to the GPU
    /// for a request's prompts, then dropped).
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let linear = |l: &Linear| -> Result<Linear> {
            let bias = l.bias().map(|b| b.to_device(device)).transpose()?;
            Ok(Linear::new(l.weight().to_device(device)?, bias))
        };
        let embedding = |e: &Embedding| -> Result<Embedding> {
            let table = e.embeddings().to_device(device)?;
            let dim = table.dim(1)?;
            Ok(Embedding::new(table, dim))
        };
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                Ok(Block {
                    attn_norm: b.attn_norm.to_device(device)?,
                    attn: SelfAttention {
                        q: linear(&b.attn.q)?,
                        k: linear(&b.attn.k)?,
                        v: linear(&b.attn.v)?,
                        o: linear(&b.attn.o)?,
                        relative_attention_bias: embedding(&b.attn.relative_attention_bias)?,
                        heads: b.attn.heads,
                        d_kv: b.attn.d_kv,
                    },
                    ff_norm: b.ff_norm.to_device(device)?,
                    wi_0: linear(&b.wi_0)?,
                    wi_1: linear(&b.wi_1)?,
                    wo: linear(&b.wo)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: self.config.clone(),
            embed_tokens: embedding(&self.embed_tokens)?,
            blocks,
            final_layer_norm: self.final_layer_norm.to_device(device)?,
            budget: AttentionBudget::for_device(device),
        })
    }

    /// `[L, L]` u32 bucket indices for a sequence of `len` tokens.
    fn buckets(&self, len: usize, device: &Device) -> Result<Tensor> {
        let c = &self.config;
        let mut v = Vec::with_capacity(len * len);
        for q in 0..len as i64 {
            for k in 0..len as i64 {
                v.push(relative_position_bucket(
                    k - q,
                    c.relative_attention_num_buckets,
                    c.relative_attention_max_distance,
                ) as u32);
            }
        }
        Ok(Tensor::from_vec(v, (len, len), device)?)
    }

    /// `input_ids: [B, L]` (u32), `attention_mask: [B, L]` (1 real, 0 padding, any
    /// dtype). Returns `last_hidden_state: [B, L, d_model]`.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (b, len) = input_ids.dims2()?;
        let device = input_ids.device();
        let mut x = self.embed_tokens.forward(input_ids)?;
        let dtype = x.dtype();
        // additive padding mask over keys: 0 for real tokens, f32::MIN for padding
        let mask = attention_mask.to_dtype(DType::F32)?;
        let mask = ((mask.ones_like()? - mask)? * f32::MIN as f64)?.reshape((b, 1, 1, len))?;
        let buckets = self.buckets(len, device)?;
        let eps = self.config.layer_norm_epsilon;
        for blk in &self.blocks {
            let h = rms_norm(&x, &blk.attn_norm, eps)?;
            let a = &blk.attn;
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((b, len, a.heads, a.d_kv))?.transpose(1, 2)
            };
            let q = split(a.q.forward(&h)?)?;
            let k = split(a.k.forward(&h)?)?;
            let v = split(a.v.forward(&h)?)?;
            // [L, L, H] -> [1, H, L, L]
            let pos = a
                .relative_attention_bias
                .forward(&buckets)?
                .permute((2, 0, 1))?
                .unsqueeze(0)?
                .to_dtype(DType::F32)?;
            let bias = pos.broadcast_add(&mask)?;
            let o = attention(&q, &k, &v, Some(&bias), 1.0, self.budget)?;
            let o = o.transpose(1, 2)?.reshape((b, len, a.heads * a.d_kv))?;
            x = (x + a.o.forward(&o)?)?;
            let h = rms_norm(&x, &blk.ff_norm, eps)?;
            let g = gelu_tanh(&blk.wi_0.forward(&h)?)?;
            let l = blk.wi_1.forward(&h)?;
            x = (x + blk.wo.forward(&(g * l)?)?)?;
        }
        Ok(rms_norm(&x, &self.final_layer_norm, eps)?.to_dtype(dtype)?)
    }
}
