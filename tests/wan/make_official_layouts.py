#!/usr/bin/env python3
"""Writes the weight layouts of the official Wan Diffusers repositories as fixtures
(tests/wan/fixtures/official/), so kinema-wan's loader is checked against every tensor
name, shape and shard of each published repo without downloading anything.

Each layout is what the repo's `save_pretrained` wrote: the component classes of
diffusers/transformers instantiated on torch's meta device with the repo's published
`config.json` (no memory, no weights), their state-dict names and shapes (tied weights
dropped as `save_pretrained` drops them), split into shards of at most 5 GB in the
published dtype and named `<stem>-0000K-of-0000N.safetensors` with the usual
`*.safetensors.index.json`. Configs fields that are numbers, not structure
(`latents_mean`/`latents_std`) are the published values where they matter to nobody's
layout; they do not affect any key.

    /root/.cache/kinema-py/bin/python tests/wan/make_official_layouts.py
"""

import json
import os

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "official")
SHARD_BYTES = 5 * 1000**3

WAN21_LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
WAN21_LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]


def transformer_config(**over):
    base = dict(
        patch_size=[1, 2, 2], num_attention_heads=40, attention_head_dim=128, in_channels=16,
        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None,
        added_kv_proj_dim=None, rope_max_seq_len=1024, pos_embed_seq_len=None,
    )
    base.update(over)
    return base


COMPONENTS = {
    "umt5-xxl": ("text_encoder", "model", torch.float32, lambda: UMT5EncoderModel(UMT5Config(
        vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
        layer_norm_epsilon=1e-6, tie_word_embeddings=False, dropout_rate=0.1,
        is_encoder_decoder=False, use_cache=False))),
    "clip-vit-h-14": ("image_encoder", "model", torch.bfloat16, lambda: CLIPVisionModelWithProjection(
        CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=16,
                         num_hidden_layers=32, patch_size=14, image_size=224, projection_dim=1024,
                         hidden_act="gelu", layer_norm_eps=1e-5))),
    "wan21-vae": ("vae", "diffusion_pytorch_model", torch.float32, lambda: AutoencoderKLWan(
        base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
        temperal_downsample=[False, True, True], dropout=0.0,
        latents_mean=WAN21_LATENTS_MEAN, latents_std=WAN21_LATENTS_STD)),
    "wan22-vae": ("vae", "diffusion_pytorch_model", torch.float32, lambda: AutoencoderKLWan(
        base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
        attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0, is_residual=True,
        in_channels=12, out_channels=12, patch_size=2, scale_factor_temporal=4,
        scale_factor_spatial=16, latents_mean=[0.0] * 48, latents_std=[1.0] * 48)),
    "wan21-t2v-1.3b": ("transformer", "diffusion_pytorch_model", torch.float32,
                       lambda: WanTransformer3DModel(**transformer_config(
                           num_attention_heads=12, ffn_dim=8960, num_layers=30))),
    "wan21-t2v-14b": ("transformer", "diffusion_pytorch_model", torch.float32,
                      lambda: WanTransformer3DModel(**transformer_config())),
    "wan21-i2v-14b": ("transformer", "diffusion_pytorch_model", torch.float32,
                      lambda: WanTransformer3DModel(**transformer_config(
                          in_channels=36, image_dim=1280, added_kv_proj_dim=5120))),
    "wan21-flf2v-14b": ("transformer", "diffusion_pytorch_model", torch.float32,
                        lambda: WanTransformer3DModel(**transformer_config(
                            in_channels=36, image_dim=1280, added_kv_proj_dim=5120,
                            pos_embed_seq_len=257 * 2))),
    "wan22-ti2v-5b": ("transformer", "diffusion_pytorch_model", torch.float32,
                      lambda: WanTransformer3DModel(**transformer_config(
                          num_attention_heads=24, ffn_dim=14336, num_layers=30,
                          in_channels=48, out_channels=48))),
    "wan22-i2v-a14b": ("transformer", "diffusion_pytorch_model", torch.float32,
                       lambda: WanTransformer3DModel(**transformer_config(in_channels=36))),
}

T2V = "WanPipeline"
I2V = "WanImageToVideoPipeline"
# repo id -> (pipeline class, extra model_index fields, {folder: component})
REPOS = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": (T2V, {}, {
        "text_encoder": "umt5-xxl", "transformer": "wan21-t2v-1.3b", "vae": "wan21-vae"}),
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": (T2V, {}, {
        "text_encoder": "umt5-xxl", "transformer": "wan21-t2v-14b", "vae": "wan21-vae"}),
    "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers": (I2V, {}, {
        "text_encoder": "umt5-xxl", "image_encoder": "clip-vit-h-14",
        "transformer": "wan21-i2v-14b", "vae": "wan21-vae"}),
    "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers": (I2V, {}, {
        "text_encoder": "umt5-xxl", "image_encoder": "clip-vit-h-14",
        "transformer": "wan21-i2v-14b", "vae": "wan21-vae"}),
    "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers": (I2V, {}, {
        "text_encoder": "umt5-xxl", "image_encoder": "clip-vit-h-14",
        "transformer": "wan21-flf2v-14b", "vae": "wan21-vae"}),
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers": (T2V, {"expand_timesteps": True}, {
        "text_encoder": "umt5-xxl", "transformer": "wan22-ti2v-5b", "vae": "wan22-vae"}),
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": (T2V, {"boundary_ratio": 0.875}, {
        "text_encoder": "umt5-xxl", "transformer": "wan21-t2v-14b",
        "transformer_2": "wan21-t2v-14b", "vae": "wan21-vae"}),
    "Wan-AI/Wan2.2-I2V-A14B-Diffusers": (I2V, {"boundary_ratio": 0.9}, {
        "text_encoder": "umt5-xxl", "transformer": "wan22-i2v-a14b",
        "transformer_2": "wan22-i2v-a14b", "vae": "wan21-vae"}),
}

# model_index.json's [library, class] per folder; absent optional parts are [null, null].
INDEX_ENTRIES = {
    "text_encoder": ["transformers", "UMT5EncoderModel"],
    "tokenizer": ["transformers", "T5TokenizerFast"],
    "scheduler": ["diffusers", "UniPCMultistepScheduler"],
    "transformer": ["diffusers", "WanTransformer3DModel"],
    "transformer_2": ["diffusers", "WanTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLWan"],
    "image_encoder": ["transformers", "CLIPVisionModel"],
    "image_processor": ["transformers", "CLIPImageProcessor"],
}

DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16"}


def layout(name):
    folder, stem, dtype, build = COMPONENTS[name]
    with torch.device("meta"):
        model = build()
    config = model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
    config = json.loads(json.dumps(config, default=str))
    tensors = {key: [list(t.shape), DTYPE_NAMES[dtype]] for key, t in model.state_dict().items()}
    # umT5's encoder embeds with the shared table: save_pretrained keeps `shared.weight`.
    if "shared.weight" in tensors:
        tensors.pop("encoder.embed_tokens.weight", None)
    itemsize = torch.tensor([], dtype=dtype).element_size()
    shards, current, size = [], [], 0
    for key in tensors:
        n = 1
        for d in tensors[key][0]:
            n *= d
        if current and size + n * itemsize > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append(key)
        size += n * itemsize
    shards.append(current)
    if len(shards) == 1:
        files = {f"{stem}.safetensors": shards[0]}
    else:
        files = {f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors": s for i, s in enumerate(shards)}
    return {"folder": folder, "dtype": DTYPE_NAMES[dtype], "config": config, "files": files,
            "tensors": tensors}


def main():
    os.makedirs(os.path.join(OUT, "components"), exist_ok=True)
    for name in COMPONENTS:
        with open(os.path.join(OUT, "components", f"{name}.json"), "w") as f:
            json.dump(layout(name), f, separators=(",", ":"), sort_keys=True)
        print("component", name)
    repos = {}
    for repo, (cls, extra, comps) in REPOS.items():
        index = {"_class_name": cls, **extra}
        for folder, library_class in INDEX_ENTRIES.items():
            present = folder in comps or (folder == "image_processor" and "image_encoder" in comps)
            present = present or folder in ("tokenizer", "scheduler")
            if present:
                index[folder] = library_class
            elif cls == I2V or folder == "transformer_2" and repo.startswith("Wan-AI/Wan2.2"):
                index[folder] = [None, None]
        repos[repo] = {"model_index": index, "components": comps}
    with open(os.path.join(OUT, "repos.json"), "w") as f:
        json.dump(repos, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
