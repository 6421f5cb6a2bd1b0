#!/usr/bin/env python3
"""Image-to-video parity fixtures: tiny random `WanImageToVideoPipeline` models in the
Diffusers layout, run by diffusers / transformers, written to tests/wan/fixtures/i2v-*/ (i2v-tiny, i2v-flf2v, i2v-a14b).

CI never runs this script: its outputs are committed. Regenerate with (see
make_fixtures.py for the environment)

    /root/.cache/kinema-py/bin/python tests/wan/make_fixtures_i2v.py [NAME ...]

NAME is one of CONFIGS (none means all). Weights come from make_fixtures.py's
deterministic fill and the same tiny umT5 tokenizer; every model folder is shipped.

Per config:
- `model/`: what `save_pretrained` writes (transformer sharded into several files);
- `processor.safetensors`: CLIPImageProcessor (the installed one: transformers falls
  back to its PIL backend without torchvision) on the case's image and on extra
  non-square images with other processor settings (`processor_cases` in case.json);
- `clip.safetensors`: the image encoder's pixel values and `hidden_states[-2]`;
- `transformer.safetensors`: one forward with image embeddings (if any);
- `pipeline.safetensors`: the uint8 image(s), initial latents, the condition
  `prepare_latents` builds, the latents after each step and the frames.
"""

import json
import os
import shutil
import sys

import numpy as np
import PIL.Image
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel  # noqa: E402
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel  # noqa: E402

from make_fixtures import FIXTURES, MAX_SEQ, build_tokenizer, fill_deterministic, save  # noqa: E402

TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=36,
    out_channels=16,
    text_dim=32,
    freq_dim=16,
    ffn_dim=40,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=32,
)
VAE = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
TEXT = dict(d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)

CONFIGS = {
    # Wan 2.1 I2V: a non-square 80x48 image whose CLIP resize (shortest edge 32) is a
    # real downscale, a 5x3 patch grid (odd), a Chinese prompt.
    "i2v-tiny": dict(
        transformer=dict(TRANSFORMER, image_dim=32, added_kv_proj_dim=24),
        clip=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
                  image_size=32, patch_size=8, hidden_act="gelu", layer_norm_eps=1e-5),
        processor=dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        height=48,
        width=80,
        num_frames=5,
        steps=3,
        guidance_scale=5.0,
        flow_shift=3.0,
        timestep=757,
        prompt="一只猫在草地上散步，写实风格。 夕阳下的海滩！",
        negative_prompt="色调艳丽，过曝，静态，细节模糊不清，字幕，最差质量，低质量",
        last_image=False,
    ),
    # Wan 2.1 FLF2V: first and last frames, pos_embed over both frames' CLIP tokens,
    # quick_gelu CLIP, an upscaling resize (shortest edge 40 from 32).
    "i2v-flf2v": dict(
        transformer=dict(TRANSFORMER, image_dim=16, added_kv_proj_dim=24, pos_embed_seq_len=2 * 26),
        clip=dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                  image_size=40, patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5),
        processor=dict(size={"shortest_edge": 40}, crop_size={"height": 40, "width": 40}),
        height=32,
        width=48,
        num_frames=9,
        steps=3,
        guidance_scale=4.0,
        flow_shift=5.0,
        timestep=421,
        prompt="A cat walks on the grass, realistic style.",
        negative_prompt="",
        last_image=True,
    ),
    # Wan 2.2 I2V-A14B style: no image encoder, two experts switching at
    # boundary_ratio, a second guidance scale.
    "i2v-a14b": dict(
        transformer=dict(TRANSFORMER),
        clip=None,
        processor=None,
        boundary_ratio=0.9,
        height=32,
        width=32,
        num_frames=5,
        steps=4,
        guidance_scale=4.0,
        guidance_scale_2=3.0,
        flow_shift=3.0,
        timestep=903,
        prompt="夕阳下的海滩，海浪拍打着沙滩，电影感光线。",
        negative_prompt="low quality",
        last_image=False,
    ),
}

# Extra CLIPImageProcessor cases: (name, image height, width, processor kwargs)
PROCESSOR_CASES = [
    ("down_wide", 90, 150, dict(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 60})),
    ("up_tall", 37, 23, dict(size={"shortest_edge": 50}, crop_size={"height": 48, "width": 48})),
    ("pad_crop", 40, 30, dict(size={"shortest_edge": 20}, crop_size={"height": 30, "width": 24})),
]


def test_image(seed: int, h: int, w: int) -> np.ndarray:
    """A uint8 RGB image: smooth gradients plus noise (so resampling matters)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([128 + 100 * np.sin(x / 5.0 + c) * np.cos(y / 7.0 - c) for c in range(3)], -1)
    noise = rng.normal(0, 30, size=(h, w, 3))
    return np.clip(np.round(base + noise), 0, 255).astype(np.uint8)


def clip_processor(kw: dict) -> CLIPImageProcessor:
    return CLIPImageProcessor(**kw)


def share_tokenizer(model_dir: str):
    """The tokenizer is make_fixtures.py's: link the tiny config's copy instead of a
    third 330 KB tokenizer.json (when it is byte-identical)."""
    mine = os.path.join(model_dir, "tokenizer")
    tiny = os.path.join(FIXTURES, "tiny", "model", "tokenizer")
    if not os.path.isdir(tiny):
        return
    for fn in os.listdir(mine):
        other = os.path.join(tiny, fn)
        if not os.path.isfile(other) or open(other, "rb").read() != open(os.path.join(mine, fn), "rb").read():
            return
    shutil.rmtree(mine)
    os.symlink(os.path.relpath(tiny, model_dir), mine)


def make_config(name: str, cfg: dict, tokenizer_dir: str):
    out = os.path.join(FIXTURES, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2024)

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            layer_norm_epsilon=1e-6,
            is_encoder_decoder=False,
            use_cache=False,
            **TEXT,
        )
    ).eval()
    transformer = WanTransformer3DModel(**cfg["transformer"]).eval()
    vae = AutoencoderKLWan(**VAE).eval()
    fill_deterministic(text_encoder)
    fill_deterministic(transformer)
    fill_deterministic(vae)
    image_encoder = processor = transformer_2 = None
    if cfg["clip"] is not None:
        image_encoder = CLIPVisionModel(CLIPVisionConfig(**cfg["clip"])).eval()
        fill_deterministic(image_encoder)
        processor = clip_processor(cfg["processor"])
    if cfg.get("boundary_ratio") is not None:
        transformer_2 = WanTransformer3DModel(**cfg["transformer"]).eval()
        # other weights than `transformer`: the fill is keyed by name, so prefix it
        with torch.no_grad():
            for pname, p in transformer_2.named_parameters():
                p.mul_(-1.0)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=cfg["flow_shift"]
    )
    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        image_processor=processor,
        image_encoder=image_encoder,
        transformer=transformer,
        transformer_2=transformer_2,
        boundary_ratio=cfg.get("boundary_ratio"),
    )
    model_dir = os.path.join(out, "model")
    pipe.save_pretrained(model_dir, safe_serialization=True)
    shutil.rmtree(os.path.join(model_dir, "transformer"))
    transformer.save_pretrained(os.path.join(model_dir, "transformer"), max_shard_size="16KB")
    share_tokenizer(model_dir)

    h, w, f = cfg["height"], cfg["width"], cfg["num_frames"]
    lat_t, lat_h, lat_w = (f - 1) // 4 + 1, h // 8, w // 8
    image_np = test_image(11, h, w)
    last_np = test_image(12, h, w) if cfg["last_image"] else None
    image = PIL.Image.fromarray(image_np)
    last_image = PIL.Image.fromarray(last_np) if last_np is not None else None

    with torch.no_grad():
        # 1. The image processor (the case's image and extra cases) and the CLIP encoder.
        images = [image] + ([last_image] if last_image is not None else [])
        proc_cases = []
        if processor is not None:
            tensors = {}
            pv = processor(images=images, return_tensors="pt").pixel_values
            tensors["case.image"] = torch.from_numpy(np.stack([np.array(i) for i in images]))
            tensors["case.pixel_values"] = pv
            for i, (cname, ih, iw, kw) in enumerate(PROCESSOR_CASES):
                img = test_image(100 + i, ih, iw)
                tensors[f"{cname}.image"] = torch.from_numpy(img[None])
                tensors[f"{cname}.pixel_values"] = clip_processor(kw)(
                    images=PIL.Image.fromarray(img), return_tensors="pt"
                ).pixel_values
                proc_cases.append(dict(name=cname, **kw))
            save(os.path.join(out, "processor.safetensors"), tensors)
            hs = image_encoder(pixel_values=pv, output_hidden_states=True).hidden_states
            save(os.path.join(out, "clip.safetensors"), {"pixel_values": pv, "penultimate": hs[-2]})

        # 2. One transformer forward with image embeddings.
        x = torch.randn(1, 36, lat_t, lat_h, lat_w, generator=gen)
        ctx = torch.randn(1, MAX_SEQ, cfg["transformer"]["text_dim"], generator=gen)
        t = torch.tensor([cfg["timestep"]], dtype=torch.long)
        tensors = {"hidden_states": x, "timestep": t, "encoder_hidden_states": ctx}
        img_states = None
        if cfg["clip"] is not None:
            n_img = 2 if cfg["last_image"] else 1
            tokens = (cfg["clip"]["image_size"] // cfg["clip"]["patch_size"]) ** 2 + 1
            img_states = torch.randn(n_img, tokens, cfg["clip"]["hidden_size"], generator=gen)
            tensors["encoder_hidden_states_image"] = img_states
        tensors["output"] = transformer(
            hidden_states=x, timestep=t, encoder_hidden_states=ctx, encoder_hidden_states_image=img_states,
            return_dict=False,
        )[0]
        if transformer_2 is not None:
            tensors["output_2"] = transformer_2(
                hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False
            )[0]
        save(os.path.join(out, "transformer.safetensors"), tensors)

        # 3. The condition prepare_latents builds, from the preprocessed image(s).
        init = torch.randn(1, 16, lat_t, lat_h, lat_w, generator=gen)
        pre = pipe.video_processor.preprocess(image, height=h, width=w).float()
        pre_last = pipe.video_processor.preprocess(last_image, height=h, width=w).float() if last_image else None
        _, condition = pipe.prepare_latents(
            pre, 1, 16, h, w, f, torch.float32, torch.device("cpu"), None, init.clone(), pre_last
        )

        # 4. The whole pipeline.
        steps_seen = []

        def on_step(p, i, t, kw):
            steps_seen.append((int(t), kw["latents"].clone()))
            return {}

        kwargs = dict(
            image=image,
            prompt=cfg["prompt"],
            negative_prompt=cfg["negative_prompt"],
            height=h,
            width=w,
            num_frames=f,
            num_inference_steps=cfg["steps"],
            guidance_scale=cfg["guidance_scale"],
            latents=init.clone(),
            output_type="np",
            max_sequence_length=MAX_SEQ,
            callback_on_step_end=on_step,
        )
        if last_image is not None:
            kwargs["last_image"] = last_image
        if cfg.get("guidance_scale_2") is not None:
            kwargs["guidance_scale_2"] = cfg["guidance_scale_2"]
        frames = pipe(**kwargs).frames
        frames = torch.from_numpy(np.ascontiguousarray(frames[0])).float()
        tensors = {
            "image": torch.from_numpy(image_np),
            "latents": init,
            "condition": condition,
            "frames": frames,
            "timesteps": torch.tensor([s for s, _ in steps_seen], dtype=torch.long),
        }
        if last_np is not None:
            tensors["last_image"] = torch.from_numpy(last_np)
        for i, (_, lat) in enumerate(steps_seen):
            tensors[f"latents_after_step_{i}"] = lat
        save(os.path.join(out, "pipeline.safetensors"), tensors)

    with open(os.path.join(out, "case.json"), "w") as fh:
        json.dump(
            dict(
                prompt=cfg["prompt"],
                negative_prompt=cfg["negative_prompt"],
                height=h,
                width=w,
                num_frames=f,
                steps=cfg["steps"],
                guidance_scale=cfg["guidance_scale"],
                guidance_scale_2=cfg.get("guidance_scale_2"),
                boundary_ratio=cfg.get("boundary_ratio"),
                flow_shift=cfg["flow_shift"],
                timestep=cfg["timestep"],
                last_image=cfg["last_image"],
                processor_cases=proc_cases,
                timesteps=[s for s, _ in steps_seen],
                versions=dict(
                    torch=torch.__version__,
                    diffusers=diffusers.__version__,
                    transformers=transformers.__version__,
                    image_processor=type(processor).__name__ if processor is not None else None,
                ),
            ),
            fh,
            ensure_ascii=False,
            indent=1,
        )
    print(f"{name}: frames {tuple(frames.shape)}, timesteps {[s for s, _ in steps_seen]}")


def main():
    torch.set_num_threads(1)
    tokenizer_dir = os.path.join(FIXTURES, ".tokenizer-build-i2v")
    shutil.rmtree(tokenizer_dir, ignore_errors=True)
    build_tokenizer(tokenizer_dir)
    for name in sys.argv[1:] or list(CONFIGS):
        make_config(name, CONFIGS[name], tokenizer_dir)
    shutil.rmtree(tokenizer_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
