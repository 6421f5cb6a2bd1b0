//! transformers' `CLIPVisionModel` as the Wan image-to-video pipeline uses it: patch
//! embedding with a class token and learnt positions, `pre_layrnorm`, pre-norm encoder
//! layers (`self_attn`, `mlp` with the config's activation), returning the penultimate
//! hidden states (`hidden_states[-2]`, what `WanImageToVideoPipeline.encode_image`
//! takes). The last layer and `post_layernorm` are never run, so they are not loaded.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use kinema_diffusion::activation::gelu_tanh;
use kinema_diffusion::attention::{attention, AttentionBudget};
use kinema_diffusion::norm::layer_norm;
use kinema_diffusion::weights::{component_var_builder, read_json};

use crate::error::{Result, WanError};

/// `CLIPVisionConfig` (the keys the vision tower needs; a full `CLIPConfig` keeps them
/// under `vision_config`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_channels() -> usize {
    3
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    QuickGelu,
    Gelu,
    GeluTanh,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            _ => None,
        }
    }

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            // x * sigmoid(1.702 x)
            Self::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            Self::Gelu => x.gelu_erf()?,
            Self::GeluTanh => gelu_tanh(x)?,
        })
    }
}

impl ClipVisionConfig {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Wrapped {
            vision_config: ClipVisionConfig,
        }
        let path = dir.join("config.json");
        let value: serde_json::Value = read_json(&path)?;
        let parsed: std::result::Result<Self, serde_json::Error> =
            if value.get("vision_config").is_some() {
                serde_json::from_value::<Wrapped>(value).map(|w| w.vision_config)
            } else {
                serde_json::from_value(value)
            };
        let config = parsed.map_err(|e| WanError::Config {
            what: format!("image encoder ({})", path.display()),
            message: e.to_string(),
        })?;
        let bad = |message: String| WanError::Config {
            what: "image encoder".into(),
            message,
        };
        if Activation::parse(&config.hidden_act).is_none() {
            return Err(bad(format!("hidden_act {:?}", config.hidden_act)));
        }
        if config.patch_size == 0
            || config.num_attention_heads == 0
            || config.hidden_size % config.num_attention_heads != 0
        {
            return Err(bad("zero patch size or heads not dividing the width".into()));
        }
        if config.num_hidden_layers < 2 {
            return Err(bad("the penultimate hidden state needs two layers".into()));
        }
        Ok(config)
    }

    pub fn num_positions(&self) -> usize {
        (self.image_size / self.patch_size).pow(2) + 1
    }
}

fn linear(vb: VarBuilder, i: usize, o: usize) -> Result<Linear> {
    Ok(candle_nn::linear(i, o, vb)?)
}

#[derive(Debug, Clone)]
struct ClipEncoderLayer {
    layer_norm1: (Tensor, Tensor),
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: (Tensor, Tensor),
    fc1: Linear,
    fc2: Linear,
}

impl ClipEncoderLayer {
    fn new(vb: VarBuilder, c: &ClipVisionConfig) -> Result<Self> {
        let d = c.hidden_size;
        let norm = |name: &str| -> Result<(Tensor, Tensor)> {
            let n = vb.pp(name);
            Ok((n.get(d, "weight")?, n.get(d, "bias")?))
        };
        let attn = vb.pp("self_attn");
        Ok(Self {
            layer_norm1: norm("layer_norm1")?,
            q_proj: linear(attn.pp("q_proj"), d, d)?,
            k_proj: linear(attn.pp("k_proj"), d, d)?,
            v_proj: linear(attn.pp("v_proj"), d, d)?,
            out_proj: linear(attn.pp("out_proj"), d, d)?,
            layer_norm2: norm("layer_norm2")?,
            fc1: linear(vb.pp("mlp").pp("fc1"), d, c.intermediate_size)?,
            fc2: linear(vb.pp("mlp").pp("fc2"), c.intermediate_size, d)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        heads: usize,
        eps: f64,
        act: Activation,
        budget: AttentionBudget,
    ) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let hd = d / heads;
        let h = layer_norm(x, Some(&self.layer_norm1.0), Some(&self.layer_norm1.1), eps)?;
        let split = |t: Tensor| t.reshape((b, l, heads, hd))?.transpose(1, 2);
        let q = split(self.q_proj.forward(&h)?)?;
        let k = split(self.k_proj.forward(&h)?)?;
        let v = split(self.v_proj.forward(&h)?)?;
        let o = attention(&q, &k, &v, None, 1.0 / (hd as f64).sqrt(), budget)?;
        let o = o.transpose(1, 2)?.reshape((b, l, d))?;
        let x = (x + self.out_proj.forward(&o)?)?;
        let h = layer_norm(
            &x,
            Some(&self.layer_norm2.0),
            Some(&self.layer_norm2.1),
            eps,
        )?;
        let h = self.fc2.forward(&act.apply(&self.fc1.forward(&h)?)?)?;
        Ok((x + h)?)
    }
}

/// The vision tower of `CLIPVisionModel` (weights under `vision_model.`, or at the root
/// as transformers 5 saves them), up to the penultimate layer.
#[derive(Debug, Clone)]
pub struct ClipVisionModel {
    pub config: ClipVisionConfig,
    class_embedding: Tensor,
    patch_weight: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: (Tensor, Tensor),
    layers: Vec<ClipEncoderLayer>,
    act: Activation,
    pub budget: AttentionBudget,
}

impl ClipVisionModel {
    /// An `image_encoder/` folder (config.json + safetensors, sharded or not).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = ClipVisionConfig::from_dir(dir)?;
        let vb = component_var_builder(dir, dtype, device)?;
        // checkpoints written by transformers < 5 (the published Wan ones) keep the
        // tower under `vision_model.`; transformers 5 writes it at the root
        let vb = if vb.contains_tensor("vision_model.embeddings.class_embedding") {
            vb.pp("vision_model")
        } else {
            vb
        };
        Self::new(config, vb)
    }

    /// `vb` at the tower (`vision_model`, or the root).
    pub fn new(config: ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let c = &config;
        let d = c.hidden_size;
        let emb = vb.pp("embeddings");
        let pre = vb.pp("pre_layrnorm");
        // hidden_states[-2]: the output of layer n - 2 (0-based), the last one is unused
        let layers = (0..c.num_hidden_layers - 1)
            .map(|i| ClipEncoderLayer::new(vb.pp("encoder").pp("layers").pp(i), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            class_embedding: emb.get(d, "class_embedding")?,
            patch_weight: emb
                .pp("patch_embedding")
                .get((d, c.num_channels, c.patch_size, c.patch_size), "weight")?,
            position_embedding: emb
                .pp("position_embedding")
                .get((c.num_positions(), d), "weight")?,
            pre_layrnorm: (pre.get(d, "weight")?, pre.get(d, "bias")?),
            layers,
            act: Activation::parse(&c.hidden_act).ok_or_else(|| WanError::Config {
                what: "image encoder".into(),
                message: format!("hidden_act {:?}", c.hidden_act),
            })?,
            budget: AttentionBudget::for_device(vb.device()),
            config,
        })
    }

    /// `CLIPVisionEmbeddings`: `[B, C, S, S]` -> `[B, 1 + (S/p)^2, d]` (class token
    /// first, then patches row-major, plus the position embeddings).
    pub fn embeddings(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (b, ch, h, w) = pixel_values.dims4()?;
        if ch != c.num_channels || h != c.image_size || w != c.image_size {
            return Err(WanError::Input(format!(
                "pixel values {ch}x{h}x{w}, the image encoder takes {}x{}x{}",
                c.num_channels, c.image_size, c.image_size
            )));
        }
        let p = c.patch_size;
        let (gh, gw) = (h / p, w / p);
        let d = c.hidden_size;
        // the stride-p, bias-free conv2d as a linear map over patches
        let x = pixel_values
            .to_dtype(self.patch_weight.dtype())?
            .reshape((b, ch, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, gh * gw, ch * p * p))?;
        let wt = self.patch_weight.reshape((d, ch * p * p))?;
        let patches = x.broadcast_matmul(&wt.t()?)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?
            .contiguous()?;
        let e = Tensor::cat(&[cls, patches], 1)?;
        Ok(e.broadcast_add(&self.position_embedding.unsqueeze(0)?)?)
    }

    /// `hidden_states[-2]` of `CLIPVisionModel(pixel_values, output_hidden_states=True)`:
    /// `[B, 1 + (S/p)^2, d]`.
    pub fn penultimate_hidden_states(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let e = self.embeddings(pixel_values)?;
        let mut x = layer_norm(
            &e,
            Some(&self.pre_layrnorm.0),
            Some(&self.pre_layrnorm.1),
            c.layer_norm_eps,
        )?;
        for layer in &self.layers {
            x = layer.forward(
                &x,
                c.num_attention_heads,
                c.layer_norm_eps,
                self.act,
                self.budget,
            )?;
        }
        Ok(x)
    }
}
