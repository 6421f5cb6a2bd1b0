//! Batched denoising on the tiny model: each item of a batch (own seed, prompt, negative
//! prompt, guidance) gives the latents and frames of the same request run alone, and
//! cancelling one item stops it at its step while the others still match.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{max_abs_diff, model_dir};
use kinema_diffusion::{
    BatchItem, Conditioning, GenerationRequest, Latents, Pipeline, PipelineError, StepControl,
    VideoFrames,
};
use kinema_wan::pipeline::WanPipeline;

const TOLERANCE: f32 = 1e-4;

fn load() -> WanPipeline {
    WanPipeline::load(&model_dir("tiny"), &Device::Cpu, DType::F32).unwrap()
}

fn requests(steps: u32) -> Vec<GenerationRequest> {
    let base = GenerationRequest {
        prompt: String::new(),
        negative_prompt: String::new(),
        width: 48,
        height: 32,
        num_frames: 5,
        steps,
        guidance_scale: 5.0,
        seed: 0,
        ..Default::default()
    };
    vec![
        GenerationRequest {
            prompt: "A cat walks on the grass, realistic style.".into(),
            negative_prompt: "blurry, low quality".into(),
            seed: 7,
            ..base.clone()
        },
        GenerationRequest {
            prompt: "a red fox in snow".into(),
            // guidance 1: no negative pass for this item
            guidance_scale: 1.0,
            seed: 1234,
            ..base.clone()
        },
        GenerationRequest {
            prompt: "waves breaking on black rocks at dusk".into(),
            negative_prompt: "static, overexposed".into(),
            guidance_scale: 3.5,
            seed: 99,
            ..base
        },
    ]
}

fn tensor(latents: Latents) -> Tensor {
    *latents
        .0
        .downcast::<Tensor>()
        .expect("Wan latents are a Tensor")
}

fn frames_tensor(f: VideoFrames) -> Tensor {
    Tensor::from_vec(f.data, (f.num_frames, f.height, f.width, 3), &Device::Cpu).unwrap()
}

/// Each request denoised alone: latents and decoded frames.
fn solo(pipe: &WanPipeline, reqs: &[GenerationRequest]) -> Vec<(Tensor, Tensor)> {
    reqs.iter()
        .map(|r| {
            let cond = pipe.encode_prompt(r).unwrap();
            let l = tensor(
                pipe.denoise(r, &cond, &mut |_| StepControl::Continue)
                    .unwrap(),
            );
            let f = pipe.decode(r, Latents(Box::new(l.clone()))).unwrap();
            (l, frames_tensor(f))
        })
        .collect()
}

fn encode_all(pipe: &WanPipeline, reqs: &[GenerationRequest]) -> Vec<Conditioning> {
    reqs.iter()
        .map(|r| pipe.encode_prompt(r).unwrap())
        .collect()
}

fn items<'a>(reqs: &'a [GenerationRequest], conds: &'a [Conditioning]) -> Vec<BatchItem<'a>> {
    reqs.iter()
        .zip(conds)
        .map(|(request, conditioning)| BatchItem {
            request,
            conditioning,
        })
        .collect()
}

#[test]
fn batched_items_match_their_solo_runs() {
    let pipe = load();
    assert!(pipe.max_batch() > 1);
    let reqs = requests(3);
    let alone = solo(&pipe, &reqs);
    let conds = encode_all(&pipe, &reqs);
    let mut calls = Vec::new();
    let out = pipe.denoise_batch(&items(&reqs, &conds), &mut |item, p| {
        calls.push((item, p.step, p.total));
        StepControl::Continue
    });
    // every item reports every step, the batch advancing one step at a time
    let want: Vec<(usize, u32, u32)> = (1..=3)
        .flat_map(|step| (0..3).map(move |item| (item, step, 3)))
        .collect();
    assert_eq!(calls, want);
    assert_eq!(out.len(), 3);
    for (i, (r, (want_l, want_f))) in out.into_iter().zip(&alone).enumerate() {
        let l = tensor(r.unwrap());
        let d = max_abs_diff(&l, want_l);
        eprintln!("item {i}: latents max abs diff {d:.3e}");
        assert!(d <= TOLERANCE, "item {i}: latents differ by {d}");
        let f = frames_tensor(pipe.decode(&reqs[i], Latents(Box::new(l))).unwrap());
        let d = max_abs_diff(&f, want_f);
        eprintln!("item {i}: frames max abs diff {d:.3e}");
        assert!(d <= TOLERANCE, "item {i}: frames differ by {d}");
    }
    // the items really differ from one another (seeds, prompts, guidance)
    assert!(max_abs_diff(&alone[0].0, &alone[1].0) > 0.1);
    assert!(max_abs_diff(&alone[0].0, &alone[2].0) > 0.1);
}

#[test]
fn a_cancelled_item_stops_at_its_step_and_the_others_match() {
    let pipe = load();
    let steps = 5;
    let cancel_at = 2;
    let reqs = requests(steps);
    let alone = solo(&pipe, &reqs);
    let conds = encode_all(&pipe, &reqs);
    let mut seen: Vec<Vec<u32>> = vec![Vec::new(); reqs.len()];
    let out = pipe.denoise_batch(&items(&reqs, &conds), &mut |item, p| {
        seen[item].push(p.step);
        if item == 1 && p.step == cancel_at {
            StepControl::Cancel
        } else {
            StepControl::Continue
        }
    });
    assert_eq!(seen[0], (1..=steps).collect::<Vec<_>>());
    assert_eq!(seen[1], (1..=cancel_at).collect::<Vec<_>>());
    assert_eq!(seen[2], (1..=steps).collect::<Vec<_>>());
    let mut out = out.into_iter();
    let first = tensor(out.next().unwrap().unwrap());
    let cancelled = out.next().unwrap();
    let third = tensor(out.next().unwrap().unwrap());
    assert!(
        matches!(cancelled, Err(PipelineError::Cancelled { step }) if step == cancel_at),
        "item 1: {:?}",
        cancelled.err()
    );
    for (i, l) in [(0, first), (2, third)] {
        let d = max_abs_diff(&l, &alone[i].0);
        eprintln!("item {i} after a cancel: latents max abs diff {d:.3e}");
        assert!(d <= TOLERANCE, "item {i}: latents differ by {d}");
    }
}

#[test]
fn every_item_can_be_cancelled_and_a_single_item_batch_is_a_solo_run() {
    let pipe = load();
    let reqs = requests(3);
    let conds = encode_all(&pipe, &reqs);
    let out = pipe.denoise_batch(&items(&reqs, &conds), &mut |item, p| {
        if p.step == item as u32 + 1 {
            StepControl::Cancel
        } else {
            StepControl::Continue
        }
    });
    for (i, r) in out.into_iter().enumerate() {
        assert!(
            matches!(r, Err(PipelineError::Cancelled { step }) if step == i as u32 + 1),
            "item {i}"
        );
    }
    let one = pipe.denoise_batch(&items(&reqs[..1], &conds[..1]), &mut |_, _| {
        StepControl::Continue
    });
    let alone = solo(&pipe, &reqs[..1]);
    let l = tensor(one.into_iter().next().unwrap().unwrap());
    assert_eq!(max_abs_diff(&l, &alone[0].0), 0.0);
}

#[test]
fn requests_of_different_shapes_are_not_batched() {
    let pipe = load();
    let mut reqs = requests(3);
    reqs[2].num_frames = 9;
    let conds = encode_all(&pipe, &reqs);
    let out = pipe.denoise_batch(&items(&reqs, &conds), &mut |_, _| {
        panic!("no step may run for a mixed batch")
    });
    assert_eq!(out.len(), 3);
    assert!(out
        .iter()
        .all(|r| matches!(r, Err(PipelineError::InvalidRequest(_)))));
}
