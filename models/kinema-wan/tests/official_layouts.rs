//! The official Wan Diffusers repositories, laid out as the Hugging Face cache holds
//! them, checked against kinema-wan's loader: every shard and index, every tensor name
//! and shape of each component (tests/wan/fixtures/official, written by
//! tests/wan/make_official_layouts.py from the diffusers/transformers classes and the
//! published configs). The shards are sparse files whose headers are the published
//! ones; the components are built through a header-only `VarBuilder`, so a 14B model
//! checks in milliseconds and reads no weight.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::DType;
use candle_nn::VarBuilder;
use kinema_diffusion::layout_check::{layout_var_builder, LayoutRecord};
use kinema_diffusion::weights::resolve_in_hub_cache;
use kinema_wan::clip_vision::{ClipVisionConfig, ClipVisionModel};
use kinema_wan::info::WanModelInfo;
use kinema_wan::text_encoder::{Umt5Config, Umt5Encoder};
use kinema_wan::transformer::{WanTransformer3DModel, WanTransformerConfig};
use kinema_wan::vae::{AutoencoderKLWan, WanVaeConfig};
use serde::Deserialize;

#[derive(Deserialize)]
struct Component {
    folder: String,
    config: serde_json::Value,
    files: BTreeMap<String, Vec<String>>,
    tensors: BTreeMap<String, (Vec<usize>, String)>,
}

#[derive(Deserialize)]
struct Repo {
    model_index: serde_json::Map<String, serde_json::Value>,
    components: BTreeMap<String, String>,
}

const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";

fn official() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/wan/fixtures/official")
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dtype_size(name: &str) -> u64 {
    match name {
        "F32" => 4,
        "BF16" | "F16" => 2,
        other => panic!("dtype {other}"),
    }
}

/// A safetensors file with the real header and a sparse data section.
fn write_sparse_safetensors(path: &Path, names: &[String], c: &Component) {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for name in names {
        let (shape, dtype) = &c.tensors[name];
        let bytes = shape.iter().map(|d| *d as u64).product::<u64>() * dtype_size(dtype);
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut text = serde_json::to_vec(&header).expect("header");
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut f = std::fs::File::create(path).expect("create shard");
    f.write_all(&(text.len() as u64).to_le_bytes())
        .expect("write");
    f.write_all(&text).expect("write");
    f.set_len(8 + text.len() as u64 + offset).expect("set_len");
}

fn write_component(dir: &Path, c: &Component) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("config.json"), c.config.to_string()).expect("config");
    let mut weight_map = serde_json::Map::new();
    for (file, names) in &c.files {
        write_sparse_safetensors(&dir.join(file), names, c);
        for n in names {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    if c.files.len() > 1 {
        let stem = if c.folder.ends_with("_encoder") {
            "model"
        } else {
            "diffusion_pytorch_model"
        };
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(
            dir.join(format!("{stem}.safetensors.index.json")),
            index.to_string(),
        )
        .expect("index");
    }
}

const SCHEDULER: &str = r#"{"_class_name": "UniPCMultistepScheduler", "num_train_timesteps": 1000,
 "solver_order": 2, "prediction_type": "flow_prediction", "use_flow_sigmas": true,
 "flow_shift": 3.0, "predict_x0": true, "solver_type": "bh2", "lower_order_final": true,
 "timestep_spacing": "linspace", "final_sigmas_type": "zero", "disable_corrector": []}"#;

/// The repo as `huggingface-cli download` leaves it in `cache`; returns the snapshot.
fn write_repo(cache: &Path, id: &str, repo: &Repo, components: &BTreeMap<String, Component>) {
    let (org, name) = id.split_once('/').expect("org/name");
    let root = cache.join(format!("models--{org}--{name}"));
    let snap = root.join("snapshots").join(REVISION);
    for (folder, component) in &repo.components {
        write_component(&snap.join(folder), &components[component]);
    }
    std::fs::create_dir_all(snap.join("scheduler")).expect("mkdir");
    std::fs::write(snap.join("scheduler/scheduler_config.json"), SCHEDULER).expect("sched");
    std::fs::write(
        snap.join("model_index.json"),
        serde_json::Value::Object(repo.model_index.clone()).to_string(),
    )
    .expect("model_index");
    std::fs::create_dir_all(root.join("refs")).expect("mkdir");
    std::fs::write(root.join("refs/main"), REVISION).expect("ref");
}

/// Builds one component of the snapshot through the header-only loader; the names
/// the model never asked for.
fn check_component(kind: &str, dir: &Path) -> Vec<String> {
    let (vb, record): (VarBuilder, std::sync::Arc<LayoutRecord>) =
        layout_var_builder(dir, DType::BF16).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let built = match kind {
        "umt5-xxl" => Umt5Config::from_dir(dir)
            .and_then(|c| Umt5Encoder::new(c, vb))
            .map(drop),
        "wan21-vae" | "wan22-vae" => WanVaeConfig::from_dir(dir)
            .and_then(|c| AutoencoderKLWan::new(c, vb))
            .map(drop),
        // the published checkpoints keep the tower under `vision_model.`
        "clip-vit-h-14" => ClipVisionConfig::from_dir(dir)
            .and_then(|c| ClipVisionModel::new(c, vb.pp("vision_model")))
            .map(drop),
        k if k.starts_with("wan21-") || k.starts_with("wan22-") => {
            WanTransformerConfig::from_dir(dir)
                .and_then(|c| WanTransformer3DModel::new(c, vb))
                .map(drop)
        }
        other => panic!("no loader is checked for component {other}"),
    };
    built.unwrap_or_else(|e| panic!("{kind} from {}: {e}", dir.display()));
    record.unused()
}

/// The tensors (name prefixes) a component may leave unread.
fn allowed_unused(kind: &str) -> &'static [&'static str] {
    match kind {
        // the pipeline takes hidden_states[-2]: the last layer, the final norm and the
        // projection are never used
        "clip-vit-h-14" => &[
            "vision_model.encoder.layers.31.",
            "vision_model.post_layernorm.",
            "visual_projection.",
        ],
        _ => &[],
    }
}

#[test]
fn every_official_repo_loads_from_the_hub_cache_layout() {
    let repos: BTreeMap<String, Repo> = read_json(&official().join("repos.json"));
    let mut components = BTreeMap::new();
    for repo in repos.values() {
        for name in repo.components.values() {
            components.entry(name.clone()).or_insert_with(|| {
                read_json::<Component>(&official().join(format!("components/{name}.json")))
            });
        }
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("official-hub-cache");
    let _ = std::fs::remove_dir_all(&cache);
    for (id, repo) in &repos {
        write_repo(&cache, id, repo, &components);
        let snap = resolve_in_hub_cache(&cache, id, "main").expect("resolves offline");
        for (folder, kind) in &repo.components {
            let unused = check_component(kind, &snap.join(folder));
            let allowed = allowed_unused(kind);
            let unexpected: Vec<_> = unused
                .iter()
                .filter(|n| !allowed.iter().any(|a| n.starts_with(a)))
                .collect();
            assert!(
                unexpected.is_empty(),
                "{id} {folder}: tensors never loaded: {unexpected:?}"
            );
        }
        let info = WanModelInfo::inspect(&snap).unwrap_or_else(|e| panic!("{id}: {e}"));
        let published: u64 = repo
            .components
            .values()
            .map(|c| {
                components[c]
                    .tensors
                    .values()
                    .map(|(s, _)| s.iter().product::<usize>() as u64)
                    .sum::<u64>()
            })
            .sum();
        assert_eq!(
            info.params.total(),
            published,
            "{id}: parameter count from the headers"
        );
        let estimate = info.memory_estimate(DType::BF16, 832, 480, 81);
        let memory = estimate.total();
        let offloaded = estimate.total_with_text_encoder_offloaded();
        assert!(
            offloaded < memory,
            "{id}: offloading the text encoder frees memory"
        );
        assert!(
            memory > info.params.total() * 2,
            "{id}: memory {memory} below its bf16 weights"
        );
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        eprintln!(
            "{id}: {} parameters, {:.1} GiB at 832x480x81 bf16 ({:.1} GiB with the text encoder offloaded; {:.1} / {:.1} GiB at 1280x720x81)",
            info.params.total(),
            gib(memory),
            gib(offloaded),
            gib(info.memory_estimate(DType::BF16, 1280, 720, 81).total()),
            gib(info.memory_estimate(DType::BF16, 1280, 720, 81).total_with_text_encoder_offloaded()),
        );
    }
    let _ = std::fs::remove_dir_all(&cache);
}
