"""Train the bundled tiny latent diffusion model from scratch: ``python -m decinv.tiny.train all``.

Stages (each resumable from its checkpoint in ``--work``; a finished stage is skipped):

1. ``vae``: a diffusers ``AutoencoderKL`` (64x64 RGB -> 4x16x16 latent) on random crops of scikit-image pictures,
   loss L1 + L2 + kl_weight * KL, AdamW with a cosine learning-rate decay.
2. ``export-vae``: set ``scaling_factor`` so that scaled posterior-mode latents have unit standard deviation
   (the role of SD's 0.18215), then ``save_pretrained`` into ``decinv/tiny/weights/vae``.
3. ``unet``: a diffusers ``UNet2DModel`` trained with the usual epsilon-prediction loss on the scaled latents of
   training crops, noise added by a ``DDIMScheduler``; exported with the scheduler into ``decinv/tiny/weights``.

The training log (losses, held-out PSNR, wall time, hardware) is written to ``weights/training_log.json``; the model
card renders it.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
from tqdm import tqdm

from decinv.tiny import data

WEIGHTS = Path(__file__).parent / "weights"

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=16,
    sample_size=64,
)
UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(48, 96, 96),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=16,
    attention_head_dim=32,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    mse = ((a.clamp(-1, 1) - b) ** 2).flatten(1).mean(1)
    return float((10 * torch.log10(4 / mse)).mean())


@torch.no_grad()
def heldout_psnr(vae, device: str) -> float:
    """Reconstruction PSNR D(mode E(x)) on the fixed held-out crops."""
    x = data.heldout_crops().to(device)
    return psnr_db(vae.decode(vae.encode(x).latent_dist.mode()).sample, x)


def _load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, dict, torch.Generator]:
    generator = torch.Generator()
    if not path.exists():
        return 0, {"loss": [], "heldout_psnr": [], "seconds": 0.0}, generator.manual_seed(0)
    state = torch.load(path, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    # The VAE's posterior sample draws from torch's global generators: restore them too, so a resumed run is
    # bit-for-bit the run that was interrupted (checked by tests/test_tiny_train.py).
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"], state["log"], generator


def _save_checkpoint(path: Path, step, model, optimizer, scheduler, log, generator) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        dict(step=step, model=model.state_dict(), optimizer=optimizer.state_dict(),
             scheduler=scheduler.state_dict(), log=log, generator=generator.get_state(), torch_rng=torch.get_rng_state(),
             cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None),
        tmp,
    )
    tmp.replace(path)  # never leave a half-written checkpoint


def _cosine(optimizer, steps: int, warmup: int = 100):
    def factor(i):
        if i < warmup:
            return (i + 1) / warmup
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (i - warmup) / max(1, steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _optimise(loss, optimizer, scheduler, step: int, running: list, log: dict, every: int = 50) -> None:
    """One optimiser + scheduler step; appends the mean loss of each ``every`` steps to ``log["loss"]``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    running.append(loss.item())
    if (step + 1) % every == 0:
        log["loss"].append([step + 1, sum(running) / len(running)])
        running.clear()


def train_vae(work: Path, steps: int, batch: int, lr: float, kl_weight: float, device: str, every: int) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**VAE_CONFIG).to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = _cosine(optimizer, steps)
    ckpt = work / "vae.pt"
    start, log, generator = _load_checkpoint(ckpt, vae, optimizer, scheduler)
    levels = data.pyramid(data.TRAIN_IMAGES)
    t0, running = time.perf_counter() - log["seconds"], []
    for step in tqdm(range(start, steps), initial=start, total=steps, desc="vae", mininterval=5):
        x = data.random_crops(levels, batch, generator).to(device)
        posterior = vae.encode(x).latent_dist
        y = vae.decode(posterior.sample(generator=None)).sample
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = (y - x).abs().mean() + ((y - x) ** 2).mean() + kl_weight * kl
        _optimise(loss, optimizer, scheduler, step, running, log)
        if (step + 1) % every == 0 or step + 1 == steps:
            log["heldout_psnr"].append([step + 1, heldout_psnr(vae.eval(), device)])
            vae.train()
            log["seconds"] = time.perf_counter() - t0
            tqdm.write(f"vae step {step + 1}: loss {loss.item():.4f}, held-out PSNR {log['heldout_psnr'][-1][1]:.2f} dB")
            _save_checkpoint(ckpt, step + 1, vae, optimizer, scheduler, log, generator)
    log["seconds"] = time.perf_counter() - t0
    _save_checkpoint(ckpt, steps, vae, optimizer, scheduler, log, generator)


@torch.no_grad()
def export_vae(work: Path, out: Path, n_crops: int = 2048) -> None:
    """Fix the scaling factor on training crops and write the VAE in save_pretrained layout."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**VAE_CONFIG)
    vae.load_state_dict(torch.load(work / "vae.pt", weights_only=False)["model"])
    vae.eval()
    crops = data.train_crops(n_crops, seed=7)
    latents = torch.cat([vae.encode(c).latent_dist.mode() for c in crops.split(256)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    vae.save_pretrained(out / "vae", safe_serialization=True)


def train_unet(work: Path, out: Path, steps: int, batch: int, lr: float, n_latents: int, device: str, every: int) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    if not (out / "vae" / "config.json").exists():
        raise FileNotFoundError(f"no exported VAE in {out / 'vae'}: run the 'vae' and 'export-vae' stages first "
                                f"(or 'all'), with the same --out.")
    vae = AutoencoderKL.from_pretrained(out / "vae", local_files_only=True).to(device).eval()
    latents_path = work / "latents.pt"
    if latents_path.exists():
        latents = torch.load(latents_path)
    else:
        with torch.no_grad():
            crops = data.train_crops(n_latents, seed=11)
            latents = torch.cat(
                [vae.encode(c.to(device)).latent_dist.mode().cpu() for c in tqdm(crops.split(256), desc="latents")]
            ) * vae.config.scaling_factor
        torch.save(latents, latents_path)
    noise_scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
    unet = UNet2DModel(**UNET_CONFIG).to(device)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = _cosine(optimizer, steps)
    ckpt = work / "unet.pt"
    start, log, generator = _load_checkpoint(ckpt, unet, optimizer, scheduler)
    t0, running = time.perf_counter() - log["seconds"], []
    for step in tqdm(range(start, steps), initial=start, total=steps, desc="unet", mininterval=5):
        z0 = latents[torch.randint(len(latents), (batch,), generator=generator)].to(device)
        noise = torch.randn(z0.shape, generator=generator).to(device)
        t = torch.randint(noise_scheduler.config.num_train_timesteps, (batch,), generator=generator).to(device)
        loss = ((unet(noise_scheduler.add_noise(z0, noise, t), t).sample - noise) ** 2).mean()
        _optimise(loss, optimizer, scheduler, step, running, log)
        if (step + 1) % every == 0 or step + 1 == steps:
            log["seconds"] = time.perf_counter() - t0
            tqdm.write(f"unet step {step + 1}: loss {loss.item():.4f}")
            _save_checkpoint(ckpt, step + 1, unet, optimizer, scheduler, log, generator)
    log["seconds"] = time.perf_counter() - t0
    _save_checkpoint(ckpt, steps, unet, optimizer, scheduler, log, generator)
    unet.cpu().save_pretrained(out / "unet", safe_serialization=True)
    noise_scheduler.save_pretrained(out / "scheduler")


def write_log(work: Path, args: argparse.Namespace) -> None:
    logs = {name: torch.load(work / f"{name}.pt", weights_only=False)["log"] for name in ("vae", "unet")}
    logs["settings"] = {k: v for k, v in vars(args).items() if k not in ("work", "out")}
    logs["hardware"] = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    (args.out / "training_log.json").write_text(json.dumps(logs, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["vae", "export-vae", "unet", "all"])
    parser.add_argument("--work", type=Path, default=Path("tiny-training"), help="checkpoint folder (resumable)")
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="where the exported model goes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    # Defaults: the settings the bundled weights were trained with (weights/training_log.json, 1 CPU thread).
    parser.add_argument("--vae-steps", type=int, default=5500)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-lr", type=float, default=2e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-4)
    parser.add_argument("--unet-steps", type=int, default=2000)
    parser.add_argument("--unet-batch", type=int, default=64)
    parser.add_argument("--unet-lr", type=float, default=1e-3)
    parser.add_argument("--unet-latents", type=int, default=16384)
    parser.add_argument("--every", type=int, default=250, help="checkpoint / evaluation interval in steps")
    parser.add_argument("--scale-crops", type=int, default=2048, help="training crops that fix scaling_factor")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage in ("vae", "all"):
        train_vae(args.work, args.vae_steps, args.vae_batch, args.vae_lr, args.kl_weight, args.device, args.every)
    if args.stage in ("export-vae", "all"):
        export_vae(args.work, args.out, args.scale_crops)
    if args.stage in ("unet", "all"):
        train_unet(args.work, args.out, args.unet_steps, args.unet_batch, args.unet_lr, args.unet_latents, args.device, args.every)
    if args.stage == "all":
        write_log(args.work, args)


if __name__ == "__main__":
    main()
