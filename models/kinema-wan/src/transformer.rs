//! `WanTransformer3DModel`: patch embedding, 3D RoPE, time and text embeddings, blocks of
//! (modulated self-attention with QK RMS norm across heads and RoPE, cross-attention
//! to the text, modulated FFN), output norm, projection and unpatchify.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use kinema_diffusion::activation::gelu_tanh;
use kinema_diffusion::attention::{attention, AttentionBudget};
use kinema_diffusion::norm::{layer_norm, modulated_layer_norm, rms_norm};
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
        if let Some(d) = c.added_kv_proj_dim {
            if d != c.inner_dim() {
                return Err(bad(
                    "added_kv_proj_dim must equal the inner dim (the image embedder's width)",
                ));
            }
        }
        if c.image_dim.is_some() != c.added_kv_proj_dim.is_some() {
            return Err(bad(
                "image_dim and added_kv_proj_dim come together (image-to-video)",
            ));
        }
        if c.pos_embed_seq_len.is_some() && c.image_dim.is_none() {
            return Err(bad("pos_embed_seq_len without image_dim"));
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
    /// Image-to-video cross-attention: `add_k_proj`, `add_v_proj`, `norm_added_k`.
    added_kv: Option<AddedKv>,
    heads: usize,
    eps: f64,
}

/// The image keys and values of an I2V cross-attention (`add_k_proj`, `add_v_proj`,
/// RMS `norm_added_k` across heads).
#[derive(Debug, Clone)]
struct AddedKv {
    add_k_proj: Linear,
    add_v_proj: Linear,
    norm_added_k: Tensor,
}

impl WanAttention {
    fn new(
        vb: VarBuilder,
        dim: usize,
        heads: usize,
        eps: f64,
        added_kv_proj_dim: Option<usize>,
    ) -> Result<Self> {
        let added_kv = match added_kv_proj_dim {
            Some(d) => Some(AddedKv {
                add_k_proj: linear(vb.pp("add_k_proj"), d, dim)?,
                add_v_proj: linear(vb.pp("add_v_proj"), d, dim)?,
                norm_added_k: vb.pp("norm_added_k").get(dim, "weight")?,
            }),
            None => None,
        };
        Ok(Self {
            added_kv,
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
    /// self-attention; `context_img` (embedded image tokens) for an I2V cross-attention,
    /// attended separately and added to the text attention.
    fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        context_img: Option<&Tensor>,
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
        let scale = 1.0 / (hd as f64).sqrt();
        let mut o = attention(&q, &k, &v, None, scale, budget)?;
        match (&self.added_kv, context_img) {
            (Some(added), Some(img)) => {
                let li = img.dim(1)?;
                let k_img = rms_norm(
                    &added.add_k_proj.forward(img)?,
                    &added.norm_added_k,
                    self.eps,
                )?;
                let v_img = added.add_v_proj.forward(img)?;
                let o_img = attention(
                    &q,
                    &split(k_img, li)?,
                    &split(v_img, li)?,
                    None,
                    scale,
                    budget,
                )?;
                o = (o + o_img)?;
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(WanError::Input(
                    "an image-to-video transformer needs image embeddings".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(WanError::Input(
                    "image embeddings given to a transformer without image cross-attention".into(),
                ))
            }
        }
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
            attn1: WanAttention::new(vb.pp("attn1"), dim, c.num_attention_heads, c.eps, None)?,
            attn2: WanAttention::new(
                vb.pp("attn2"),
                dim,
                c.num_attention_heads,
                c.eps,
                c.added_kv_proj_dim,
            )?,
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
        self.forward_with_image(x, context, None, temb, rope, budget)
    }

    /// As [`Self::forward`], with the embedded image tokens of an image-to-video model
    /// (`[B, L_img, dim]`, the part diffusers concatenates before the text).
    pub fn forward_with_image(
        &self,
        x: &Tensor,
        context: &Tensor,
        context_img: Option<&Tensor>,
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
        let h = modulated_layer_norm(&xf, &shift, &scale, self.eps, dtype)?;
        let a = self.attn1.forward(&h, None, None, Some(rope), budget)?;
        let x = (xf + a.to_dtype(DType::F32)?.broadcast_mul(&gate)?)?.to_dtype(dtype)?;

        // 2. cross-attention (no gate)
        let h = match &self.norm2 {
            Some((w, b)) => {
                layer_norm(&x.to_dtype(DType::F32)?, Some(w), Some(b), self.eps)?.to_dtype(dtype)?
            }
            None => x.clone(),
        };
        let a = self
            .attn2
            .forward(&h, Some(context), context_img, None, budget)?;
        let x = (x + a)?;

        // 3. feed-forward
        let xf = x.to_dtype(DType::F32)?;
        let h = modulated_layer_norm(&xf, &c_shift, &c_scale, self.eps, dtype)?;
        let f = self
            .ffn_out
            .forward(&gelu_tanh(&self.ffn_in.forward(&h)?)?)?;
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

/// `WanImageEmbedding`: the image encoder's tokens -> the transformer width
/// (`norm1` FP32 LayerNorm, `ff` FeedForward with exact GELU, `norm2`), with a learnt
/// `pos_embed` over the first and last frames' tokens (FLF2V) when configured.
#[derive(Debug, Clone)]
pub struct WanImageEmbedding {
    norm1: (Tensor, Tensor),
    ff_in: Linear,
    ff_out: Linear,
    norm2: (Tensor, Tensor),
    pos_embed: Option<Tensor>,
}

/// `FP32LayerNorm`'s default epsilon (torch's `nn.LayerNorm`).
const IMAGE_EMBED_EPS: f64 = 1e-5;

impl WanImageEmbedding {
    fn new(
        vb: VarBuilder,
        in_features: usize,
        out_features: usize,
        pos: Option<usize>,
    ) -> Result<Self> {
        let norm = |name: &str, d: usize| -> Result<(Tensor, Tensor)> {
            let n = vb.pp(name);
            Ok((n.get(d, "weight")?, n.get(d, "bias")?))
        };
        Ok(Self {
            norm1: norm("norm1", in_features)?,
            ff_in: linear(
                vb.pp("ff").pp("net").pp(0).pp("proj"),
                in_features,
                in_features,
            )?,
            ff_out: linear(vb.pp("ff").pp("net").pp(2), in_features, out_features)?,
            norm2: norm("norm2", out_features)?,
            pos_embed: match pos {
                Some(l) => Some(vb.get((1, l, in_features), "pos_embed")?),
                None => None,
            },
        })
    }

    /// `[B, L, image_dim]` -> `[B', L', dim]`; with `pos_embed` (length P) the tokens are
    /// regrouped into rows of P first (`view(-1, 2 * L, D)`: the first and last frames'
    /// tokens of one video side by side).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        if let Some(pos) = &self.pos_embed {
            let (b, l, d) = x.dims3()?;
            let p = pos.dim(1)?;
            if (b * l) % p != 0 {
                return Err(WanError::Input(format!(
                    "{b} x {l} image tokens do not fill rows of pos_embed_seq_len {p}"
                )));
            }
            x = x
                .reshape(((b * l) / p, p, d))?
                .broadcast_add(&pos.to_dtype(x.dtype())?)?;
        }
        let h = layer_norm(
            &x,
            Some(&self.norm1.0),
            Some(&self.norm1.1),
            IMAGE_EMBED_EPS,
        )?;
        let h = self.ff_out.forward(&self.ff_in.forward(&h)?.gelu_erf()?)?;
        Ok(layer_norm(
            &h,
            Some(&self.norm2.0),
            Some(&self.norm2.1),
            IMAGE_EMBED_EPS,
        )?)
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
    image_embedder: Option<WanImageEmbedding>,
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
            image_embedder: match c.image_dim {
                Some(d) => Some(WanImageEmbedding::new(
                    ce.pp("image_embedder"),
                    d,
                    dim,
                    c.pos_embed_seq_len,
                )?),
                None => None,
            },
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
        let h = gelu_tanh(&self.text_linear_1.forward(encoder_hidden_states)?)?;
        Ok(self.text_linear_2.forward(&h)?)
    }

    /// Embeds the image encoder's states (`[B, L_img, image_dim]`, the CLIP penultimate
    /// hidden states) once: `condition_embedder.image_embedder`. An error for a
    /// text-to-video transformer.
    pub fn embed_image(&self, encoder_hidden_states_image: &Tensor) -> Result<Tensor> {
        match &self.image_embedder {
            Some(e) => e.forward(encoder_hidden_states_image),
            None => Err(WanError::Input(
                "image embeddings given to a transformer without an image embedder".into(),
            )),
        }
    }

    /// Whether this transformer takes image embeddings (`image_dim` set).
    pub fn has_image_embedder(&self) -> bool {
        self.image_embedder.is_some()
    }

    /// As diffusers' forward with `encoder_hidden_states_image`
    /// (`[B, L_img, image_dim]`, or `None` for models without an image embedder).
    pub fn forward_with_image(
        &self,
        hidden_states: &Tensor,
        timestep: &[f32],
        encoder_hidden_states: &Tensor,
        encoder_hidden_states_image: Option<&Tensor>,
    ) -> Result<Tensor> {
        let context = self.embed_text(encoder_hidden_states)?;
        let image = match encoder_hidden_states_image {
            Some(i) => Some(self.embed_image(i)?),
            None => None,
        };
        self.forward_with_contexts(hidden_states, timestep, &context, image.as_ref())
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
        self.forward_timesteps(hidden_states, Timesteps::PerItem(timestep), context, None)
    }

    /// As [`Self::forward_with_context`] plus the image tokens already through
    /// [`Self::embed_image`] (`[B, L_img, dim]`), for image-to-video transformers.
    pub fn forward_with_contexts(
        &self,
        hidden_states: &Tensor,
        timestep: &[f32],
        context: &Tensor,
        context_img: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_timesteps(
            hidden_states,
            Timesteps::PerItem(timestep),
            context,
            context_img,
        )
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
        context_img: Option<&Tensor>,
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
        let rope = self.rope.cos_sin_cached(fo, ho, wo, device, dtype)?;
        let mut x = self.patchify(hidden_states)?;

        let dim = c.inner_dim();
        let (temb, tproj) = match timestep {
            // every item at the same timestep (guidance's two halves, most batches): one
            // row of modulation for all, which the norms fold into their fused kernel
            Timesteps::PerItem(ts)
                if !ts.is_empty() && ts.iter().all(|t| t.to_bits() == ts[0].to_bits()) =>
            {
                self.time_embedding(&ts[..1], dtype, device)?
            }
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
            x = block.forward_with_image(&x, context, context_img, &tproj, &rope, self.budget)?;
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
        let x = modulated_layer_norm(&x, &shift, &scale, c.eps, dtype)?;
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
