#!/usr/bin/env python3
"""Builds tiny random Wan 2.2 models in the Diffusers layout (TI2V-5B with the Wan 2.2
VAE and per-token timesteps; T2V-A14B with two experts), runs diffusers on them and
writes the reference inputs and outputs under tests/wan/fixtures/wan22-*/.

CI never runs this script: its outputs are committed. Regenerate with

    /root/.cache/kinema-py/bin/python tests/wan/make_fixtures_wan22.py [ti2v|a14b ...]

Weights come from make_fixtures.py's counter-based fill (`det_values` over each
parameter's name); the second expert of A14B salts its names with `transformer_2.` so
its weights differ from the first's. Both model folders ship their weights.

- wan22-ti2v: a TI2V-5B-shaped model (z_dim 48, Wan 2.2 VAE: residual blocks, patch
  size 2, 16x spatial compression; transformer with 48 channels). Cases: the VAE alone
  (decode, encode), one transformer forward with per-token timesteps, text-to-video
  with a Chinese prompt (WanPipeline, expand_timesteps) and image-to-video with a
  non-square image at odd token grids (WanImageToVideoPipeline, expand_timesteps, no
  image encoder) from the same folder.
- wan22-a14b: a T2V-A14B-shaped model (Wan 2.1 VAE, `transformer` and
  `transformer_2`, boundary_ratio inside the step range so both experts run, a second
  guidance scale).
"""

import json
import os
import shutil
import sys

import numpy as np
import PIL.Image
import torch

import diffusers
import transformers
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import (  # noqa: E402
    FIXTURES,
    MAX_SEQ,
    build_tokenizer,
    det_values,
    init_rule,
    quantize,
    save,
)

TEXT_ENCODER = dict(d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)

TI2V = dict(
    transformer=dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=48,
        out_channels=48,
        text_dim=32,
        freq_dim=16,
        ffn_dim=40,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=32,
    ),
    # the Wan 2.2 VAE's structure (residual, patchified, 16x) at tiny widths; the
    # decoder's base differs from the encoder's as in the real one (160 / 256)
    vae=dict(
        base_dim=2,
        decoder_base_dim=3,
        z_dim=48,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        latents_mean=None,
        latents_std=None,
    ),
    flow_shift=5.0,
    t2v=dict(
        prompt="一只猫在草地上散步，写实风格。 夕阳下的海滩！",
        negative_prompt="色调艳丽，过曝，静态，细节模糊不清，字幕，最差质量，低质量",
        height=64,
        width=32,
        num_frames=5,
        steps=3,
        guidance_scale=5.0,
    ),
    # 32x96 px: latents 2x6, a 1x3 token grid; 9 frames: 3 latent frames
    i2v=dict(
        prompt="A serene beach at sunset, waves rolling onto the sand.",
        negative_prompt="",
        height=32,
        width=96,
        num_frames=9,
        steps=3,
        guidance_scale=4.0,
    ),
    transformer_case=dict(latent_frames=3, height=6, width=10, timestep=757),
    vae_decode=dict(latent_frames=3, height=2, width=3),
    vae_encode=dict(num_frames=9, height=32, width=48),
)

A14B = dict(
    transformer=dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=16,
        ffn_dim=40,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=32,
    ),
    vae=dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]),
    flow_shift=3.0,
    # 4 steps at shift 3: timesteps 999, 900, 750, 500; boundary 875 -> two of each
    boundary_ratio=0.875,
    prompt="Two anthropomorphic cats in comfy boxing gear fight intensely on a spotlighted stage.",
    negative_prompt="色调艳丽，过曝，静态",
    height=32,
    width=48,
    num_frames=5,
    steps=4,
    guidance_scale=4.0,
    guidance_scale_2=3.0,
)


def latent_stats(z):
    """Per-channel latents_mean / latents_std for a tiny VAE (binary fractions, exact in
    JSON)."""
    mean = [quantize(0.5 * v) for v in det_values("latents_mean", z)]
    std = [quantize(1.0 + 0.5 * abs(v)) for v in det_values("latents_std", z)]
    return mean, std


def fill(module: torch.nn.Module, prefix: str = "") -> None:
    """make_fixtures.fill_deterministic with the names salted by `prefix`."""
    seen = set()
    with torch.no_grad():
        for name, p in module.state_dict(keep_vars=True).items():
            if not p.is_floating_point() or p.data_ptr() in seen:
                continue
            seen.add(p.data_ptr())
            offset, scale = init_rule(name, tuple(p.shape))
            v = offset + scale * det_values(prefix + name, p.numel())
            p.copy_(torch.from_numpy(v.astype(np.float32)).reshape(p.shape))


def text_encoder_for(tokenizer):
    te = TEXT_ENCODER
    config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=te["d_model"],
        d_kv=te["d_kv"],
        d_ff=te["d_ff"],
        num_layers=te["num_layers"],
        num_heads=te["num_heads"],
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        is_encoder_decoder=False,
        use_cache=False,
    )
    m = UMT5EncoderModel(config).eval()
    fill(m)
    return m


def scheduler_for(flow_shift):
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=flow_shift
    )


def run_pipe(pipe, case, init, **extra):
    """Runs `pipe` from `init`; returns frames [F, H, W, 3] and the per-step record."""
    seen = []

    def on_step(p, i, t, kw):
        seen.append((int(t), kw["latents"].clone()))
        return {}

    frames = pipe(
        prompt=case["prompt"],
        negative_prompt=case["negative_prompt"],
        height=case["height"],
        width=case["width"],
        num_frames=case["num_frames"],
        num_inference_steps=case["steps"],
        guidance_scale=case["guidance_scale"],
        latents=init.clone(),
        output_type="np",
        max_sequence_length=MAX_SEQ,
        callback_on_step_end=on_step,
        **extra,
    ).frames
    frames = torch.from_numpy(np.ascontiguousarray(frames[0])).float()
    tensors = {"latents": init, "frames": frames, "timesteps": torch.tensor([t for t, _ in seen])}
    for i, (_, lat) in enumerate(seen):
        tensors[f"latents_after_step_{i}"] = lat
    return tensors


def versions():
    return dict(torch=torch.__version__, diffusers=diffusers.__version__, transformers=transformers.__version__)


def make_ti2v(tokenizer_dir):
    cfg = TI2V
    out = os.path.join(FIXTURES, "wan22-ti2v")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    text_encoder = text_encoder_for(tokenizer)
    transformer = WanTransformer3DModel(**cfg["transformer"]).eval()
    fill(transformer)
    vae_cfg = dict(cfg["vae"])
    vae_cfg["latents_mean"], vae_cfg["latents_std"] = latent_stats(vae_cfg["z_dim"])
    vae = AutoencoderKLWan(**vae_cfg).eval()
    fill(vae)
    scheduler = scheduler_for(cfg["flow_shift"])
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
        expand_timesteps=True,
    )
    pipe.save_pretrained(os.path.join(out, "model"), safe_serialization=True)
    i2v = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler_for(cfg["flow_shift"]),
        transformer=transformer,
        expand_timesteps=True,
    )
    gen = torch.Generator().manual_seed(2222)
    z = cfg["vae"]["z_dim"]
    with torch.no_grad():
        # 1. VAE decode of given (de-normalised) latents, and encode of a given video
        d = cfg["vae_decode"]
        lat = torch.randn(1, z, d["latent_frames"], d["height"], d["width"], generator=gen)
        video = vae.decode(lat, return_dict=False)[0]
        save(os.path.join(out, "vae.safetensors"), {"latents": lat, "video": video})
        e = cfg["vae_encode"]
        video_in = torch.rand(1, 3, e["num_frames"], e["height"], e["width"], generator=gen) * 2.0 - 1.0
        posterior = vae.encode(video_in, return_dict=False)[0]
        mean_t = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
        save(
            os.path.join(out, "vae_encoder.safetensors"),
            {
                "video": video_in,
                "mean": posterior.mean,
                "logvar": posterior.logvar,
                "latents_normalized": (posterior.mode() - mean_t) * inv_std,
            },
        )

        # 2. One transformer forward with per-token timesteps (the first latent frame's
        # tokens at 0, as image-to-video gives them)
        tc = cfg["transformer_case"]
        x = torch.randn(1, z, tc["latent_frames"], tc["height"], tc["width"], generator=gen)
        ctx = torch.randn(1, MAX_SEQ, cfg["transformer"]["text_dim"], generator=gen)
        mask = torch.ones(tc["latent_frames"], tc["height"] // 2, tc["width"] // 2)
        mask[0] = 0
        ts = (mask * tc["timestep"]).flatten().unsqueeze(0)
        y = transformer(hidden_states=x, timestep=ts, encoder_hidden_states=ctx, return_dict=False)[0]
        save(
            os.path.join(out, "transformer.safetensors"),
            {"hidden_states": x, "timestep": ts, "encoder_hidden_states": ctx, "output": y},
        )

        # 3. Text-to-video (Chinese prompt)
        c = cfg["t2v"]
        shape = (1, z, (c["num_frames"] - 1) // 4 + 1, c["height"] // 16, c["width"] // 16)
        t2v = run_pipe(pipe, c, torch.randn(shape, generator=gen))
        save(os.path.join(out, "pipeline_t2v.safetensors"), t2v)

        # 4. Image-to-video: a non-square RGB image already at the video size
        c = cfg["i2v"]
        shape = (1, z, (c["num_frames"] - 1) // 4 + 1, c["height"] // 16, c["width"] // 16)
        pixels = (torch.rand(c["height"], c["width"], 3, generator=gen) * 255.0).round().to(torch.uint8)
        image = PIL.Image.fromarray(pixels.numpy(), mode="RGB")
        i2v_out = run_pipe(i2v, c, torch.randn(shape, generator=gen), image=image)
        i2v_out["image"] = pixels
        save(os.path.join(out, "pipeline_i2v.safetensors"), i2v_out)

    with open(os.path.join(out, "case.json"), "w") as fh:
        json.dump(
            dict(
                t2v=cfg["t2v"],
                i2v=cfg["i2v"],
                flow_shift=cfg["flow_shift"],
                transformer_case=cfg["transformer_case"],
                versions=versions(),
            ),
            fh,
            ensure_ascii=False,
            indent=1,
        )
    print(f"wan22-ti2v: t2v frames {tuple(t2v['frames'].shape)}, i2v frames {tuple(i2v_out['frames'].shape)}")


def make_a14b(tokenizer_dir):
    cfg = A14B
    out = os.path.join(FIXTURES, "wan22-a14b")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    text_encoder = text_encoder_for(tokenizer)
    transformer = WanTransformer3DModel(**cfg["transformer"]).eval()
    fill(transformer)
    transformer_2 = WanTransformer3DModel(**cfg["transformer"]).eval()
    fill(transformer_2, prefix="transformer_2.")
    vae = AutoencoderKLWan(**cfg["vae"]).eval()
    fill(vae)
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler_for(cfg["flow_shift"]),
        transformer=transformer,
        transformer_2=transformer_2,
        boundary_ratio=cfg["boundary_ratio"],
    )
    model_dir = os.path.join(out, "model")
    pipe.save_pretrained(model_dir, safe_serialization=True)
    # the low-noise expert sharded (index + several files), as the real ones are
    shutil.rmtree(os.path.join(model_dir, "transformer_2"))
    transformer_2.save_pretrained(os.path.join(model_dir, "transformer_2"), max_shard_size="16KB")
    gen = torch.Generator().manual_seed(3333)
    shape = (1, 16, (cfg["num_frames"] - 1) // 4 + 1, cfg["height"] // 8, cfg["width"] // 8)
    with torch.no_grad():
        tensors = run_pipe(pipe, cfg, torch.randn(shape, generator=gen), guidance_scale_2=cfg["guidance_scale_2"])
    save(os.path.join(out, "pipeline.safetensors"), tensors)
    keys = ("prompt", "negative_prompt", "height", "width", "num_frames", "steps", "guidance_scale")
    with open(os.path.join(out, "case.json"), "w") as fh:
        json.dump(
            dict(
                **{k: cfg[k] for k in keys},
                guidance_scale_2=cfg["guidance_scale_2"],
                boundary_ratio=cfg["boundary_ratio"],
                flow_shift=cfg["flow_shift"],
                versions=versions(),
            ),
            fh,
            ensure_ascii=False,
            indent=1,
        )
    print(f"wan22-a14b: timesteps {tensors['timesteps'].tolist()}, frames {tuple(tensors['frames'].shape)}")


def main():
    torch.set_num_threads(1)
    tokenizer_dir = os.path.join(FIXTURES, ".tokenizer-build-wan22")
    shutil.rmtree(tokenizer_dir, ignore_errors=True)
    build_tokenizer(tokenizer_dir)
    names = sys.argv[1:] or ["ti2v", "a14b"]
    for name in names:
        {"ti2v": make_ti2v, "a14b": make_a14b}[name](tokenizer_dir)
    shutil.rmtree(tokenizer_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
