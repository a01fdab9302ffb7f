"""Jacobian spectrum of E(D(.)) for autoencoder checkpoints: which training runs make z* repel the iterations.

    python scripts/jacobian_probes.py --out decinv/tiny/weights/v2/jacobian-probes.json \
        v1=decinv/tiny/weights/v1/vae  v2-silu=decinv/tiny/weights/v2-silu/vae \
        run@2000=tiny-training/run/vae-step2000.pt

Each NAME=PATH is an exported ``vae`` folder (save_pretrained layout) or a training checkpoint of
``python -m decinv.tiny.train vae`` (``vae.pt`` / ``vae-step<N>.pt``; the architecture recorded in the checkpoint,
or ``--recipe``).
For each, `decinv.tiny.train.regime_probe` with ``jacobian=True`` on 8 held-out crops (z* = E(x), scaling factor
set from those latents): the encoder's NMSE and, per crop, the largest and leftmost Rayleigh quotient of the
Jacobian of E(D(.)) at z* (`decinv.jacobian_extremes`). Results are added to ``--out`` as they come (an existing
file keeps its other entries), with the device, date and commit. The model card renders the file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
from pathlib import Path

import torch


def load_vae(path: Path, recipe: str):
    from diffusers import AutoencoderKL

    from decinv.tiny import train

    if path.is_dir():
        return AutoencoderKL.from_pretrained(path, local_files_only=True)
    state = torch.load(path, weights_only=False)
    config = state["log"].get("vae_config")  # recorded by runs since 2026-11-30
    if config is None and recipe is None:
        raise ValueError(f"{path} does not record its architecture: pass --recipe (v2-silu for a v2 run trained "
                         "before 2026-11-30, v2 for a ReLU run, which older records call v2-relu).")
    vae = AutoencoderKL(**(config or train.RECIPES[recipe]["vae"]))
    vae.load_state_dict(state["model"])
    return vae


def main(argv: list[str] | None = None) -> None:
    from decinv.core.measure import git_info
    from decinv.tiny import train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=PATH")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recipe", choices=sorted(train.RECIPES), default=None,
                        help="architecture of .pt checkpoints that do not record it (v2-silu: v2 runs before "
                        "2026-11-30)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    pairs = []
    for item in args.checkpoints:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).exists():
            parser.error(f"{item!r}: expected NAME=PATH with an existing PATH (a vae folder or a .pt checkpoint).")
        pairs.append((name, Path(path)))
    torch.set_num_threads(args.threads)
    doc = json.loads(args.out.read_text()) if args.out.exists() else {}
    doc.setdefault("measurements", {})
    doc["how"] = ("8 distinct held-out crops per checkpoint (heldout_crops(8, seed=77)), z* = E(x) with the scaling factor set from those latents; "
                  "decinv.jacobian_extremes (60 power iterations, finite-difference step 0.01) of E(D(.)) at z*")
    for name, path in pairs:
        vae = load_vae(path, args.recipe).eval()
        size = int(vae.config.sample_size)
        result = train.regime_probe(vae, size, horizons=(), jacobian=True)
        result["source"] = str(path)
        doc["measurements"][name] = result
        doc.update(device="cpu", threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
                   date=datetime.date.today().isoformat(), **git_info())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1))
        left = result["jacobian_leftmost"]
        print(f"{name}: encoder {result['encoder_nmse_db']:.2f} dB, leftmost < 0 on "
              f"{sum(v < 0 for v in left)}/{len(left)} crops (median {statistics.median(left):+.3f}), "
              f"largest median {statistics.median(result['jacobian_top']):.2f}", flush=True)


if __name__ == "__main__":
    main()
