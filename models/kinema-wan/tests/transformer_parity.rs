//! One WanTransformer3DModel forward against diffusers.

mod common;

use candle_core::{DType, Device};
use common::{assert_close, load, model_dir, CONFIGS};
use kinema_wan::transformer::WanTransformer3DModel;

#[test]
fn transformer_forward_matches_reference() {
    for config in CONFIGS {
        let f = load(config, "transformer.safetensors");
        let model = WanTransformer3DModel::load(
            &model_dir(config).join("transformer"),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let t: Vec<f32> = f["timestep"]
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect();
        let got = model
            .forward(&f["hidden_states"], &t, &f["encoder_hidden_states"])
            .unwrap();
        assert_close(&format!("{config} transformer output"), &got, &f["output"]);
    }
}

#[test]
fn chunked_attention_gives_the_same_forward() {
    let config = "tiny";
    let f = load(config, "transformer.safetensors");
    let mut model = WanTransformer3DModel::load(
        &model_dir(config).join("transformer"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let t = [f["timestep"].to_vec1::<i64>().unwrap()[0] as f32];
    // on CPU: the blockwise (flash) path, which ignores the budget
    let flash = model
        .forward(&f["hidden_states"], &t, &f["encoder_hidden_states"])
        .unwrap();
    // a budget of 0: the materialised scores, one query row per chunk
    model.budget.score_bytes = 0;
    let chunked = model
        .forward(&f["hidden_states"], &t, &f["encoder_hidden_states"])
        .unwrap();
    assert_close("chunked vs blockwise attention", &chunked, &flash);
    assert_close("chunked attention vs reference", &chunked, &f["output"]);
}
