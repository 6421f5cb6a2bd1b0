#!/usr/bin/env python3
"""Builds tiny random Wan 2.1 models in the Diffusers layout, runs the diffusers /
transformers reference on them and writes the reference inputs and outputs as small
safetensors fixtures under tests/wan/fixtures/<config>/.

CI never runs this script: its outputs are committed. Regenerate with

    python3 -m venv /root/.cache/kinema-py
    /root/.cache/kinema-py/bin/pip install torch diffusers transformers tokenizers \
        safetensors accelerate sentencepiece protobuf ftfy
    /root/.cache/kinema-py/bin/python tests/wan/make_fixtures.py [NAME ...]

NAME is a config (tiny, wide), `schedulers`, or `vae_encoder` (only the VAE encoder
cases of every config, leaving the other fixtures as they are); none means all.

Weights are not drawn from torch's RNG: every parameter is filled by a counter-based
generator (splitmix64 over the parameter name and element index, see `det_values`) that
kinema-wan's tests re-implement, so a config too large to commit (the one with the real
1.3B widths) is committed as a manifest (`weights.json`: name, shape, offset, scale per
tensor) and the Rust test regenerates the identical safetensors. Small configs also
ship the model directory itself, exactly as diffusers saves it (sharded transformer).
"""

import io
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from transformers import AutoTokenizer, T5Tokenizer, UMT5Config, UMT5EncoderModel

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
MAX_SEQ = 512

# A tiny SentencePiece unigram vocabulary, English and Chinese, as umT5's tokenizer is.
CORPUS = [
    "A cat walks on the grass, realistic style.",
    "Two anthropomorphic cats in comfy boxing gear fight intensely on a spotlighted stage.",
    "A serene beach at sunset, waves rolling onto the sand, cinematic lighting, 4k.",
    "The quick brown fox jumps over the lazy dog while the camera pans slowly.",
    "一只猫在草地上散步，写实风格。",
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量",
    "夕阳下的海滩，海浪拍打着沙滩，电影感光线。",
]

CONFIGS = {
    # diffusers' own test scale: 2 heads x 12, text dim 32, 2 layers, VAE base_dim 3.
    "tiny": dict(
        ship_weights=True,
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
        text_encoder=dict(d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4),
        height=32,
        width=48,
        num_frames=5,
        steps=3,
        guidance_scale=5.0,
        flow_shift=3.0,
        timestep=757,
        prompt="A  cat walks on the “grass” &amp; dances,\n realistic style.",
        negative_prompt="色调艳丽，过曝，静态，细节模糊不清，字幕，最差质量，低质量",
        encoder_video=dict(height=24, width=40, num_frames=9),
    ),
    # the real Wan2.1-T2V-1.3B widths (dim 1536 = 12 heads x 128, freq dim 256) with one
    # layer, a narrow FFN and other text dims, sizes and frame counts.
    "wide": dict(
        ship_weights=False,
        transformer=dict(
            patch_size=(1, 2, 2),
            num_attention_heads=12,
            attention_head_dim=128,
            in_channels=16,
            out_channels=16,
            text_dim=48,
            freq_dim=256,
            ffn_dim=256,
            num_layers=1,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
            rope_max_seq_len=1024,
        ),
        vae=dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=2, temperal_downsample=[False, True, True]),
        text_encoder=dict(d_model=48, d_kv=16, d_ff=64, num_layers=3, num_heads=3),
        height=48,
        width=32,
        num_frames=9,
        steps=4,
        guidance_scale=4.0,
        flow_shift=5.0,
        timestep=421,
        prompt="一只猫在草地上散步，写实风格。 夕阳下的海滩！",
        negative_prompt="",
        encoder_video=dict(height=32, width=16, num_frames=13),
    ),
}

MASK64 = (1 << 64) - 1


def fnv1a64(text: str) -> int:
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & MASK64
    return h


def det_values(name: str, n: int) -> np.ndarray:
    """n values in [-1, 1): splitmix64 of (fnv1a64(name) + (i + 1) * golden), top 24 bits."""
    with np.errstate(over="ignore"):
        key = np.uint64(fnv1a64(name))
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = key + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    return u * 2.0 - 1.0


def quantize(x: float) -> float:
    # a binary fraction with a short exact decimal form, so JSON carries it exactly
    return round(x * 4096.0) / 4096.0


def init_rule(name: str, shape) -> tuple:
    """(offset, scale) of the uniform fill for one parameter."""
    leaf = name.split(".")[-1]
    if len(shape) >= 2 and "relative_attention_bias" in name:
        return 0.0, 0.5
    if len(shape) >= 2 and ("shared" in name or "embed_tokens" in name):
        return 0.0, 1.0
    if "scale_shift_table" in name:
        return 0.0, quantize(1.0 / np.sqrt(shape[-1]))
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return 0.0, quantize(1.0 / np.sqrt(fan_in))
    if leaf == "gamma" or "norm" in name:
        if leaf == "bias":
            return 0.0, 0.0625
        return 1.0, 0.125
    return 0.0, 0.0625


def fill_deterministic(module: torch.nn.Module) -> list:
    manifest = []
    seen = set()
    with torch.no_grad():
        for name, p in module.state_dict(keep_vars=True).items():
            # tied tensors (umT5's encoder.embed_tokens is `shared`) are filled once,
            # under the first name
            if not p.is_floating_point() or p.data_ptr() in seen:
                continue
            seen.add(p.data_ptr())
            offset, scale = init_rule(name, tuple(p.shape))
            v = offset + scale * det_values(name, p.numel())
            p.copy_(torch.from_numpy(v.astype(np.float32)).reshape(p.shape))
            manifest.append(dict(name=name, shape=list(p.shape), offset=offset, scale=scale))
    return manifest


def build_tokenizer(path: str):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=buf,
        vocab_size=300,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        minloglevel=2,
    )
    proto = pb.ModelProto()
    proto.ParseFromString(buf.getvalue())
    vocab = [(p.piece, p.score) for p in proto.pieces]
    tok = T5Tokenizer(vocab=vocab, _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap, extra_ids=8)
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def save(path: str, tensors: dict):
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, path)


def make_config(name: str, cfg: dict, tokenizer_dir: str):
    out = os.path.join(FIXTURES, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    te = cfg["text_encoder"]
    text_config = UMT5Config(
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
    text_encoder = UMT5EncoderModel(text_config).eval()
    transformer = WanTransformer3DModel(**cfg["transformer"]).eval()
    vae = AutoencoderKLWan(**cfg["vae"]).eval()
    manifests = {
        "text_encoder": fill_deterministic(text_encoder),
        "transformer": fill_deterministic(transformer),
        "vae": fill_deterministic(vae),
    }
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=cfg["flow_shift"],
    )
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer)

    # The model directory: everything diffusers writes; weights only where small.
    model_dir = os.path.join(out, "model")
    pipe.save_pretrained(model_dir, safe_serialization=True)
    # a sharded transformer (index + several files), as the big checkpoints are
    shutil.rmtree(os.path.join(model_dir, "transformer"))
    transformer.save_pretrained(os.path.join(model_dir, "transformer"), max_shard_size="16KB")
    for comp, manifest in manifests.items():
        with open(os.path.join(model_dir, comp, "weights.json"), "w") as f:
            json.dump({"generator": "splitmix64-fnv1a64-v1", "tensors": manifest}, f, indent=0)
    if not cfg["ship_weights"]:
        for comp in manifests:
            d = os.path.join(model_dir, comp)
            for fn in os.listdir(d):
                if fn.endswith(".safetensors") or fn.endswith(".safetensors.index.json"):
                    os.remove(os.path.join(d, fn))

    h, w, f = cfg["height"], cfg["width"], cfg["num_frames"]
    lat_t, lat_h, lat_w = (f - 1) // 4 + 1, h // 8, w // 8

    with torch.no_grad():
        # 1. Text encoder: the prompt and the negative prompt, as the pipeline does.
        prompts = [cfg["prompt"], cfg["negative_prompt"]]
        cleaned = [prompt_clean(p) for p in prompts]
        toks = tokenizer(
            cleaned,
            padding="max_length",
            max_length=MAX_SEQ,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        hidden = text_encoder(toks.input_ids, toks.attention_mask).last_hidden_state
        pos, neg = pipe.encode_prompt(cfg["prompt"], cfg["negative_prompt"], True, max_sequence_length=MAX_SEQ)
        rel = torch.arange(-(MAX_SEQ - 1), MAX_SEQ, dtype=torch.long)
        buckets = text_encoder.encoder.block[0].layer[0].SelfAttention._relative_position_bucket(rel)
        save(
            os.path.join(out, "text_encoder.safetensors"),
            {
                "input_ids": toks.input_ids,
                "attention_mask": toks.attention_mask,
                "last_hidden_state": hidden,
                "prompt_embeds": pos,
                "negative_prompt_embeds": neg,
                "relative_positions": rel,
                "relative_buckets": buckets,
            },
        )

        # 2. One transformer forward on given latents, timestep and text states.
        x = torch.randn(1, 16, lat_t, lat_h, lat_w, generator=gen)
        ctx = torch.randn(1, MAX_SEQ, cfg["transformer"]["text_dim"], generator=gen)
        t = torch.tensor([cfg["timestep"]], dtype=torch.long)
        y = transformer(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        save(
            os.path.join(out, "transformer.safetensors"),
            {"hidden_states": x, "timestep": t, "encoder_hidden_states": ctx, "output": y},
        )

        # 3. VAE decode of given (de-normalised) latents.
        z = torch.randn(1, 16, lat_t, lat_h, lat_w, generator=gen)
        video = vae.decode(z, return_dict=False)[0]
        save(os.path.join(out, "vae.safetensors"), {"latents": z, "video": video})

        # 4. The whole pipeline from prompt text and given initial latents.
        init = torch.randn(1, 16, lat_t, lat_h, lat_w, generator=gen)
        steps_seen = []

        def on_step(p, i, t, kw):
            steps_seen.append((int(t), kw["latents"].clone()))
            return {}

        frames = pipe(
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
        ).frames
        frames = torch.from_numpy(np.ascontiguousarray(frames[0])).float()
        tensors = {
            "latents": init,
            "frames": frames,
            "sigmas": scheduler.sigmas.float(),
            "timesteps": torch.tensor([s for s, _ in steps_seen], dtype=torch.long),
        }
        for i, (_, lat) in enumerate(steps_seen):
            tensors[f"latents_after_step_{i}"] = lat
        save(os.path.join(out, "pipeline.safetensors"), tensors)

    with open(os.path.join(out, "case.json"), "w") as fh:
        json.dump(
            dict(
                prompt=cfg["prompt"],
                negative_prompt=cfg["negative_prompt"],
                cleaned_prompts=cleaned,
                height=h,
                width=w,
                num_frames=f,
                steps=cfg["steps"],
                guidance_scale=cfg["guidance_scale"],
                flow_shift=cfg["flow_shift"],
                timestep=cfg["timestep"],
                ship_weights=cfg["ship_weights"],
                versions=dict(
                    torch=torch.__version__, diffusers=diffusers.__version__, transformers=transformers.__version__
                ),
            ),
            fh,
            ensure_ascii=False,
            indent=1,
        )
    print(f"{name}: frames {tuple(frames.shape)}, dit out {tuple(y.shape)}, video {tuple(video.shape)}")
    make_vae_encoder(name, cfg)


def make_vae_encoder(name: str, cfg: dict):
    """VAE encode of a given video: the latent distribution's moments, its mode
    normalised as the image-to-video pipeline does, and one sample with its noise.
    Written beside the config's other fixtures without touching them (the weights come
    from the same deterministic fill, so they equal the shipped / manifest ones)."""
    out = os.path.join(FIXTURES, name)
    vae = AutoencoderKLWan(**cfg["vae"]).eval()
    fill_deterministic(vae)
    v = cfg["encoder_video"]
    gen = torch.Generator().manual_seed(4321)
    with torch.no_grad():
        video = torch.rand(1, 3, v["num_frames"], v["height"], v["width"], generator=gen) * 2.0 - 1.0
        posterior = vae.encode(video, return_dict=False)[0]
        mean = posterior.mean
        latents_mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
        latents_inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
        normalized = (posterior.mode() - latents_mean) * latents_inv_std
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
        sample = posterior.sample(generator=torch.Generator().manual_seed(7))
    save(
        os.path.join(out, "vae_encoder.safetensors"),
        {
            "video": video,
            "mean": mean,
            "logvar": posterior.logvar,
            "latents_normalized": normalized,
            "noise": noise,
            "sample": sample,
        },
    )
    print(f"{name}: vae encode {tuple(video.shape)} -> {tuple(mean.shape)}")


# Scheduler-only cases: given model outputs per step, the samples each step produces.
SCHEDULER_CASES = {
    "unipc_o2_s3_n5": ("unipc", dict(solver_order=2, flow_shift=3.0), 5),
    "unipc_o3_s5_n6": ("unipc", dict(solver_order=3, flow_shift=5.0), 6),
    "unipc_o2_s3_n1": ("unipc", dict(solver_order=2, flow_shift=3.0), 1),
    "euler_s3_n5": ("euler", dict(shift=3.0), 5),
    "euler_s5_n7": ("euler", dict(shift=5.0), 7),
}


def make_schedulers():
    gen = torch.Generator().manual_seed(99)
    tensors, cases = {}, {}
    for name, (kind, kw, n) in SCHEDULER_CASES.items():
        if kind == "unipc":
            s = UniPCMultistepScheduler(
                prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, **kw
            )
        else:
            s = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **kw)
        s.set_timesteps(n)
        s.set_begin_index(0)
        sample = torch.randn(1, 4, 2, 3, 5, generator=gen)
        tensors[f"{name}.sample_0"] = sample.clone()
        for i, t in enumerate(s.timesteps):
            out = torch.randn(sample.shape, generator=gen)
            tensors[f"{name}.model_output_{i}"] = out
            sample = s.step(out, t, sample, return_dict=False)[0]
            tensors[f"{name}.sample_{i + 1}"] = sample.clone()
        tensors[f"{name}.timesteps"] = s.timesteps.to(torch.float32)
        tensors[f"{name}.sigmas"] = s.sigmas.to(torch.float32)
        config = {k: v for k, v in s.config.items() if not k.startswith("_")}
        cases[name] = dict(kind=kind, steps=n, config=config)
    save(os.path.join(FIXTURES, "schedulers.safetensors"), tensors)
    with open(os.path.join(FIXTURES, "schedulers.json"), "w") as fh:
        json.dump(cases, fh, indent=1, default=str)
    print(f"schedulers: {len(cases)} cases")


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(FIXTURES, exist_ok=True)
    tokenizer_dir = os.path.join(FIXTURES, ".tokenizer-build")
    shutil.rmtree(tokenizer_dir, ignore_errors=True)
    build_tokenizer(tokenizer_dir)
    names = sys.argv[1:] or [*CONFIGS, "schedulers"]
    for name in names:
        if name == "schedulers":
            make_schedulers()
        elif name == "vae_encoder":
            for config, cfg in CONFIGS.items():
                make_vae_encoder(config, cfg)
        else:
            make_config(name, CONFIGS[name], tokenizer_dir)
    shutil.rmtree(tokenizer_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
