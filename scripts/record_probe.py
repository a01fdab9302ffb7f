"""Record a training probe that was not shipped as a data file the model card renders (``weights/v2/probe-*.json``).

    python scripts/record_probe.py vae WORK --out decinv/tiny/weights/v2/probe-vae-NAME.json \
        --command "python -m decinv.tiny.train vae ..." --what "Autoencoder with ..., to test whether ..."
    python scripts/record_probe.py candidate WORK --weights WORK/weights --out .../probe-NAME-with-unet.json \
        --command "..." --what "..."

``vae``: the autoencoder's training log from ``WORK/vae.pt`` (losses, held-out PSNR, the regime probe at every
probe step), with a summary appended to WHAT that is computed from the log: last step, wall time, threads, held-out
PSNR, at how many probes gradient-free Adam beat the encoder at every horizon, and, when the probe measured it, on
how many crops E(D(.))'s Jacobian had a direction with <Jv, v> < 0.

``candidate``: an autoencoder with a UNet trained on its latents, measured by ``python -m decinv.tiny.properties
--weights W``: ``W/properties.json``, the UNet's log from ``WORK/unet.pt`` and the settings in
``W/training_log.json``, with the targets met appended to WHAT.

Both record the device, date and commit (``git_info``), so a probe file says where its numbers came from.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch


def _gains(regime: dict) -> dict[int, float]:
    """Adam's gain over the encoder (dB) by horizon, from one regime-probe entry."""
    enc = regime["encoder_nmse_db"]
    return {int(k.split("_")[2]): enc - v for k, v in regime.items() if k.startswith("gradfree_adam_")}


def vae_summary(log: dict, step: int) -> str:
    """The sentence appended to a VAE probe's description, computed from its training log."""
    if not log.get("heldout_psnr"):
        raise ValueError("the log has no held-out PSNR yet: the run has not reached its first probe step.")
    psnr = dict(map(tuple, log["heldout_psnr"]))
    best_step = max(psnr, key=psnr.get)
    last_step = max(psnr)
    text = (f" Last checkpoint at step {step:,} ({log['seconds'] / 60:.0f} min on {log['threads']} CPU thread(s)); "
            f"held-out PSNR {psnr[last_step]:.2f} dB at the last probe (best {psnr[best_step]:.2f} at step "
            f"{best_step:,}).")
    regime = log.get("regime", [])
    if regime:
        horizons = sorted(_gains(regime[0][1]))
        text += (f" Gradient-free Adam beat the encoder at every horizon ({', '.join(map(str, horizons))} "
                 f"iterations) at {sum(all(g > 0 for g in _gains(r).values()) for _, r in regime)} of "
                 f"{len(regime)} probes; at the last, by " +
                 "/".join(f"{g:+.2f}" for _, g in sorted(_gains(regime[-1][1]).items())) + " dB.")
        spectra = [(s, r["jacobian_leftmost"]) for s, r in regime if "jacobian_leftmost" in r]
        if spectra:
            text += (" Crops whose E(D(.)) Jacobian has a direction with <Jv, v> < 0, by probe: " +
                     ", ".join(f"{s:,}: {sum(v < 0 for v in left)}/{len(left)}" for s, left in spectra) + ".")
    return text


def _provenance(threads: int, device: str) -> dict:
    from decinv.core.measure import git_info

    return {"hardware": {"device": device, "cpu": platform.processor() or platform.machine(), "threads": threads,
                         "torch": torch.__version__},
            "date": datetime.date.today().isoformat(), **git_info()}


def record_vae(work: Path, what: str, command: str) -> dict:
    state = torch.load(work / "vae.pt", weights_only=False)
    log = state["log"]
    return {"what": what + vae_summary(log, state["step"]), "vae": log, "settings": {"command": command},
            **_provenance(log["threads"], log.get("device", "cpu"))}


def record_candidate(work: Path, weights: Path, what: str, command: str) -> dict:
    from decinv.tiny.properties import TARGETS

    props = json.loads((weights / "properties.json").read_text())
    unet_log = torch.load(work / "unet.pt", weights_only=False)["log"]
    settings = json.loads((weights / "training_log.json").read_text()).get("settings") \
        if (weights / "training_log.json").exists() else None
    met = [key for key in TARGETS if props["passes"].get(key)]
    what += (f" Measured on {props['n_images']} generated images: {len(met)} of {len(TARGETS)} targets met"
             + (f" ({', '.join(met)})." if met else "."))
    return {"what": what, "properties": props, "unet": unet_log, "vae_settings": settings,
            "settings": {"command": command}, **_provenance(unet_log["threads"], unet_log.get("device", "cpu"))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("vae", "candidate"))
    parser.add_argument("work", type=Path, help="the training run's --work folder")
    parser.add_argument("--weights", type=Path, help="candidate: the run's --out folder, with properties.json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--what", required=True, help="what the probe tests, and why")
    parser.add_argument("--command", required=True, help="the commands that trained and measured it")
    args = parser.parse_args(argv)
    if args.kind == "candidate":
        if args.weights is None:
            parser.error("candidate needs --weights (the folder with properties.json)")
        doc = record_candidate(args.work, args.weights, args.what, args.command)
    else:
        doc = record_vae(args.work, args.what, args.command)
    args.out.write_text(json.dumps(doc, indent=1))
    print(doc["what"])


if __name__ == "__main__":
    main()
