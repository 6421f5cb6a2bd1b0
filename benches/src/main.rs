//! `kinema-bench`: real-size benchmarks of Wan 2.1 on CPU, one process per measurement.
//! See `benches/README.md` for the commands and the figures measured.
//!
//! - `prepare`: random weights for the Wan2.1-T2V-1.3B transformer and VAE in the
//!   official Diffusers layout (config.json, sharded safetensors with index).
//! - `block`: one full-width DiT block at the sequence of a real video (480p x 81
//!   frames = 32,760 tokens), attention in bounded query chunks.
//! - `transformer`: loads the whole 30-layer transformer and runs one forward.
//! - `vae`: decodes a real-size video latent chunk by chunk.
//! - `batch`: batched vs sequential denoising (default: the tiny test model).
//! - `parity`: the committed tiny fixtures on a device and dtype against their f32
//!   references (`parity.rs` states the bf16 tolerances and why).
//! - `step`: one guided denoising step through the pipeline's own path, timed.
//! - `attention`: the attention entry point alone at a given shape, TFLOP/s.
//!
//! `--device cuda:N` needs a build with `--features cuda` (`scripts/gpu-check`).
//!
//! Every measurement prints a human line and a `RESULT {json}` line; timing thresholds
//! never go into tests.

mod batch;
mod device;
mod mem;
mod parity;
mod step;
mod weights;

use std::path::PathBuf;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use clap::{Args, Parser, Subcommand};
use kinema_diffusion::attention::AttentionBudget;
use kinema_diffusion::rope::Rope3d;
use kinema_diffusion::tiny::det_values;
use kinema_wan::transformer::{WanTransformer3DModel, WanTransformerBlock, WanTransformerConfig};
use kinema_wan::vae::AutoencoderKLWan;

use crate::mem::{measure, mib};

#[derive(Parser, Debug)]
#[command(
    name = "kinema-bench",
    about = "Real-size Wan 2.1 benchmarks and the GPU check's pieces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone, Copy)]
struct VideoSize {
    #[arg(long, default_value_t = 832)]
    width: usize,
    #[arg(long, default_value_t = 480)]
    height: usize,
    #[arg(long, default_value_t = 81)]
    frames: usize,
}

impl VideoSize {
    /// `(T, h, w)` of the latent: `(F - 1) / 4 + 1`, `H / 8`, `W / 8`.
    fn latent(&self) -> anyhow::Result<(usize, usize, usize)> {
        anyhow::ensure!(
            self.frames >= 1 && (self.frames - 1).is_multiple_of(4),
            "frames must be 4k + 1"
        );
        anyhow::ensure!(
            self.width.is_multiple_of(16) && self.height.is_multiple_of(16),
            "width and height must be multiples of 16"
        );
        Ok(((self.frames - 1) / 4 + 1, self.height / 8, self.width / 8))
    }

    fn describe(&self) -> String {
        format!("{}x{} x {} frames", self.width, self.height, self.frames)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write random weights for the transformer and the VAE (official layout) to --out.
    Prepare {
        #[arg(long)]
        out: PathBuf,
        /// Largest safetensors file, MiB (as save_pretrained's max_shard_size).
        #[arg(long, default_value_t = 2048)]
        shard_mib: u64,
        /// Folder with <component>/{config.json,weights.json}.
        #[arg(long)]
        manifests: Option<PathBuf>,
        /// The transformer's dtype in the files (the VAE stays f32, as Wan keeps it).
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// A small Wan folder whose model_index.json, scheduler, tokenizer and text
        /// encoder are copied, so the result loads as a whole pipeline (`step`).
        #[arg(long)]
        pipeline_from: Option<PathBuf>,
    },
    /// The tiny fixtures on --device in --dtype against diffusers' f32 references.
    Parity {
        /// The folder of fixture cases (default: the source tree's tests/wan/fixtures).
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// Cases, comma-separated.
        #[arg(long, default_value = "tiny")]
        cases: String,
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value = "bf16")]
        dtype: String,
        /// Parts, comma-separated: transformer, vae_decode, pipeline (default: all).
        #[arg(long, default_value = "")]
        parts: String,
    },
    /// Guided denoising steps of --model-dir (a `prepare --pipeline-from` folder).
    Step {
        #[arg(long)]
        model_dir: PathBuf,
        #[command(flatten)]
        size: VideoSize,
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value = "bf16")]
        dtype: String,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value_t = 3)]
        iters: usize,
        #[arg(long, default_value_t = 5.0)]
        guidance: f32,
        /// Save the latents after the first step for gpu_check.py to compare.
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// The attention entry point alone on random q, k, v of [batch, heads, tokens, head_dim].
    Attention {
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value = "bf16")]
        dtype: String,
        #[arg(long, default_value_t = 2)]
        batch: usize,
        #[arg(long, default_value_t = 12)]
        heads: usize,
        #[arg(long, default_value_t = 32760)]
        tokens: usize,
        /// Key/value tokens (default: --tokens, self-attention).
        #[arg(long)]
        kv_tokens: Option<usize>,
        #[arg(long, default_value_t = 128)]
        head_dim: usize,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value_t = 5)]
        iters: usize,
    },
    /// One full-width DiT block (weights of blocks.0) at a real video's sequence.
    Block {
        #[command(flatten)]
        size: VideoSize,
        /// Score-matrix memory per attention chunk, MiB. CPU f32 attention is blockwise
        /// and ignores it, except 0: materialised scores, one query row per chunk.
        #[arg(long)]
        score_mib: Option<usize>,
        /// Save the output (tensor `out`) for a comparison with diffusers.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Compare with diffusers' output (tensor `out`) saved by real_size.py.
        #[arg(long)]
        compare: Option<PathBuf>,
        #[arg(long)]
        manifests: Option<PathBuf>,
    },
    /// Load the whole transformer from --model-dir/transformer and run one forward.
    Transformer {
        #[arg(long)]
        model_dir: PathBuf,
        #[command(flatten)]
        size: VideoSize,
        #[arg(long)]
        score_mib: Option<usize>,
        /// Save the output (tensor `out`) for a comparison with diffusers.
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Decode a latent of the given video size with --model-dir/vae, chunk by chunk.
    Vae {
        #[arg(long)]
        model_dir: PathBuf,
        #[command(flatten)]
        size: VideoSize,
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Save the decoded video (tensor `video`, f32) for gpu_check.py to compare.
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Denoise --batch requests one after another, then as one batch; report the ratio.
    Batch {
        /// A Wan Diffusers folder (default: the tiny test model of tests/wan/fixtures).
        #[arg(long)]
        model_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        #[arg(long, default_value_t = 48)]
        width: u32,
        #[arg(long, default_value_t = 32)]
        height: u32,
        #[arg(long, default_value_t = 5)]
        frames: u32,
        #[arg(long, default_value_t = 10)]
        steps: u32,
        /// Rounds (each runs both ways once).
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
}

pub(crate) fn det(name: &str, shape: &[usize], scale: f64) -> candle_core::Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(det_values(name, n, 0.0, scale), shape, &Device::Cpu)
}

fn stats(t: &Tensor) -> anyhow::Result<String> {
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let finite = v.iter().all(|x| x.is_finite());
    Ok(format!(
        "mean {mean:.6}, std {:.6}, finite {finite}",
        var.max(0.0).sqrt()
    ))
}

fn result(kind: &str, mut fields: serde_json::Value) {
    fields["bench"] = kind.into();
    fields["threads"] = candle_core::utils::get_num_threads().into();
    println!("RESULT {fields}");
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Prepare {
            out,
            shard_mib,
            manifests,
            dtype,
            pipeline_from,
        } => {
            let src = manifests.unwrap_or_else(weights::default_manifest_dir);
            let dtype = device::parse_dtype(&dtype)?;
            let mut written = serde_json::Map::new();
            for (component, dt) in [("transformer", dtype), ("vae", DType::F32)] {
                let (r, phase) = measure(|| {
                    weights::write_component(&src, component, &out, shard_mib << 20, dt)
                });
                let (files, bytes) = r.with_context(|| format!("writing {component}"))?;
                println!(
                    "{component}: {files} file(s), {:.0} MiB of {} in {} ({})",
                    mib(bytes),
                    device::dtype_name(dt),
                    out.join(component).display(),
                    phase.describe()
                );
                written.insert(component.into(), phase.json());
            }
            if let Some(from) = pipeline_from {
                step::copy_pipeline_parts(&from, &out)?;
                println!("pipeline parts from {}", from.display());
            }
            result("prepare", written.into());
        }
        Command::Parity {
            fixtures,
            cases,
            device,
            dtype,
            parts,
        } => {
            let fixtures = parity::fixtures_dir(fixtures);
            let parts: Vec<String> = parts
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            let dev = device::parse_device(&device)?;
            let dtype = device::parse_dtype(&dtype)?;
            let runs: Vec<_> = cases
                .split(',')
                .map(|case| {
                    parity::run(&parity::ParityArgs {
                        fixtures: &fixtures,
                        case,
                        device: &dev,
                        dtype,
                        parts: &parts,
                    })
                })
                .collect();
            let pass = runs.iter().all(|r| r["pass"] == true);
            result(
                "parity",
                serde_json::json!({"device": device, "pass": pass, "cases": runs}),
            );
        }
        Command::Step {
            model_dir,
            size,
            device,
            dtype,
            warmup,
            iters,
            guidance,
            save,
        } => {
            let r = step::run(&step::StepArgs {
                model_dir,
                device: device::parse_device(&device)?,
                dtype: device::parse_dtype(&dtype)?,
                width: size.width as u32,
                height: size.height as u32,
                frames: size.frames as u32,
                warmup,
                iters,
                guidance,
                save,
            })?;
            result("step", r);
        }
        Command::Attention {
            device,
            dtype,
            batch,
            heads,
            tokens,
            kv_tokens,
            head_dim,
            warmup,
            iters,
        } => {
            let r = step::attention_bench(&step::AttnArgs {
                device: device::parse_device(&device)?,
                dtype: device::parse_dtype(&dtype)?,
                batch,
                heads,
                tokens,
                kv_tokens,
                head_dim,
                warmup,
                iters,
            })?;
            result("attention", r);
        }
        Command::Block {
            size,
            score_mib,
            save,
            compare,
            manifests,
        } => bench_block(size, score_mib, save, compare, manifests)?,
        Command::Transformer {
            model_dir,
            size,
            score_mib,
            save,
        } => bench_transformer(&model_dir, size, score_mib, save)?,
        Command::Vae {
            model_dir,
            size,
            device,
            dtype,
            save,
        } => bench_vae(
            &model_dir,
            size,
            &device::parse_device(&device)?,
            device::parse_dtype(&dtype)?,
            save,
        )?,
        Command::Batch {
            model_dir,
            batch,
            width,
            height,
            frames,
            steps,
            repeat,
        } => {
            let model_dir = model_dir.unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/wan/fixtures/tiny/model")
            });
            batch::run(&batch::BatchBench {
                model_dir: &model_dir,
                batch,
                width,
                height,
                frames,
                steps,
                repeat,
            })?
        }
    }
    Ok(())
}

fn budget(score_mib: Option<usize>) -> AttentionBudget {
    match score_mib {
        Some(m) => AttentionBudget {
            score_bytes: m << 20,
        },
        None => AttentionBudget::for_device(&Device::Cpu),
    }
}

fn bench_block(
    size: VideoSize,
    score_mib: Option<usize>,
    save: Option<PathBuf>,
    compare: Option<PathBuf>,
    manifests: Option<PathBuf>,
) -> anyhow::Result<()> {
    let dir = manifests
        .unwrap_or_else(weights::default_manifest_dir)
        .join("transformer");
    let config = WanTransformerConfig::from_dir(&dir)?;
    let manifest = weights::read_manifest(&dir)?;
    let dev = Device::Cpu;
    let (t, h, w) = size.latent()?;
    let [pt, ph, pw] = config.patch_size;
    let (ft, fh, fw) = (t / pt, h / ph, w / pw);
    let seq = ft * fh * fw;
    let dim = config.inner_dim();
    let (setup, phase) = measure(|| -> anyhow::Result<_> {
        let tensors = weights::tensors_with_prefix(&manifest, "blocks.0.")?;
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let block = WanTransformerBlock::new(vb.pp("blocks").pp(0), &config)?;
        let x = det("bench.hidden_states", &[1, seq, dim], 1.0)?;
        let ctx = det("bench.context", &[1, 512, dim], 1.0)?;
        let temb = det("bench.temb", &[1, 6, dim], 0.5)?;
        let rope = Rope3d::new(config.attention_head_dim, config.rope_max_seq_len, 10000.0)
            .cos_sin(ft, fh, fw, &dev)?;
        Ok((block, x, ctx, temb, rope))
    });
    let (block, x, ctx, temb, rope) = setup?;
    println!("setup (weights and inputs): {}", phase.describe());
    let budget = budget(score_mib);
    println!(
        "kinema WanTransformerBlock dim {dim}, {} heads, ffn {}; {} = {seq} tokens; f32 CPU, \
         {} threads; attention {}",
        config.num_attention_heads,
        config.ffn_dim,
        size.describe(),
        candle_core::utils::get_num_threads(),
        if budget.score_bytes == 0 {
            "with materialised scores, one query row per chunk".to_string()
        } else if score_mib.is_some() {
            format!(
                "blockwise (no score matrix; --score-mib {} unused on CPU)",
                budget.score_bytes >> 20
            )
        } else {
            "blockwise (64 queries x 512 keys per step, no score matrix)".to_string()
        }
    );
    let (out, phase) = measure(|| block.forward(&x, &ctx, &temb, &rope, budget));
    let out = out?;
    println!("forward: {}", phase.describe());
    println!("output: {}", stats(&out)?);
    let mut fields = phase.json();
    fields["tokens"] = seq.into();
    if let Some(path) = save {
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("out".to_string(), out.clone())]),
            &path,
        )?;
        println!("saved {}", path.display());
    }
    if let Some(path) = compare {
        let other = candle_core::safetensors::load(&path, &dev)?
            .remove("out")
            .context("no tensor `out`")?;
        let diff = (&out - &other)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        println!("max |kinema - diffusers| = {diff:.3e}");
        fields["max_abs_diff_vs_diffusers"] = diff.into();
    }
    result("block", fields);
    Ok(())
}

fn bench_transformer(
    model_dir: &std::path::Path,
    size: VideoSize,
    score_mib: Option<usize>,
    save: Option<PathBuf>,
) -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let dir = model_dir.join("transformer");
    let (model, load) = measure(|| WanTransformer3DModel::load(&dir, DType::F32, &dev));
    let mut model = model.with_context(|| format!("loading {}", dir.display()))?;
    model.budget = budget(score_mib);
    let c = &model.config;
    println!(
        "kinema WanTransformer3DModel: {} layers, dim {}, {} heads; loaded from {}: {}",
        c.num_layers,
        c.inner_dim(),
        c.num_attention_heads,
        dir.display(),
        load.describe()
    );
    let (t, h, w) = size.latent()?;
    let [pt, ph, pw] = c.patch_size;
    let seq = (t / pt) * (h / ph) * (w / pw);
    let latents = det("bench.latents", &[1, c.in_channels, t, h, w], 3f64.sqrt())?;
    let text = det("bench.text", &[1, 512, c.text_dim], 0.5)?;
    let (out, fwd) = measure(|| model.forward(&latents, &[999.0], &text));
    let out = out?;
    println!(
        "forward at {} ({seq} tokens): {}",
        size.describe(),
        fwd.describe()
    );
    println!("output {:?}: {}", out.dims(), stats(&out)?);
    if let Some(path) = save {
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("out".to_string(), out.clone())]),
            &path,
        )?;
        println!("saved {}", path.display());
    }
    result(
        "transformer",
        serde_json::json!({
            "layers": c.num_layers,
            "tokens": seq,
            "load": load.json(),
            "forward": fwd.json(),
            "process_peak_rss_mib": mib(mem::peak_rss()),
        }),
    );
    Ok(())
}

fn bench_vae(
    model_dir: &std::path::Path,
    size: VideoSize,
    dev: &Device,
    dtype: DType,
    save: Option<PathBuf>,
) -> anyhow::Result<()> {
    let dir = model_dir.join("vae");
    let (vae, load) = measure(|| AutoencoderKLWan::load_decoder(&dir, dtype, dev));
    let vae = vae.with_context(|| format!("loading {}", dir.display()))?;
    println!(
        "kinema AutoencoderKLWan (base {}, mults {:?}) loaded from {}: {}",
        vae.config.base_dim,
        vae.config.dim_mult,
        dir.display(),
        load.describe()
    );
    let (t, h, w) = size.latent()?;
    let z = det(
        "bench.vae_latents",
        &[1, vae.config.z_dim, t, h, w],
        3f64.sqrt(),
    )?;
    let z = vae.denormalize(&z.to_device(dev)?.to_dtype(dtype)?)?;
    let mut saved = Vec::new();
    let mut frames = 0usize;
    let mut chunk_log = Vec::new();
    let mut last = std::time::Instant::now();
    let start_cpu = mem::cpu_seconds();
    device::sync(dev)?;
    let gpu_mem = device::MemSampler::start(dev);
    let (r, phase) = measure(|| {
        vae.decode_chunks(&z, &mut |chunk| {
            dev.synchronize()?;
            let f = chunk.dim(2)?;
            if save.is_some() {
                saved.push(chunk.to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
            }
            frames += f;
            let s = last.elapsed().as_secs_f64();
            last = std::time::Instant::now();
            let rss = mib(mem::rss());
            let peak = mib(mem::peak_rss());
            println!(
                "  chunk {:>2}: {f} frame(s) in {s:7.2} s; {frames:>3} frames so far; RSS {rss:.0} MiB, \
                 peak {peak:.0} MiB, CPU {:.0} s",
                chunk_log.len(),
                mem::cpu_seconds() - start_cpu
            );
            chunk_log.push(serde_json::json!({"frames": f, "wall_s": s, "rss_mib": rss, "peak_rss_mib": peak}));
            Ok(())
        })
    });
    r?;
    let memory = gpu_mem.finish();
    println!(
        "decode of {} ({t} latent frames -> {frames} frames) on {dev:?} in {}: {}; device memory {memory}",
        size.describe(),
        device::dtype_name(dtype),
        phase.describe()
    );
    if let Some(path) = save {
        let video = Tensor::cat(&saved, 2)?;
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("video".to_string(), video)]),
            &path,
        )?;
    }
    result(
        "vae",
        serde_json::json!({
            "impl": "kinema",
            "frames": frames,
            "latent_frames": t,
            "dtype": device::dtype_name(dtype),
            "load": load.json(),
            "decode": phase.json(),
            "decode_s": phase.wall_s,
            "memory": memory,
            "chunks": chunk_log,
        }),
    );
    Ok(())
}
