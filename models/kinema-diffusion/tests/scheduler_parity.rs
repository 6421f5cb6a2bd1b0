//! UniPC (orders 2 and 3) and flow-match Euler against diffusers, step by step on
//! given model outputs (`tests/wan/fixtures/schedulers.*`).

use std::path::Path;

use candle_core::Device;
use kinema_diffusion::scheduler::SchedulerConfig;

#[test]
fn schedulers_match_reference() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/wan/fixtures");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("schedulers.json")).unwrap())
            .unwrap();
    let t =
        candle_core::safetensors::load(dir.join("schedulers.safetensors"), &Device::Cpu).unwrap();
    let cases = cases.as_object().unwrap();
    assert!(cases.len() >= 4);
    for (name, case) in cases {
        let mut cfg = case["config"].clone();
        let class = match case["kind"].as_str().unwrap() {
            "unipc" => "UniPCMultistepScheduler",
            _ => "FlowMatchEulerDiscreteScheduler",
        };
        cfg["_class_name"] = class.into();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let config = SchedulerConfig::from_json(&cfg.to_string()).unwrap();
        let mut s = config.build(steps).unwrap();
        let want_t = t[&format!("{name}.timesteps")].to_vec1::<f32>().unwrap();
        assert_eq!(s.timesteps(), want_t, "{name}: timesteps");
        let want_s = t[&format!("{name}.sigmas")].to_vec1::<f32>().unwrap();
        assert_eq!(s.sigmas(), want_s.as_slice(), "{name}: sigmas");
        let mut sample = t[&format!("{name}.sample_0")].clone();
        for i in 0..steps {
            let out = &t[&format!("{name}.model_output_{i}")];
            sample = s.step(out, &sample).unwrap();
            let want = &t[&format!("{name}.sample_{}", i + 1)];
            let d = kinema_diffusion::tiny::max_abs_diff(&sample, want).unwrap();
            eprintln!("{name} step {i}: max abs diff {d:.3e}");
            assert!(d <= 1e-5, "{name} step {i}: max abs diff {d}");
        }
    }
}
