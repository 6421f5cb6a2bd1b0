//! `WanTransformer3DModel`: patch embedding, 3D RoPE, time and text embeddings, blocks of
//! (modulated self-attention with QK RMS norm across heads and RoPE, cross-attention
//! to the text, modulated FFN), output norm, projection and unpatchify.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use kinema_diffusion::attention::{attention, AttentionBudget};
use kinema_diffusion::norm::{layer_norm, rms_norm};
use kinema_diffusion::rope::{rope_interleaved, Rope3d};
use kinema_diffusion::weights::{component_var_builder, read_json};

use crate::error::{Result, WanError};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct WanTransformerConfig {
    pub patch_size: [usize; 3],
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub in_channels: usize,
    pub out_channels: Option<usize>,
    pub text_dim: usize,
    pub freq_dim: usize,
    pub ffn_dim: usize,
    pub num_layers: usize,
    #[serde(default = "yes")]
    pub cross_attn_norm: bool,
    pub qk_norm: Option<String>,
    #[serde(default = "default_eps")]
    pub eps: f64,
    pub image_dim: Option<usize>,
    pub added_kv_proj_dim: Option<usize>,
    #[serde(default = "default_rope_len")]
    pub rope_max_seq_len: usize,
    pub pos_embed_seq_len: Option<usize>,
}

fn yes() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-6
}
fn default_rope_len() -> usize {
    1024
}

impl WanTransformerConfig {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let c: Self = read_json(&dir.join("config.json"))?;
        let bad = |message: &str| WanError::Config {
            what: "transformer".into(),
            message: message.into(),
        };
        if c.image_dim.is_some() || c.added_kv_proj_dim.is_some() || c.pos_embed_seq_len.is_some() {
            return Err(bad("image conditioning (I2V) is not supported yet"));
        }
        if c.qk_norm.as_deref() != Some("rms_norm_across_heads") {
            return Err(bad("only qk_norm = rms_norm_across_heads is supported"));
        }
        if c.patch_size.contains(&0) || c.num_attention_heads == 0 {
            return Err(bad("zero patch size or head count"));
        }
        Ok(c)
    }

    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }
}

fn linear(vb: VarBuilder, i: usize, o: usize) -> Result<Linear> {
    Ok(candle_nn::linear(i, o, vb)?)
}

#[derive(Debug, Clone)]
struct WanAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
    heads: usize,
    eps: f64,
}

impl WanAttention {
    fn new(vb: VarBuilder, dim: usize, heads: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            to_q: linear(vb.pp("to_q"), dim, dim)?,
            to_k: linear(vb.pp("to_k"), dim, dim)?,
            to_v: linear(vb.pp("to_v"), dim, dim)?,
            to_out: linear(vb.pp("to_out").pp(0), dim, dim)?,
            norm_q: vb.pp("norm_q").get(dim, "weight")?,
            norm_k: vb.pp("norm_k").get(dim, "weight")?,
            heads,
            eps,
        })
    }

    /// `x: [B, L, dim]`; `context` for cross-attention; `rope` (cos, sin) for
    /// self-attention.
    fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        rope: Option<&(Tensor, Tensor)>,
        budget: AttentionBudget,
    ) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let q = rms_norm(&self.to_q.forward(x)?, &self.norm_q, self.eps)?;
        let k = rms_norm(&self.to_k.forward(ctx)?, &self.norm_k, self.eps)?;
        let v = self.to_v.forward(ctx)?;
        let (b, lq, dim) = q.dims3()?;
        let lk = k.dim(1)?;
        let hd = dim / self.heads;
        let split = |t: Tensor, l: usize| t.reshape((b, l, self.heads, hd))?.transpose(1, 2);
        let mut q = split(q, lq)?;
        let mut k = split(k, lk)?;
        let v = split(v, lk)?;
        if let Some((cos, sin)) = rope {
            q = rope_interleaved(&q, cos, sin)?;
            k = rope_interleaved(&k, cos, sin)?;
        }
        let o = attention(&q, &k, &v, None, 1.0 / (hd as f64).sqrt(), budget)?;
        let o = o.transpose(1, 2)?.reshape((b, lq, dim))?;
        Ok(self.to_out.forward(&o)?)
    }
}

/// One transformer block: modulated self-attention (RoPE, QK norm), cross-attention to
/// the text, modulated feed-forward. Public so benchmarks can run one block alone.
#[derive(Debug, Clone)]
pub struct WanTransformerBlock {
    attn1: WanAttention,
    attn2: WanAttention,
    norm2: Option<(Tensor, Tensor)>,
    ffn_in: Linear,
    ffn_out: Linear,
    scale_shift_table: Tensor,
    eps: f64,
}

impl WanTransformerBlock {
    /// The block under `vb` (e.g. `blocks.0`), with the model's config.
    pub fn new(vb: VarBuilder, c: &WanTransformerConfig) -> Result<Self> {
        let dim = c.inner_dim();
        let norm2 = if c.cross_attn_norm {
            let n = vb.pp("norm2");
            Some((n.get(dim, "weight")?, n.get(dim, "bias")?))
        } else {
            None
        };
        Ok(Self {
            attn1: WanAttention::new(vb.pp("attn1"), dim, c.num_attention_heads, c.eps)?,
            attn2: WanAttention::new(vb.pp("attn2"), dim, c.num_attention_heads, c.eps)?,
            norm2,
            ffn_in: linear(vb.pp("ffn").pp("net").pp(0).pp("proj"), dim, c.ffn_dim)?,
            ffn_out: linear(vb.pp("ffn").pp("net").pp(2), c.ffn_dim, dim)?,
            scale_shift_table: vb.get((1, 6, dim), "scale_shift_table")?,
            eps: c.eps,
        })
    }

    /// `temb`: the time projection, `[B, 6, dim]`, or `[B, L, 6, dim]` with per-token
    /// timesteps (Wan 2.2 TI2V); `x: [B, L, dim]`, `context: [B, L_text, dim]` (embedded
    /// text), `rope`: [`Rope3d::cos_sin`] of the latent patch grid.
    pub fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        temb: &Tensor,
        rope: &(Tensor, Tensor),
        budget: AttentionBudget,
    ) -> Result<Tensor> {
        let dtype = x.dtype();
        let table = self.scale_shift_table.to_dtype(DType::F32)?;
        let temb = temb.to_dtype(DType::F32)?;
        // per item: [B, 6, dim], parts [B, 1, dim]; per token: [B, L, 6, dim], parts
        // [B, L, dim]
        let per_token = temb.rank() == 4;
        let m = if per_token {
            table.unsqueeze(0)?.broadcast_add(&temb)?
        } else {
            table.broadcast_add(&temb)?
        };
        let part = |i: usize| -> candle_core::Result<Tensor> {
            if per_token {
                m.narrow(2, i, 1)?.squeeze(2)
            } else {
                m.narrow(1, i, 1)
            }
        };
        let (shift, scale, gate) = (part(0)?, part(1)?, part(2)?);
        let (c_shift, c_scale, c_gate) = (part(3)?, part(4)?, part(5)?);

        // 1. self-attention
        let xf = x.to_dtype(DType::F32)?;
        let h = layer_norm(&xf, None, None, self.eps)?
            .broadcast_mul(&(scale + 1.0)?)?
            .broadcast_add(&shift)?
            .to_dtype(dtype)?;
        let a = self.attn1.forward(&h, None, Some(rope), budget)?;
        let x = (xf + a.to_dtype(DType::F32)?.broadcast_mul(&gate)?)?.to_dtype(dtype)?;

        // 2. cross-attention (no gate)
        let h = match &self.norm2 {
            Some((w, b)) => {
                layer_norm(&x.to_dtype(DType::F32)?, Some(w), Some(b), self.eps)?.to_dtype(dtype)?
            }
            None => x.clone(),
        };
        let a = self.attn2.forward(&h, Some(context), None, budget)?;
        let x = (x + a)?;

        // 3. feed-forward
        let xf = x.to_dtype(DType::F32)?;
        let h = layer_norm(&xf, None, None, self.eps)?
            .broadcast_mul(&(c_scale + 1.0)?)?
            .broadcast_add(&c_shift)?
            .to_dtype(dtype)?;
        let f = self.ffn_out.forward(&self.ffn_in.forward(&h)?.gelu()?)?;
        Ok((xf + f.to_dtype(DType::F32)?.broadcast_mul(&c_gate)?)?.to_dtype(dtype)?)
    }
}

/// The timesteps of one forward.
#[derive(Debug, Clone, Copy)]
pub enum Timesteps<'a> {
    /// One per batch item (Wan 2.1, Wan 2.2 A14B).
    PerItem(&'a [f32]),
    /// One per latent token, `[B, F' H' W']` row-major (Wan 2.2 TI2V with
    /// `expand_timesteps`: the conditioning frame's tokens at 0).
    PerToken(&'a [f32]),
}

impl Timesteps<'_> {
    pub fn len(&self) -> usize {
        match self {
            Self::PerItem(t) | Self::PerToken(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
pub struct WanTransformer3DModel {
    pub config: WanTransformerConfig,
    rope: Rope3d,
    patch_weight: Tensor,
    patch_bias: Tensor,
    time_linear_1: Linear,
    time_linear_2: Linear,
    time_proj: Linear,
    text_linear_1: Linear,
    text_linear_2: Linear,
    blocks: Vec<WanTransformerBlock>,
    proj_out: Linear,
    scale_shift_table: Tensor,
    pub budget: AttentionBudget,
}

/// Sinusoidal timestep embedding (`Timesteps(freq_dim, flip_sin_to_cos=True,
/// downscale_freq_shift=0)`): `[cos(t w_i), sin(t w_i)]`, `w_i = exp(-ln(1e4) i / half)`.
pub fn timestep_embedding(timesteps: &[f32], dim: usize, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let ln = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (ln * i as f32 / half as f32).exp())
        .collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        out.extend(freqs.iter().map(|f| (t * f).cos()));
        out.extend(freqs.iter().map(|f| (t * f).sin()));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Ok(Tensor::from_vec(out, (timesteps.len(), dim), device)?)
}

impl WanTransformer3DModel {
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = WanTransformerConfig::from_dir(dir)?;
        let vb = component_var_builder(dir, dtype, device)?;
        Self::new(config, vb)
    }

    pub fn new(config: WanTransformerConfig, vb: VarBuilder) -> Result<Self> {
        let c = &config;
        let dim = c.inner_dim();
        let [pt, ph, pw] = c.patch_size;
        let ce = vb.pp("condition_embedder");
        let blocks = (0..c.num_layers)
            .map(|i| WanTransformerBlock::new(vb.pp("blocks").pp(i), c))
            .collect::<Result<Vec<_>>>()?;
        let patch = vb.pp("patch_embedding");
        Ok(Self {
            rope: Rope3d::new(c.attention_head_dim, c.rope_max_seq_len, 10000.0),
            patch_weight: patch.get((dim, c.in_channels, pt, ph, pw), "weight")?,
            patch_bias: patch.get(dim, "bias")?,
            time_linear_1: linear(ce.pp("time_embedder").pp("linear_1"), c.freq_dim, dim)?,
            time_linear_2: linear(ce.pp("time_embedder").pp("linear_2"), dim, dim)?,
            time_proj: linear(ce.pp("time_proj"), dim, 6 * dim)?,
            text_linear_1: linear(ce.pp("text_embedder").pp("linear_1"), c.text_dim, dim)?,
            text_linear_2: linear(ce.pp("text_embedder").pp("linear_2"), dim, dim)?,
            blocks,
            proj_out: linear(vb.pp("proj_out"), dim, c.out_channels() * pt * ph * pw)?,
            scale_shift_table: vb.get((1, 2, dim), "scale_shift_table")?,
            budget: AttentionBudget::for_device(vb.device()),
            config,
        })
    }

    /// Conv3d with kernel = stride = patch as a linear map over patches:
    /// `[B, C, F, H, W]` -> `[B, F' H' W', dim]`.
    fn patchify(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, f, h, w) = x.dims5()?;
        let [pt, ph, pw] = self.config.patch_size;
        let (fo, ho, wo) = (f / pt, h / ph, w / pw);
        let dim = self.config.inner_dim();
        // [B, C, F', pt, H', ph, W', pw] -> [B, F', H', W', C, pt, ph, pw]
        let x = x
            .reshape(vec![b, c, fo, pt, ho, ph, wo, pw])?
            .permute(vec![0, 2, 4, 6, 1, 3, 5, 7])?
            .contiguous()?
            .reshape((b, fo * ho * wo, c * pt * ph * pw))?;
        let w = self.patch_weight.reshape((dim, c * pt * ph * pw))?;
        Ok(x.broadcast_matmul(&w.t()?)?
            .broadcast_add(&self.patch_bias)?)
    }

    /// Embeds the text states once (`[B, L_text, text_dim]` -> `[B, L_text, dim]`), so a
    /// denoising loop can reuse them across steps.
    pub fn embed_text(&self, encoder_hidden_states: &Tensor) -> Result<Tensor> {
        let h = self.text_linear_1.forward(encoder_hidden_states)?.gelu()?;
        Ok(self.text_linear_2.forward(&h)?)
    }

    /// `hidden_states: [B, C, F, H, W]`, `timestep`: one value per batch item,
    /// `encoder_hidden_states: [B, L_text, text_dim]`. Returns `[B, C_out, F, H, W]`.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        timestep: &[f32],
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        let context = self.embed_text(encoder_hidden_states)?;
        self.forward_with_context(hidden_states, timestep, &context)
    }

    /// As [`Self::forward`] with text states already through [`Self::embed_text`].
    pub fn forward_with_context(
        &self,
        hidden_states: &Tensor,
        timestep: &[f32],
        context: &Tensor,
    ) -> Result<Tensor> {
        self.forward_timesteps(hidden_states, Timesteps::PerItem(timestep), context)
    }

    /// The time embedding `temb` (`[B, dim]`) and its projection (`[B, 6, dim]`) for
    /// one timestep per row.
    fn time_embedding(
        &self,
        timestep: &[f32],
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let c = &self.config;
        let n = timestep.len();
        let t = timestep_embedding(timestep, c.freq_dim, device)?
            .to_dtype(self.time_linear_1.weight().dtype())?;
        let temb = self
            .time_linear_2
            .forward(&self.time_linear_1.forward(&t)?.silu()?)?
            .to_dtype(dtype)?;
        let dim = c.inner_dim();
        let tproj = self
            .time_proj
            .forward(&temb.silu()?)?
            .reshape((n, 6, dim))?;
        Ok((temb, tproj))
    }

    /// The forward with one timestep per batch item or per latent token
    /// ([`Timesteps`]). Per-token timesteps that are all equal within each item run as
    /// per-item ones (the same values, without `[B, L, 6, dim]` modulation tensors).
    pub fn forward_timesteps(
        &self,
        hidden_states: &Tensor,
        timestep: Timesteps<'_>,
        context: &Tensor,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, _ch, f, h, w) = hidden_states.dims5()?;
        let [pt, ph, pw] = c.patch_size;
        if f % pt != 0 || h % ph != 0 || w % pw != 0 {
            return Err(WanError::Input(format!(
                "latents {f}x{h}x{w} not divisible by patch {pt}x{ph}x{pw}"
            )));
        }
        let (fo, ho, wo) = (f / pt, h / ph, w / pw);
        let seq = fo * ho * wo;
        let per_item: Vec<f32>;
        let timestep = match timestep {
            Timesteps::PerToken(ts) if ts.len() == b * seq => {
                let uniform = ts
                    .chunks(seq.max(1))
                    .all(|row| row.iter().all(|&v| v == row[0]));
                if uniform {
                    per_item = ts.chunks(seq.max(1)).map(|row| row[0]).collect();
                    Timesteps::PerItem(&per_item)
                } else {
                    Timesteps::PerToken(ts)
                }
            }
            other => other,
        };
        let expected = match timestep {
            Timesteps::PerItem(_) => b,
            Timesteps::PerToken(_) => b * seq,
        };
        if timestep.len() != expected {
            return Err(WanError::Input(format!(
                "{} timesteps for a batch of {b} x {seq} tokens",
                timestep.len()
            )));
        }
        let device = hidden_states.device();
        let dtype = hidden_states.dtype();
        let rope = self.rope.cos_sin(fo, ho, wo, device)?;
        let mut x = self.patchify(hidden_states)?;

        let dim = c.inner_dim();
        let (temb, tproj) = match timestep {
            Timesteps::PerItem(ts) => self.time_embedding(ts, dtype, device)?,
            Timesteps::PerToken(ts) => {
                // embed each distinct value once, then give every token its row:
                // temb [B, L, dim], tproj [B, L, 6, dim]
                let mut distinct: Vec<f32> = Vec::new();
                let mut index = Vec::with_capacity(ts.len());
                for &v in ts {
                    let i = match distinct.iter().position(|&d| d.to_bits() == v.to_bits()) {
                        Some(i) => i,
                        None => {
                            distinct.push(v);
                            distinct.len() - 1
                        }
                    };
                    index.push(i as u32);
                }
                let (temb_u, tproj_u) = self.time_embedding(&distinct, dtype, device)?;
                let index = Tensor::from_vec(index, ts.len(), device)?;
                (
                    temb_u.index_select(&index, 0)?.reshape((b, seq, dim))?,
                    tproj_u
                        .reshape((distinct.len(), 6 * dim))?
                        .index_select(&index, 0)?
                        .reshape((b, seq, 6, dim))?,
                )
            }
        };

        for block in &self.blocks {
            x = block.forward(&x, context, &tproj, &rope, self.budget)?;
        }

        // per item: [1, 2, dim] + [B, 1, dim]; per token: [1, 1, 2, dim] + [B, L, 1, dim]
        let table = self.scale_shift_table.to_dtype(DType::F32)?;
        let temb = temb.to_dtype(DType::F32)?;
        let (shift, scale) = if temb.rank() == 3 {
            let m = table.unsqueeze(0)?.broadcast_add(&temb.unsqueeze(2)?)?;
            (
                m.narrow(2, 0, 1)?.squeeze(2)?,
                m.narrow(2, 1, 1)?.squeeze(2)?,
            )
        } else {
            let m = table.broadcast_add(&temb.unsqueeze(1)?)?;
            (m.narrow(1, 0, 1)?, m.narrow(1, 1, 1)?)
        };
        let x = layer_norm(&x.to_dtype(DType::F32)?, None, None, c.eps)?
            .broadcast_mul(&(scale + 1.0)?)?
            .broadcast_add(&shift)?
            .to_dtype(dtype)?;
        let x = self.proj_out.forward(&x)?;
        let co = c.out_channels();
        // [B, F', H', W', pt, ph, pw, C] -> [B, C, F', pt, H', ph, W', pw]
        let x = x
            .reshape(vec![b, fo, ho, wo, pt, ph, pw, co])?
            .permute(vec![0, 7, 1, 4, 2, 5, 3, 6])?
            .contiguous()?
            .reshape((b, co, f, h, w))?;
        Ok(x)
    }
}
