//! The Rust weight generator reproduces the Python fixture script's weights bit for bit
//! (the tiny config ships both the safetensors and the manifest).

use std::path::Path;

use candle_core::Device;

#[test]
fn manifest_regenerates_shipped_weights_exactly() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/wan/fixtures/tiny/model");
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-weights-check");
    std::fs::create_dir_all(&out_dir).unwrap();
    for comp in ["text_encoder", "transformer", "vae"] {
        let dir = model.join(comp);
        let out = out_dir.join(format!("{comp}.safetensors"));
        kinema_diffusion::tiny::materialize(&dir.join("weights.json"), &out).unwrap();
        let regenerated = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
        let mut shipped = std::collections::HashMap::new();
        for f in kinema_diffusion::weights::safetensors_files(&dir).unwrap() {
            shipped.extend(candle_core::safetensors::load(&f, &Device::Cpu).unwrap());
        }
        // the manifest also lists tied aliases (umT5's encoder.embed_tokens = shared)
        assert!(regenerated.len() >= shipped.len(), "{comp}: tensor count");
        for (name, want) in &shipped {
            let got = regenerated
                .get(name)
                .unwrap_or_else(|| panic!("{comp}.{name} missing from the manifest"));
            assert_eq!(got.dims(), want.dims(), "{comp}.{name}");
            let a = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{comp}.{name} differs"
            );
        }
    }
}
