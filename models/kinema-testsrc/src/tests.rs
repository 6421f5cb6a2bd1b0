//! End-to-end tests of the three stages through the `Pipeline` trait.

use kinema_diffusion::{
    BatchItem, Conditioning, GenerationRequest, Latents, Pipeline, PipelineError, StepControl,
    StepProgress, VideoFrames,
};

use crate::overlay::{counter_box, hash_box};
use crate::TestSource;

fn request(width: u32, height: u32, num_frames: u32) -> GenerationRequest {
    GenerationRequest {
        prompt: "a lighthouse at dusk".to_owned(),
        negative_prompt: String::new(),
        width,
        height,
        num_frames,
        steps: 4,
        guidance_scale: 5.0,
        seed: 42,
        ..Default::default()
    }
}

fn generate(req: &GenerationRequest) -> VideoFrames {
    let src = TestSource::new();
    let cond = src.encode_prompt(req).unwrap();
    let latents = src
        .denoise(req, &cond, &mut |_| StepControl::Continue)
        .unwrap();
    src.decode(req, latents).unwrap()
}

fn bits(frames: &VideoFrames) -> Vec<u32> {
    frames.data.iter().map(|v| v.to_bits()).collect()
}

/// The pixels of `frame` inside the box `(x, y, w, h)`, clipped to the frame.
fn region(v: &VideoFrames, frame: usize, (x, y, w, h): (i64, i64, i64, i64)) -> Vec<f32> {
    let clip = |a: i64, n: usize| a.clamp(0, n as i64) as usize;
    let (x0, x1) = (clip(x, v.width), clip(x + w, v.width));
    let (y0, y1) = (clip(y, v.height), clip(y + h, v.height));
    let data = v.frame(frame);
    (y0..y1)
        .flat_map(|row| data[(row * v.width + x0) * 3..(row * v.width + x1) * 3].to_vec())
        .collect()
}

#[test]
fn model_id_and_constructors() {
    assert_eq!(crate::MODEL_ID, "testsrc");
    fn pipeline<P: Pipeline + Default>() {}
    pipeline::<TestSource>();
    let _: Box<dyn Pipeline> = Box::new(TestSource::new());
}

#[test]
fn same_request_gives_bit_identical_frames() {
    let req = request(64, 40, 3);
    assert_eq!(bits(&generate(&req)), bits(&generate(&req)));
}

#[test]
fn seed_prompt_and_negative_prompt_change_the_frames() {
    let base = generate(&request(64, 40, 2));
    let mut other_seed = request(64, 40, 2);
    other_seed.seed = 43;
    let mut other_prompt = request(64, 40, 2);
    other_prompt.prompt.push('!');
    let mut other_negative = request(64, 40, 2);
    other_negative.negative_prompt = "blurry".to_owned();
    for req in [other_seed, other_prompt, other_negative] {
        assert_ne!(bits(&base), bits(&generate(&req)), "{req:?}");
    }
}

#[test]
fn step_count_does_not_change_the_result() {
    let mut one = request(40, 24, 2);
    one.steps = 1;
    let mut many = request(40, 24, 2);
    many.steps = 13;
    assert_eq!(bits(&generate(&one)), bits(&generate(&many)));
}

#[test]
fn progress_is_reported_once_per_step_in_order() {
    let src = TestSource::new();
    let mut req = request(32, 32, 2);
    req.steps = 6;
    let cond = src.encode_prompt(&req).unwrap();
    let mut seen = Vec::new();
    src.denoise(&req, &cond, &mut |p| {
        seen.push(p);
        StepControl::Continue
    })
    .unwrap();
    let expected: Vec<StepProgress> = (1..=6)
        .map(|step| StepProgress { step, total: 6 })
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn cancel_stops_at_once_with_the_step() {
    let src = TestSource::new();
    let mut req = request(32, 32, 2);
    req.steps = 8;
    let cond = src.encode_prompt(&req).unwrap();
    for k in [1, 3, 8] {
        let mut calls = 0;
        let result = src.denoise(&req, &cond, &mut |p| {
            calls += 1;
            if p.step == k {
                StepControl::Cancel
            } else {
                StepControl::Continue
            }
        });
        assert!(matches!(result, Err(PipelineError::Cancelled { step }) if step == k));
        assert_eq!(calls, k);
    }
}

#[test]
fn invalid_requests_are_rejected_by_every_stage() {
    let src = TestSource::new();
    let good = request(32, 32, 2);
    let cond = src.encode_prompt(&good).unwrap();
    let mut breakers: Vec<fn(&mut GenerationRequest)> =
        vec![|r| r.steps = 0, |r| r.width = 0, |r| r.height = 0, |r| {
            r.num_frames = 0
        }];
    breakers.push(|r| {
        r.width = u32::MAX;
        r.height = u32::MAX;
        r.num_frames = u32::MAX;
    });
    for breaker in breakers {
        let mut bad = good.clone();
        breaker(&mut bad);
        assert!(matches!(
            src.encode_prompt(&bad),
            Err(PipelineError::InvalidRequest(_))
        ));
        let denoised = src.denoise(&bad, &cond, &mut |_| panic!("no step may run"));
        assert!(matches!(denoised, Err(PipelineError::InvalidRequest(_))));
        let latents = src
            .denoise(&good, &cond, &mut |_| StepControl::Continue)
            .unwrap();
        assert!(matches!(
            src.decode(&bad, latents),
            Err(PipelineError::InvalidRequest(_))
        ));
    }
}

#[test]
fn latents_for_another_size_are_rejected() {
    let src = TestSource::new();
    let small = request(32, 32, 2);
    let cond = src.encode_prompt(&small).unwrap();
    let latents = src
        .denoise(&small, &cond, &mut |_| StepControl::Continue)
        .unwrap();
    let result = src.decode(&request(64, 32, 2), latents);
    assert!(matches!(result, Err(PipelineError::InvalidRequest(_))));
}

#[test]
fn foreign_inputs_are_rejected() {
    let src = TestSource::new();
    let req = request(32, 32, 1);
    let cond = Conditioning(Box::new(5u8));
    let result = src.denoise(&req, &cond, &mut |_| StepControl::Continue);
    assert!(matches!(result, Err(PipelineError::WrongInput { .. })));
    let result = src.decode(&req, Latents(Box::new("not latents")));
    assert!(matches!(result, Err(PipelineError::WrongInput { .. })));
}

#[test]
fn frame_counter_is_drawn_and_changes_between_frames() {
    let v = generate(&request(160, 96, 2));
    let rect = counter_box(v.width, v.height, 4);
    let (first, second) = (region(&v, 0, rect), region(&v, 1, rect));
    assert!(!first.is_empty());
    assert_ne!(first, second);
    for pixels in [&first, &second] {
        assert!(pixels.iter().any(|&p| p > 0.95), "no white text");
        assert!(pixels.iter().any(|&p| p < 0.05), "no black box");
    }
}

#[test]
fn hash_label_depends_on_the_prompt_only() {
    let a = generate(&request(160, 96, 2));
    let mut other = request(160, 96, 2);
    other.prompt = "something else".to_owned();
    let b = generate(&other);
    let rect = hash_box(160, 96, 8);
    assert!(rect.0 >= 0 && rect.1 >= 0);
    assert_eq!(region(&a, 0, rect), region(&a, 1, rect));
    assert_ne!(region(&a, 0, rect), region(&b, 0, rect));
    assert!(region(&a, 0, rect).iter().all(|&p| p == 0.0 || p == 1.0));
}

#[test]
fn odd_and_non_square_sizes_produce_valid_frames() {
    for (w, h, f) in [
        (16, 16, 1),
        (48, 16, 3),
        (16, 48, 2),
        (17, 33, 2),
        (160, 96, 2),
        (832, 480, 2),
    ] {
        let v = generate(&request(w, h, f));
        assert_eq!(
            (v.width, v.height, v.num_frames),
            (w as usize, h as usize, f as usize)
        );
        assert_eq!(v.data.len(), (f * h * w * 3) as usize);
        assert!(v.data.iter().all(|x| (0.0..=1.0).contains(x)), "{w}x{h}");
    }
}

/// `cargo test -p kinema-testsrc --release -- --ignored --nocapture`
#[test]
#[ignore = "timing; run in release"]
fn timing_832x480x81() {
    let mut req = request(832, 480, 81);
    req.steps = 30;
    let src = TestSource::new();
    let t = std::time::Instant::now();
    let cond = src.encode_prompt(&req).unwrap();
    let latents = src
        .denoise(&req, &cond, &mut |_| StepControl::Continue)
        .unwrap();
    let t_denoise = t.elapsed();
    let v = src.decode(&req, latents).unwrap();
    let t_total = t.elapsed();
    println!(
        "encode+denoise {t_denoise:?}, decode {:?}",
        t_total - t_denoise
    );
    assert_eq!(v.data.len(), 81 * 480 * 832 * 3);
}

#[test]
fn a_batch_gives_each_item_its_solo_video_and_cancels_one_alone() {
    let src = TestSource::new();
    let reqs: Vec<GenerationRequest> = (0..3)
        .map(|i| GenerationRequest {
            prompt: format!("prompt {i}"),
            seed: 100 + i,
            ..request(40, 24, 3)
        })
        .collect();
    let conds: Vec<Conditioning> = reqs.iter().map(|r| src.encode_prompt(r).unwrap()).collect();
    let items: Vec<BatchItem> = reqs
        .iter()
        .zip(&conds)
        .map(|(request, conditioning)| BatchItem {
            request,
            conditioning,
        })
        .collect();
    assert!(src.max_batch() > 1);
    let mut calls = Vec::new();
    let out = src.denoise_batch(&items, &mut |item, p| {
        calls.push((item, p.step));
        if item == 1 && p.step == 2 {
            StepControl::Cancel
        } else {
            StepControl::Continue
        }
    });
    // one round per step over the live items; item 1 leaves after step 2
    assert_eq!(
        calls,
        vec![
            (0, 1),
            (1, 1),
            (2, 1),
            (0, 2),
            (1, 2),
            (2, 2),
            (0, 3),
            (2, 3),
            (0, 4),
            (2, 4)
        ]
    );
    let mut out = out.into_iter();
    for (i, r) in [(0, out.next()), (1, out.next()), (2, out.next())] {
        let r = r.unwrap();
        if i == 1 {
            assert!(matches!(r, Err(PipelineError::Cancelled { step: 2 })));
        } else {
            let frames = src.decode(&reqs[i], r.unwrap()).unwrap();
            assert_eq!(bits(&frames), bits(&generate(&reqs[i])), "item {i}");
        }
    }

    let mut other = reqs[2].clone();
    other.steps = 5;
    let mixed = [
        items[0],
        BatchItem {
            request: &other,
            conditioning: &conds[2],
        },
    ];
    let out = src.denoise_batch(&mixed, &mut |_, _| panic!("no step may run"));
    assert!(out
        .iter()
        .all(|r| matches!(r, Err(PipelineError::InvalidRequest(_)))));
}

fn flat_image(width: u32, height: u32, rgb: [u8; 3]) -> kinema_diffusion::RgbImage {
    let data: Vec<u8> = (0..width * height).flat_map(|_| rgb).collect();
    kinema_diffusion::RgbImage::new(width, height, data).unwrap()
}

#[test]
fn an_input_image_is_the_first_frame_and_shows_through_the_rest() {
    let (w, h) = (64, 48);
    let plain = generate(&request(w, h, 3));
    let red = GenerationRequest {
        image: Some(flat_image(w, h, [255, 0, 0])),
        ..request(w, h, 3)
    };
    let blue = GenerationRequest {
        image: Some(flat_image(w, h, [0, 0, 255])),
        ..request(w, h, 3)
    };
    let (with_red, with_blue) = (generate(&red), generate(&blue));
    assert_ne!(bits(&with_red), bits(&plain));
    assert_ne!(bits(&with_red), bits(&with_blue));
    // Deterministic with the image too.
    assert_eq!(bits(&generate(&red)), bits(&with_red));
    // The middle of the first frame (clear of the overlays) is the image itself.
    let centre = ((h as usize / 2) * w as usize + w as usize / 2) * 3;
    assert_eq!(&with_red.data[centre..centre + 3], &[1.0, 0.0, 0.0]);
    // A later frame: half the image.
    let later = centre + (w * h * 3) as usize;
    assert!(with_red.data[later] >= 0.5 && with_red.data[later + 2] <= 0.5);
    // An image of another size is refused.
    let wrong = GenerationRequest {
        image: Some(flat_image(w / 2, h, [255, 0, 0])),
        ..request(w, h, 3)
    };
    let src = TestSource::new();
    let cond = src.encode_prompt(&wrong).unwrap();
    let latents = src
        .denoise(&wrong, &cond, &mut |_| StepControl::Continue)
        .unwrap();
    assert!(matches!(
        src.decode(&wrong, latents),
        Err(PipelineError::InvalidRequest(_))
    ));
}
