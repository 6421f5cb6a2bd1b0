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
    let whole = model
        .forward(&f["hidden_states"], &t, &f["encoder_hidden_states"])
        .unwrap();
    // a budget of one score row per chunk
    model.budget.score_bytes = 1;
    let chunked = model
        .forward(&f["hidden_states"], &t, &f["encoder_hidden_states"])
        .unwrap();
    assert_close("chunked vs whole attention", &chunked, &whole);
}
