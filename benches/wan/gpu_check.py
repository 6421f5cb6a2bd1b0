#!/usr/bin/env python3
"""The diffusers side of scripts/gpu-check (see benches/README.md, "GPU check").

    python3 benches/wan/gpu_check.py [--wheels DIR] env --out env.json
    python3 benches/wan/gpu_check.py [--wheels DIR] step --model-dir DIR --device cuda \
        --dtype bf16 --width 832 --height 480 --frames 81 --warmup 1 --iters 3 \
        [--compare kinema_step.safetensors] --out step.json
    python3 benches/wan/gpu_check.py attention --device cuda --dtype bf16 \
        --batch 2 --heads 12 --tokens 32760 --head-dim 128 --out attn.json
    python3 benches/wan/gpu_check.py [--wheels DIR] vae --model-dir DIR --device cuda \
        --frames 81 [--compare kinema_vae.safetensors] --out vae.json

Same weights and inputs as `kinema-bench step|attention|vae`: the folder `kinema-bench
prepare` wrote, and inputs from the counter-based generator of `kinema_diffusion::tiny`
(re-implemented below, bit for bit). `step` runs diffusers' own `WanPipeline.__call__`
(cond and uncond forwards, guidance, UniPC) on given prompt embeddings and latents, so
no text encoder runs; `--compare` gives the relative L2 error of kinema's latents after
the first step against diffusers'.

`--wheels DIR`: wheels put on `sys.path` before importing diffusers (pure-Python wheels
are zip files Python imports from directly; a binary wheel such as Pillow's is unpacked
to a temporary folder, and only if the running Python cannot import it already).
Every subcommand writes one JSON object to `--out` whatever happens: a missing import
or a failure is a field (`error`, `missing_import`), never a crash without a report.
"""

import argparse
import glob
import json
import os
import sys
import tempfile
import time
import traceback
import zipfile

MASK64 = (1 << 64) - 1


def fnv1a64(text: str) -> int:
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & MASK64
    return h


def det_values(name: str, n: int):
    """n values in [-1, 1): the counter generator of kinema_diffusion::tiny."""
    import numpy as np
    with np.errstate(over="ignore"):
        key = np.uint64(fnv1a64(name))
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = key + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    return u * 2.0 - 1.0


def det_std(name: str, shape, std: float):
    """As `step::det_std` (uniform, the given std): f64 values rounded once to f32."""
    import numpy as np
    import torch
    n = int(np.prod(shape))
    v = (std * 3 ** 0.5) * det_values(name, n)
    return torch.from_numpy(v.astype(np.float32)).reshape(tuple(shape))


def add_wheels(folder):
    """Puts the wheels of `folder` on sys.path; returns what was added."""
    added = []
    if not folder or not os.path.isdir(folder):
        return added
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    unpack_root = None
    for whl in sorted(glob.glob(os.path.join(folder, "*.whl"))):
        base = os.path.basename(whl)
        if "-none-any" in base or "py3-none" in base:
            sys.path.insert(0, whl)
            added.append(base)
            continue
        # binary wheel: only for this Python, and only when the package is missing
        if f"-{tag}-" not in base:
            continue
        top = base.split("-")[0].lower()
        module = {"pillow": "PIL"}.get(top, top)
        try:
            __import__(module)
            continue
        except ImportError:
            pass
        if unpack_root is None:
            unpack_root = tempfile.mkdtemp(prefix="kinema-wheels-")
        with zipfile.ZipFile(whl) as z:
            z.extractall(unpack_root)
        if unpack_root not in sys.path:
            sys.path.insert(0, unpack_root)
        added.append(base + " (unpacked)")
    return added


def import_diffusers(report):
    """diffusers, or None with `missing_import` / `error` set in `report`."""
    try:
        import diffusers  # noqa: F401
        report["diffusers"] = diffusers.__version__
        report["diffusers_from"] = os.path.dirname(diffusers.__file__)
        return diffusers
    except ImportError as e:
        report["missing_import"] = getattr(e, "name", None) or str(e)
        report["error"] = f"import diffusers: {e!r}"
    except Exception as e:  # a broken install: report, don't crash
        report["error"] = f"import diffusers: {e!r}"
    return None


def dtype_of(name):
    import torch
    return {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[name]


def sync(device):
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device):
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak(device):
    import torch
    if not device.startswith("cuda"):
        return None
    mib = 1024.0 * 1024.0
    free, total = torch.cuda.mem_get_info()
    return {
        "max_allocated_mib": torch.cuda.max_memory_allocated() / mib,
        "max_reserved_mib": torch.cuda.max_memory_reserved() / mib,
        "device_used_now_mib": (total - free) / mib,
        "method": "torch.cuda.max_memory_allocated/reserved (caching allocator, this process)",
    }


def compare(got, want):
    """relative L2 error and max abs diff of two tensors (f64 on the host)."""
    a = got.detach().to("cpu").double().flatten()
    b = want.detach().to("cpu").double().flatten()
    if a.shape != b.shape:
        return {"error": f"shapes {tuple(got.shape)} vs {tuple(want.shape)}"}
    d = a - b
    return {
        "rel_l2": (d.norm() / b.norm().clamp_min(1e-300)).item(),
        "max_abs_diff": d.abs().max().item(),
        "max_abs_ref": b.abs().max().item(),
    }


def median(v):
    s = sorted(v)
    n = len(s)
    if n == 0:
        return None
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def cmd_env(args, report):
    import platform
    report["python"] = platform.python_version()
    try:
        import torch
        report["torch"] = torch.__version__
        report["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            report["gpu"] = p.name
            report["gpu_memory_mib"] = p.total_memory / 1024.0 / 1024.0
            report["torch_cuda"] = torch.version.cuda
            report["cudnn"] = torch.backends.cudnn.version()
    except ImportError as e:
        report["missing_import"] = "torch"
        report["error"] = f"import torch: {e!r}"
        return
    for mod in ["numpy", "safetensors", "PIL", "transformers"]:
        try:
            m = __import__(mod)
            report[f"{mod}_version"] = getattr(m, "__version__", "?")
        except ImportError as e:
            report.setdefault("missing_imports", []).append(mod)
            report[f"{mod}_version"] = None
            report.setdefault("import_errors", {})[mod] = repr(e)
    import_diffusers(report)


def cmd_step(args, report):
    import torch
    if import_diffusers(report) is None:
        return
    from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    dtype = dtype_of(args.dtype)
    t0 = time.perf_counter()
    tr = WanTransformer3DModel.from_pretrained(
        os.path.join(args.model_dir, "transformer"), torch_dtype=dtype).to(args.device).eval()
    sched = UniPCMultistepScheduler.from_pretrained(os.path.join(args.model_dir, "scheduler"))
    # no text encoder, tokenizer or VAE: embeddings are given and the output is latents
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=sched,
                       transformer=tr)
    pipe.set_progress_bar_config(disable=True)
    sync(args.device)
    report["load_s"] = time.perf_counter() - t0
    c = tr.config
    lat = [1, c.in_channels, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8]
    tokens = lat[2] * (lat[3] // c.patch_size[1]) * (lat[4] // c.patch_size[2])
    text = lambda name: det_std(name, (1, 512, c.text_dim), 0.3).to(args.device, dtype)
    latents = det_std("bench.latents", lat, 1.0).to(args.device)
    times, first = [], []
    state = {"last": None}

    def on_step(_pipe, i, t, kw):
        sync(args.device)
        now = time.perf_counter()
        times.append(now - state["last"])
        state["last"] = now
        if not first:
            first.append(kw["latents"].detach().float().cpu().clone())
        return {}

    steps = args.warmup + args.iters
    reset_peak(args.device)
    sync(args.device)
    state["last"] = time.perf_counter()
    with torch.no_grad():
        out = pipe(prompt_embeds=text("bench.prompt_embeds"),
                   negative_prompt_embeds=text("bench.negative_prompt_embeds"),
                   latents=latents, height=args.height, width=args.width,
                   num_frames=args.frames, num_inference_steps=steps,
                   guidance_scale=args.guidance, output_type="latent", return_dict=False,
                   callback_on_step_end=on_step)[0]
    timed = times[args.warmup:]
    report.update(tokens=tokens, layers=c.num_layers, latent_shape=lat, step_s=times,
                  step_median_s=median(timed), finite=bool(torch.isfinite(out).all()),
                  memory=peak(args.device))
    print(f"diffusers step: {tokens} tokens, median {report['step_median_s']:.3f} s of "
          f"{len(timed)}; steps {[round(t, 3) for t in times]}")
    if args.compare:
        from safetensors.torch import load_file
        other = load_file(args.compare)["latents_after_step_0"]
        report["vs_kinema_latents_after_step_0"] = compare(other, first[0])


def cmd_attention(args, report):
    import torch
    import torch.nn.functional as F
    dtype = dtype_of(args.dtype)
    lk = args.kv_tokens or args.tokens
    g = torch.Generator(device=args.device).manual_seed(0)
    mk = lambda l: torch.randn(args.batch, args.heads, l, args.head_dim, device=args.device,
                               dtype=dtype, generator=g)
    q, k, v = mk(args.tokens), mk(lk), mk(lk)
    reset_peak(args.device)
    times = []
    with torch.no_grad():
        for i in range(args.warmup + args.iters):
            sync(args.device)
            t0 = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v)
            sync(args.device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    flops = 4.0 * args.batch * args.heads * args.tokens * lk * args.head_dim
    med = median(times)
    report.update(shape=[args.batch, args.heads, args.tokens, lk, args.head_dim],
                  seconds=times, median_s=med, flops=flops, tflops=flops / med / 1e12,
                  memory=peak(args.device))
    print(f"torch SDPA {report['shape']} {args.dtype}: median {med:.4f} s, "
          f"{report['tflops']:.2f} TFLOP/s")


def cmd_vae(args, report):
    import torch
    if import_diffusers(report) is None:
        return
    from diffusers import AutoencoderKLWan
    dtype = dtype_of(args.dtype)
    t0 = time.perf_counter()
    vae = AutoencoderKLWan.from_pretrained(os.path.join(args.model_dir, "vae"),
                                           torch_dtype=dtype).to(args.device).eval()
    sync(args.device)
    report["load_s"] = time.perf_counter() - t0
    c = vae.config
    lat = [1, c.z_dim, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8]
    z = det_std("bench.vae_latents", lat, 1.0)
    mean = torch.tensor(c.latents_mean).view(1, c.z_dim, 1, 1, 1)
    std = torch.tensor(c.latents_std).view(1, c.z_dim, 1, 1, 1)
    z = (z / (1.0 / std) + mean).to(args.device, dtype)
    reset_peak(args.device)
    sync(args.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        video = vae.decode(z, return_dict=False)[0]
    sync(args.device)
    report.update(decode_s=time.perf_counter() - t0, frames=int(video.shape[2]),
                  latent_frames=lat[2], memory=peak(args.device),
                  finite=bool(torch.isfinite(video).all()))
    print(f"diffusers VAE decode {args.width}x{args.height} x {args.frames} frames: "
          f"{report['decode_s']:.2f} s")
    if args.compare:
        from safetensors.torch import load_file
        other = load_file(args.compare)["video"]
        report["vs_kinema_video"] = compare(other, video.float())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wheels", help="folder of wheels to import diffusers (and deps) from")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ["env", "step", "attention", "vae"]:
        s = sub.add_parser(name)
        s.add_argument("--out", required=True)
        s.add_argument("--device", default="cpu")
        if name == "env":
            continue
        s.add_argument("--dtype", default="f32" if name == "vae" else "bf16")
        s.add_argument("--warmup", type=int, default=1)
        s.add_argument("--iters", type=int, default=3)
        if name in ("step", "vae"):
            s.add_argument("--model-dir", required=True)
            s.add_argument("--width", type=int, default=832)
            s.add_argument("--height", type=int, default=480)
            s.add_argument("--frames", type=int, default=81)
            s.add_argument("--compare")
            s.add_argument("--threads", type=int, default=0)
        if name == "step":
            s.add_argument("--guidance", type=float, default=5.0)
        if name == "attention":
            s.add_argument("--batch", type=int, default=2)
            s.add_argument("--heads", type=int, default=12)
            s.add_argument("--tokens", type=int, default=32760)
            s.add_argument("--kv-tokens", type=int, default=0)
            s.add_argument("--head-dim", type=int, default=128)
    args = p.parse_args()
    report = {"impl": "diffusers", "bench": args.cmd, "ok": False}
    try:
        report["wheels"] = add_wheels(args.wheels)
        if args.cmd != "env" and getattr(args, "threads", 0):
            import torch
            torch.set_num_threads(args.threads)
        {"env": cmd_env, "step": cmd_step, "attention": cmd_attention,
         "vae": cmd_vae}[args.cmd](args, report)
        report["ok"] = "error" not in report
    except ImportError as e:
        report["missing_import"] = getattr(e, "name", None) or str(e)
        report["error"] = repr(e)
    except Exception as e:
        report["error"] = repr(e)
        report["traceback"] = traceback.format_exc()[-4000:]
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print("RESULT " + json.dumps({k: v for k, v in report.items() if k != "traceback"}))
    if "traceback" in report:
        print(report["traceback"], file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
