#!/usr/bin/env python
"""Per-iteration cost and peak memory of both inversions on a *randomly initialised* SD-layout AutoencoderKL.

    python scripts/bench_random_vae.py --out results/cpu-random-sd-vae.json

The autoencoder has Stable Diffusion's block layout (128, 256, 512, 512; 83 M parameters) with seeded random
weights, so no download is needed; at 64x64 its cost per image is about 1/64 of SD at 512x512. Runs the
``overhead`` suite (side-by-side ratios to the bare network passes) with a small batch, then one gradient-free and
one gradient-based run to record peak memory (extra peak RSS on CPU, ``max_memory_allocated`` on CUDA).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL

import decinv
from decinv import bench

SD_LAYOUT = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                 block_out_channels=(128, 256, 512, 512), norm_num_groups=32,
                 down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="iterations of each memory run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    torch.manual_seed(0)
    vae = AutoencoderKL(**SD_LAYOUT).eval().requires_grad_(False)
    model = decinv.load_model(vae, device=args.device)
    doc = bench.run_suites("overhead", model, device=args.device, threads=args.threads, repeat=args.repeat,
                           progress=False, overhead={"batch": args.batch})
    doc["model_note"] = "random SD-layout AutoencoderKL (seed 0), 64x64 images"
    x = model.decode(model.encode(torch.rand(args.batch, 3, 64, 64) * 2 - 1))  # an image D can reproduce
    memory = {}
    for method, kw in (("gradfree-adam", {"lr": 0.01}), ("gradient-adam", {"lr": 0.1})):
        result = decinv.invert(x.clamp(-1, 1), model, method, args.steps, progress=False, **kw)
        memory[method] = {"peak_memory_bytes": result.peak_memory_bytes, "seconds": result.seconds,
                          "steps": args.steps, "batch": args.batch}
    doc["memory"] = memory
    mib = {m: v["peak_memory_bytes"] / 2**20 for m, v in memory.items()}
    doc["ratios"].append({"suite": "memory", "ratio": "grad-free / grad-based peak memory",
                          "value": mib["gradfree-adam"] / mib["gradient-adam"], "target": "< 1",
                          "note": f"{mib['gradfree-adam']:.1f} vs {mib['gradient-adam']:.1f} MiB"})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(bench.jsonable(doc), indent=1) + "\n")
    print(bench.format_table(doc))


if __name__ == "__main__":
    main()
