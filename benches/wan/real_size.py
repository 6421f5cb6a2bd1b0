#!/usr/bin/env python3
"""Real-size Wan 2.1 benchmarks, the diffusers side (see benches/README.md).

    PY=/root/.cache/kinema-py/bin/python
    $PY benches/wan/real_size.py manifests      # (re)writes benches/wan/wan2.1-t2v-1.3b/
    $PY benches/wan/real_size.py block [--frames 81 --height 480 --width 832]
                                    [--save OUT.safetensors] [--compare RUST.safetensors]
    $PY benches/wan/real_size.py transformer --model-dir DIR [--frames 5]
                                    [--compare RUST.safetensors]
    $PY benches/wan/real_size.py vae --model-dir DIR [--frames 5]
                                    [--compare RUST.safetensors]

`manifests` instantiates the real Wan2.1-T2V-1.3B transformer and the Wan-VAE on the
meta device (no memory) and writes each component's `config.json` beside a
`weights.json` manifest (name, shape and fill rule of every tensor, in the official
Diffusers layout), from which `kinema-bench prepare` writes random safetensors.

`transformer` loads the transformer `kinema-bench prepare` wrote with diffusers'
`from_pretrained` (so the layout is the official one) and runs one forward on the
inputs `kinema-bench transformer` uses.

`vae` decodes, with diffusers' `AutoencoderKLWan.decode` in f32, the latents
`kinema-bench vae` decodes (de-normalised the same way), and compares the videos.

`block` runs one full-width `WanTransformerBlock` (dim 1536, 12 heads, ffn 8960) at
the sequence of a real video, f32 on CPU, with the weights and inputs `kinema-bench
block` uses (the same counter-based generator), and prints the time and peak memory.
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "wan"))
from make_fixtures import det_values, init_rule  # noqa: E402

from diffusers import AutoencoderKLWan, WanTransformer3DModel  # noqa: E402
from diffusers.models.transformers.transformer_wan import (  # noqa: E402
    WanRotaryPosEmbed,
    WanTransformerBlock,
)

MODEL = os.path.join(HERE, "wan2.1-t2v-1.3b")

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json
TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=None,
    added_kv_proj_dim=None,
    rope_max_seq_len=1024,
)

# vae/config.json: AutoencoderKLWan's defaults are the Wan 2.1 VAE.
VAE = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
           attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)


def peak_rss_mib() -> float:
    # Linux: ru_maxrss in KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def manifest_of(module: torch.nn.Module) -> list:
    out = []
    for name, p in module.state_dict(keep_vars=True).items():
        if not p.is_floating_point():
            continue
        offset, scale = init_rule(name, tuple(p.shape))
        out.append(dict(name=name, shape=list(p.shape), offset=offset, scale=scale))
    return out


def write_manifests():
    for comp, cls, cfg in [("transformer", WanTransformer3DModel, TRANSFORMER),
                           ("vae", AutoencoderKLWan, VAE)]:
        with torch.device("meta"):
            model = cls(**cfg)
        d = os.path.join(MODEL, comp)
        os.makedirs(d, exist_ok=True)
        model.save_config(d)
        tensors = manifest_of(model)
        with open(os.path.join(d, "weights.json"), "w") as f:
            json.dump({"generator": "splitmix64-fnv1a64-v1", "tensors": tensors}, f, indent=0)
        n = sum(int(np.prod(t["shape"])) for t in tensors)
        print(f"{comp}: {len(tensors)} tensors, {n / 1e6:.1f} M parameters -> {d}")


def det_tensor(name: str, shape, offset: float, scale: float) -> torch.Tensor:
    n = int(np.prod(shape))
    v = offset + scale * det_values(name, n)
    return torch.from_numpy(v.astype(np.float32)).reshape(shape)


def bench_block(args):
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    c = TRANSFORMER
    dim = c["num_attention_heads"] * c["attention_head_dim"]
    lat_t, lat_h, lat_w = (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8
    seq = lat_t * (lat_h // 2) * (lat_w // 2)
    block = WanTransformerBlock(dim, c["ffn_dim"], c["num_attention_heads"], c["qk_norm"],
                                c["cross_attn_norm"], c["eps"]).eval()
    with torch.no_grad():
        for name, p in block.state_dict(keep_vars=True).items():
            full = f"blocks.0.{name}"
            offset, scale = init_rule(full, tuple(p.shape))
            p.copy_(det_tensor(full, tuple(p.shape), offset, scale))
    rope = WanRotaryPosEmbed(c["attention_head_dim"], c["patch_size"], c["rope_max_seq_len"])
    with torch.no_grad():
        rotary = rope(torch.empty(1, 16, lat_t, lat_h, lat_w, device="meta"))
    x = det_tensor("bench.hidden_states", (1, seq, dim), 0.0, 1.0)
    ctx = det_tensor("bench.context", (1, 512, dim), 0.0, 1.0)
    temb = det_tensor("bench.temb", (1, 6, dim), 0.0, 0.5)
    print(f"diffusers WanTransformerBlock dim {dim}, {c['num_attention_heads']} heads, ffn "
          f"{c['ffn_dim']}; {args.height}x{args.width} x {args.frames} frames = {seq} tokens; "
          f"f32 CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"setup: peak RSS {vm_hwm_mib():.0f} MiB")
    reset = reset_hwm()
    base = vm_hwm_mib()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = block(x, ctx, temb, rotary)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    hwm = vm_hwm_mib()
    print(f"forward: {wall:.2f} s wall, {cpu:.2f} s CPU; peak RSS {hwm:.0f} MiB "
          f"({'reset before the forward' if reset else 'whole process'}; {base:.0f} MiB at start)")
    print(f"output: mean {out.mean().item():.6f}, std {out.std().item():.6f}, "
          f"finite {bool(torch.isfinite(out).all())}")
    result = dict(impl="diffusers", tokens=seq, wall_s=wall, cpu_s=cpu, peak_rss_mib=hwm,
                  start_rss_mib=base, threads=torch.get_num_threads())
    if args.save:
        from safetensors.torch import save_file
        save_file({"out": out.contiguous()}, args.save)
    if args.compare:
        from safetensors.torch import load_file
        other = load_file(args.compare)["out"]
        diff = (other - out).abs().max().item()
        print(f"max |rust - diffusers| = {diff:.3e}")
        result["max_abs_diff_vs_rust"] = diff
    print("RESULT " + json.dumps(result))


def bench_transformer(args):
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    d = os.path.join(args.model_dir, "transformer")
    reset_hwm()
    t0, c0 = time.perf_counter(), time.process_time()
    model = WanTransformer3DModel.from_pretrained(d, torch_dtype=torch.float32).eval()
    load_wall, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    load_peak = vm_hwm_mib()
    c = model.config
    print(f"diffusers WanTransformer3DModel: {c.num_layers} layers, dim "
          f"{c.num_attention_heads * c.attention_head_dim}; loaded from {d}: {load_wall:.2f} s "
          f"wall, {load_cpu:.2f} s CPU; peak RSS {load_peak:.0f} MiB")
    lat_t, lat_h, lat_w = (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8
    latents = det_tensor("bench.latents", (1, c.in_channels, lat_t, lat_h, lat_w), 0.0, 3 ** 0.5)
    text = det_tensor("bench.text", (1, 512, c.text_dim), 0.0, 0.5)
    reset_hwm()
    base = vm_hwm_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = model(latents, torch.tensor([999.0]), text, return_dict=False)[0]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = vm_hwm_mib()
    tokens = lat_t * (lat_h // 2) * (lat_w // 2)
    print(f"forward at {args.width}x{args.height} x {args.frames} frames ({tokens} tokens): "
          f"{wall:.2f} s wall, {cpu:.2f} s CPU; peak RSS {peak:.0f} MiB ({base:.0f} at start)")
    result = dict(impl="diffusers", bench="transformer", tokens=tokens,
                  load=dict(wall_s=load_wall, cpu_s=load_cpu, peak_rss_mib=load_peak),
                  forward=dict(wall_s=wall, cpu_s=cpu, peak_rss_mib=peak, start_rss_mib=base),
                  threads=torch.get_num_threads())
    if args.compare:
        from safetensors.torch import load_file
        other = load_file(args.compare)["out"]
        diff = (other - out).abs().max().item()
        print(f"max |kinema - diffusers| = {diff:.3e} (output std {out.std().item():.3f})")
        result["max_abs_diff_vs_rust"] = diff
    print("RESULT " + json.dumps(result))


def bench_vae(args):
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    d = os.path.join(args.model_dir, "vae")
    t0, c0 = time.perf_counter(), time.process_time()
    vae = AutoencoderKLWan.from_pretrained(d, torch_dtype=torch.float32).eval()
    load_wall, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    c = vae.config
    lat_t, lat_h, lat_w = (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8
    z = det_tensor("bench.vae_latents", (1, c.z_dim, lat_t, lat_h, lat_w), 0.0, 3 ** 0.5)
    mean = torch.tensor(c.latents_mean, dtype=torch.float32).view(1, c.z_dim, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(c.latents_std, dtype=torch.float32).view(1, c.z_dim, 1, 1, 1)
    z = z / inv_std + mean
    print(f"diffusers AutoencoderKLWan loaded from {d}: {load_wall:.2f} s wall, {load_cpu:.2f} s CPU")
    reset_hwm()
    base = vm_hwm_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = vae.decode(z, return_dict=False)[0]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = vm_hwm_mib()
    print(f"decode of {args.width}x{args.height} x {args.frames} frames ({lat_t} latent frames -> "
          f"{out.shape[2]} frames): {wall:.2f} s wall, {cpu:.2f} s CPU; peak RSS {peak:.0f} MiB "
          f"({base:.0f} at start)")
    result = dict(impl="diffusers", bench="vae", frames=int(out.shape[2]), latent_frames=lat_t,
                  load=dict(wall_s=load_wall, cpu_s=load_cpu),
                  decode=dict(wall_s=wall, cpu_s=cpu, peak_rss_mib=peak, start_rss_mib=base),
                  threads=torch.get_num_threads())
    if args.compare:
        from safetensors.torch import load_file
        other = load_file(args.compare)["video"]
        diff = (other - out.clamp(-1, 1)).abs().max().item()
        print(f"max |kinema - diffusers| = {diff:.3e}")
        result["max_abs_diff_vs_rust"] = diff
    print("RESULT " + json.dumps(result))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("manifests")
    b = sub.add_parser("block")
    b.add_argument("--frames", type=int, default=81)
    b.add_argument("--height", type=int, default=480)
    b.add_argument("--width", type=int, default=832)
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--save")
    b.add_argument("--compare")
    tr = sub.add_parser("transformer")
    tr.add_argument("--model-dir", required=True)
    tr.add_argument("--frames", type=int, default=5)
    tr.add_argument("--height", type=int, default=480)
    tr.add_argument("--width", type=int, default=832)
    tr.add_argument("--threads", type=int, default=0)
    tr.add_argument("--compare")
    v = sub.add_parser("vae")
    v.add_argument("--model-dir", required=True)
    v.add_argument("--frames", type=int, default=5)
    v.add_argument("--height", type=int, default=480)
    v.add_argument("--width", type=int, default=832)
    v.add_argument("--threads", type=int, default=0)
    v.add_argument("--compare")
    args = p.parse_args()
    if args.cmd == "manifests":
        write_manifests()
    elif args.cmd == "transformer":
        bench_transformer(args)
    elif args.cmd == "vae":
        bench_vae(args)
    else:
        bench_block(args)


if __name__ == "__main__":
    main()
