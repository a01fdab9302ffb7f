"""Train a bundled miniature latent diffusion model from scratch: ``python -m decinv.tiny.train all --recipe v2``.

Recipes: ``v2`` (the default model ``"tiny"``, also ``"tiny-v2"``: Stable Diffusion's x8 and 4 channels, 128x128
RGB -> 4x16x16, ReLU in the autoencoder's ResNet blocks), ``v1`` (``"tiny-v1"``, the default until 2026-11-30: x4,
64x64 RGB -> 4x16x16) and ``v2-silu`` (v2's geometry with SiLU, shipped as ``"tiny-v2"`` before the ReLU model; its
weights stay in ``weights/v2-silu``, loadable by path). Stages (each resumable from its checkpoint in ``--work``;
a finished stage is skipped):

1. ``vae``: a diffusers ``AutoencoderKL`` on random crops of scikit-image pictures, loss L1 + L2 + kl_weight * KL
   (optionally + an adaptive PatchGAN term, ``--adv-weight``), AdamW with a constant or cosine learning rate; every
   ``--every`` steps the held-out PSNR and the `regime_probe` are logged.
2. ``export-vae``: set ``scaling_factor`` so that scaled posterior-mode latents have unit standard deviation
   (the role of SD's 0.18215), then ``save_pretrained`` into ``decinv/tiny/weights/<recipe>/vae``.
3. ``unet``: a diffusers ``UNet2DModel`` trained with the usual epsilon-prediction loss on the scaled latents of
   training crops, noise added by a ``DDIMScheduler``, the `sample_probe` logged every ``--every`` steps; exported
   with the scheduler into ``decinv/tiny/weights/<recipe>``.

The training log (losses, held-out PSNR, probes, wall time, threads, hardware) is written to
``weights/<recipe>/training_log.json``; the model card renders it.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import decinv
from decinv import pictures as data
from decinv.core.models import LatentModel
from decinv.generation.diffusion import ddim_sample
from decinv.generation.experiments import quantize_8bit

WEIGHTS = Path(__file__).parent / "weights"

# v1 (the first bundled model): x4 downsampling, 64x64 images -> 4x16x16 latents (12 pixels numbers per latent number).
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
# v2: Stable Diffusion's geometry, x8 downsampling and 4 latent channels (48 numbers per latent number), so 128x128
# images -> 4x16x16 latents; the UNet is v1's (the latent grid is the same size).
VAE_CONFIG_V2 = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=16,
    sample_size=128,
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
def heldout_psnr(vae, device: str, size: int = data.CROP) -> float:
    """Reconstruction PSNR D(mode E(x)) on the fixed held-out crops (size x size)."""
    x = data.heldout_crops(size=size).to(device)
    return psnr_db(vae.decode(vae.encode(x).latent_dist.mode()).sample, x)


def _load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, dict, torch.Generator, dict]:
    """Restore a run from ``path`` if it exists: (step, log, data generator, the whole saved dict for the stage's
    own extras, e.g. the discriminator or the EMA; empty for a fresh run)."""
    generator = torch.Generator()
    if not path.exists():
        return 0, {"loss": [], "heldout_psnr": [], "seconds": 0.0}, generator.manual_seed(0), {}
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
    return state["step"], state["log"], generator, state


def _save_checkpoint(path: Path, step, model, optimizer, scheduler, log, generator, disc=None, d_opt=None,
                     ema=None) -> None:
    tmp = path.with_suffix(".tmp")
    extra = {} if disc is None else dict(disc=disc.state_dict(), d_opt=d_opt.state_dict())
    if ema is not None:
        extra["ema"] = ema.state_dict()
    torch.save(
        dict(step=step, model=model.state_dict(), optimizer=optimizer.state_dict(),
             scheduler=scheduler.state_dict(), log=log, generator=generator.get_state(), torch_rng=torch.get_rng_state(),
             cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None, **extra),
        tmp,
    )
    tmp.replace(path)  # never leave a half-written checkpoint


SCHEDULES = ("cosine", "constant", "constant-decay")
DECAY_FRACTION = 0.25  # "constant-decay": the cosine tail's share of the steps


def decay_start(steps: int) -> int:
    """First step of the cosine tail of the ``"constant-decay"`` schedule."""
    return steps - int(DECAY_FRACTION * steps)


def _lr_schedule(optimizer, steps: int, kind: str = "cosine", warmup: int = 100):
    """Linear warm-up over ``warmup`` steps, then ``"cosine"``: a half cosine from the peak down to 5 % of it at
    ``steps``; ``"constant"``: the peak to the end, the control for whether the decay is what takes the v2
    autoencoder out of the paper's regime (measured: it is not; weights/v2/probe-vae-constant-lr-*.json); or
    ``"constant-decay"``: the peak up to `decay_start`, then a half cosine to 5 % over the last quarter of the steps
    (up to that step it is the ``"constant"`` run, so a constant run can be resumed into it)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {kind!r}; choose one of {', '.join(SCHEDULES)}.")
    start = decay_start(steps) if kind == "constant-decay" else warmup  # where the cosine begins

    def factor(i):
        if i < warmup:
            return (i + 1) / warmup
        if kind == "constant" or i < start:
            return 1.0
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (i - start) / max(1, steps - start))))

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


RECIPES = {
    # size: the training/held-out crop side; vae: the AutoencoderKL config.
    "v1": dict(size=64, vae=VAE_CONFIG),
    # v2 (shipped): ReLU instead of SiLU in every ResNet block. With each SiLU's gate frozen at z*, the Jacobian of
    # E(D(.)) of the SiLU autoencoder lost its <Jv, v> < 0 directions on 7 of 8 crops
    # (weights/v2/jacobian-ablation.json); a ReLU's slope is its gate, and the ReLU run stayed in the paper's regime
    # as it trained (weights/v2/probe-vae-relu-constant-lr-1e-3*.json). diffusers keeps one SiLU before each
    # conv_out whatever act_fn says; the config reloads exactly, so the exported model is this one.
    "v2": dict(size=128, vae=dict(VAE_CONFIG_V2, act_fn="relu")),
    # the SiLU v2, shipped as "tiny-v2" until 2026-11-30: training records written before then call it "v2" and
    # call the ReLU recipe "v2-relu"
    "v2-silu": dict(size=128, vae=VAE_CONFIG_V2),
}


def _recipe(name: str) -> dict:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}.")
    return RECIPES[name]


class PatchDiscriminator(torch.nn.Module):
    """A small PatchGAN discriminator (Isola et al. 2017, as in latent-diffusion autoencoders): one logit per
    overlapping patch of about 34x34 pixels. Input (B, 3, H, W) in [-1, 1] -> logits (B, 1, H/4 - 2, W/4 - 2)."""

    def __init__(self, channels: int = 32):
        super().__init__()
        nn = torch.nn
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, 2, 1), nn.GroupNorm(8, 2 * channels), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 2 * channels, 4, 1, 1), nn.GroupNorm(8, 2 * channels), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 1, 4, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def adaptive_adversarial_weight(rec_loss, gen_loss, last_layer: torch.Tensor, cap: float = 1e4) -> torch.Tensor:
    """lambda = ||grad_w L_rec|| / (||grad_w L_gen|| + 1e-4) at the decoder's last layer w (Esser et al. 2021,
    Eq. 7, as SD's autoencoder is trained), so the adversarial gradient never outweighs the reconstruction's."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gen = torch.autograd.grad(gen_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gen.norm() + 1e-4)).clamp(0, cap).detach()


@torch.no_grad()
def regime_probe(vae, size: int, n: int = 8, horizons: tuple[int, ...] = (50,), jacobian: bool = False) -> dict:
    """Is the autoencoder in the paper's regime? On-manifold held-out instances (z* = E(x), x = 8-bit D(z*)):
    NMSE in dB of the encoder and of gradient-free Adam (lr 0.01, the paper's schedule, one run per horizon in
    ``horizons``, keys ``gradfree_adam_<h>_nmse_db``). Runs on a copy, with the scaling factor set from these
    latents (Adam's lr is in scaled-latent units). Cost: n images x sum(horizons) E+D passes.

    ``jacobian``: also `decinv.jacobian_extremes` of E(D(.)) at each z* (123 more E+D passes): keys
    ``jacobian_top`` and ``jacobian_leftmost``, per image (a negative leftmost quotient makes z* repel every forward
    step along its direction)."""
    import copy


    probe = copy.deepcopy(vae).float().cpu()
    x = data.heldout_crops(n, seed=77, size=size)
    mode = probe.encode(x).latent_dist.mode()
    probe.register_to_config(scaling_factor=float(1.0 / mode.std()))
    model = LatentModel(probe)
    z_true = model.encode(x)
    x8 = quantize_8bit(model.decode(z_true))
    out = {"encoder_nmse_db": float(decinv.nmse_db(decinv.invert(x8, model, "encoder", progress=False).z,
                                                  z_true).mean())}
    for steps in horizons:
        adam = decinv.invert(x8, model, "gradfree-adam", steps, lr=0.01, progress=False)
        out[f"gradfree_adam_{steps}_nmse_db"] = float(decinv.nmse_db(adam.z, z_true).mean())
    if jacobian:
        top, left = decinv.jacobian_extremes(lambda z: model.encode(model.decode(z), check=False), z_true)
        out.update(jacobian_top=top.tolist(), jacobian_leftmost=left.tolist())
    return out


@torch.no_grad()
def sample_probe(unet, vae, noise_scheduler, n: int = 16, ddim_steps: int = 50) -> dict:
    """Are the denoiser's samples where the encoder maps images? For n DDIM samples z* (fixed seed) and
    x = 8-bit D(z*): the encoder's NMSE in dB (on-manifold latents of held-out crops give about -20 dB for v2; a
    sample far off the encoder's manifold carries components no decoder inversion can recover) and the samples' std.
    Uses its own generator and copies of the networks, so training is unaffected."""
    import copy


    model = LatentModel(copy.deepcopy(vae).float().cpu())
    net = copy.deepcopy(unet).float().cpu().eval()
    side = int(net.config.sample_size)
    z_T = torch.randn(n, model.latent_channels, side, side, generator=torch.Generator().manual_seed(12345))
    z = ddim_sample(net, noise_scheduler, z_T, ddim_steps)
    x = quantize_8bit(model.decode(z))
    return {"encoder_nmse_db": float(decinv.nmse_db(model.encode(x), z).mean()), "sample_std": float(z.std())}


def train_vae(work: Path, steps: int, batch: int, lr: float, kl_weight: float, device: str, every: int,
              recipe: str = "v2", adv_weight: float = 0.0, adv_start: float = 0.5, probe: bool = True,
              schedule: str = "cosine", probe_horizons: tuple[int, ...] = (50,), snapshots: bool = False,
              probe_jacobian: bool = False) -> None:
    """Reconstruction L1 + L2 + kl_weight * KL; with ``adv_weight`` > 0, plus a hinge PatchGAN term from
    ``adv_start`` (fraction of the steps) on, weighted adaptively (`adaptive_adversarial_weight`) times adv_weight.
    AdamW at ``lr`` under `_lr_schedule` ``schedule``.
    Every ``every`` steps: held-out PSNR, and (``probe``) the `regime_probe` at ``probe_horizons`` (with
    ``probe_jacobian``, also its Jacobian spectrum), both written to the log; with ``snapshots`` the checkpoint is
    also kept as ``vae-step<N>.pt`` (copy one to ``vae.pt`` in a fresh work folder to export, resume or train a UNet
    from that point)."""
    from diffusers import AutoencoderKL

    spec = _recipe(recipe)
    torch.manual_seed(0)
    vae = AutoencoderKL(**spec["vae"]).to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = _lr_schedule(optimizer, steps, schedule)
    disc = d_opt = None
    if adv_weight > 0:
        # its own seed, outside torch's global generator: up to adv_start the run is bit for bit the run without
        # the adversarial term, so an ablation can start from that run's checkpoint
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            disc = PatchDiscriminator().to(device)
        d_opt = torch.optim.AdamW(disc.parameters(), lr=lr / 4, betas=(0.5, 0.9))
    ckpt = work / "vae.pt"
    start, log, generator, state = _load_checkpoint(ckpt, vae, optimizer, scheduler)
    if disc is not None and state:
        if "disc" in state:  # absent in a checkpoint of the run without the term (before adv_start)
            disc.load_state_dict(state["disc"])
            d_opt.load_state_dict(state["d_opt"])
        elif start > int(adv_start * steps):
            raise ValueError(f"{ckpt} is at step {start}, past adv_start, but has no discriminator: it is not a "
                             "checkpoint of this run.")
    log.setdefault("regime", [])
    # recipes v2 and v2-silu have the same parameter shapes, so a checkpoint of one loads silently into the other
    if state and json.dumps(log.get("vae_config", spec["vae"])) != json.dumps(spec["vae"]):
        raise ValueError(f"{ckpt} is a checkpoint of a different autoencoder ({log['vae_config']}) than recipe "
                         f"{recipe!r}'s; pass the recipe it was trained with or use a fresh --work.")
    log["vae_config"] = spec["vae"]
    resumable = log.get("lr_schedule", "cosine") == schedule or (  # logs before the option were all cosine
        log.get("lr_schedule") == "constant" and schedule == "constant-decay" and start <= decay_start(steps))
    if state and not resumable:
        raise ValueError(f"{ckpt} was trained with the {log.get('lr_schedule', 'cosine')!r} learning-rate schedule; "
                         f"resume it with --vae-schedule {log.get('lr_schedule', 'cosine')} or use a fresh --work.")
    log["lr_schedule"] = schedule
    if start < steps:  # per stage (stages may run with different settings); a finished stage keeps its own record
        log["threads"], log["device"] = torch.get_num_threads(), device
    levels = data.pyramid(data.TRAIN_IMAGES)
    t0, running = time.perf_counter() - log["seconds"], []
    first_adv = int(adv_start * steps)
    for step in tqdm(range(start, steps), initial=start, total=steps, desc="vae", mininterval=5):
        x = data.random_crops(levels, batch, generator, spec["size"], spec["size"]).to(device)
        posterior = vae.encode(x).latent_dist
        y = vae.decode(posterior.sample(generator=None)).sample
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        rec = (y - x).abs().mean() + ((y - x) ** 2).mean()
        loss = rec + kl_weight * kl
        if disc is not None and step >= first_adv:
            disc.requires_grad_(False)
            gen = -disc(y).mean()
            weight = adaptive_adversarial_weight(rec, gen, vae.decoder.conv_out.weight)
            loss = loss + adv_weight * weight * gen
            disc.requires_grad_(True)
        _optimise(loss, optimizer, scheduler, step, running, log)
        if disc is not None and step >= first_adv:
            d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(y.detach())).mean()
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
        if (step + 1) % every == 0 or step + 1 == steps:
            log["heldout_psnr"].append([step + 1, heldout_psnr(vae.eval(), device, spec["size"])])
            if probe:
                log["regime"].append([step + 1, regime_probe(vae, spec["size"], horizons=probe_horizons,
                                                                jacobian=probe_jacobian)])
            vae.train()
            log["seconds"] = time.perf_counter() - t0
            tqdm.write(f"vae step {step + 1}: loss {loss.item():.4f}, held-out PSNR {log['heldout_psnr'][-1][1]:.2f} dB, "
                       f"regime {log['regime'][-1][1] if probe else '-'}")
            _save_checkpoint(ckpt, step + 1, vae, optimizer, scheduler, log, generator, disc, d_opt)
            if snapshots:
                shutil.copyfile(ckpt, work / f"vae-step{step + 1}.pt")
    log["seconds"] = time.perf_counter() - t0
    _save_checkpoint(ckpt, steps, vae, optimizer, scheduler, log, generator, disc, d_opt)


@torch.no_grad()
def export_vae(work: Path, out: Path, n_crops: int = 2048, recipe: str = "v2") -> None:
    """Fix the scaling factor on training crops and write the VAE in save_pretrained layout."""
    from diffusers import AutoencoderKL

    spec = _recipe(recipe)
    vae = AutoencoderKL(**spec["vae"])
    vae.load_state_dict(torch.load(work / "vae.pt", weights_only=False)["model"])
    vae.eval()
    crops = data.train_crops(n_crops, seed=7, size=spec["size"])
    latents = torch.cat([vae.encode(c).latent_dist.mode() for c in crops.split(256)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    vae.save_pretrained(out / "vae", safe_serialization=True)


def train_unet(work: Path, out: Path, steps: int, batch: int, lr: float, n_latents: int, device: str, every: int,
               recipe: str = "v2", probe: bool = True, ema_decay: float = 0.0,
               channels: tuple[int, ...] | None = None) -> None:
    """Epsilon-prediction training of the latent UNet; every ``every`` steps (``probe``) the `sample_probe` of
    the current weights goes into the log (``log["samples"]``).

    ``channels``: the UNet's ``block_out_channels`` (three entries, each a multiple of 16), default
    ``UNET_CONFIG``'s (48, 96, 96); a wider denoiser is how the probes test whether the samples, not the
    autoencoder, keep a recipe out of the inversion regime.

    ``ema_decay`` > 0 keeps an exponential moving average of the weights (diffusers' ``EMAModel``, with its default
    warm-up ``min(decay, (1 + step) / (10 + step))``), as latent-diffusion training does; the probe and the exported
    UNet then use the averaged weights."""
    import copy

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

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
            crops = data.train_crops(n_latents, seed=11, size=_recipe(recipe)["size"])
            latents = torch.cat(
                [vae.encode(c.to(device)).latent_dist.mode().cpu() for c in tqdm(crops.split(256), desc="latents")]
            ) * vae.config.scaling_factor
        torch.save(latents, latents_path)
    noise_scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
    config = dict(UNET_CONFIG, **({"block_out_channels": tuple(channels)} if channels else {}))
    if len(config["block_out_channels"]) != 3 or any(c % 16 for c in config["block_out_channels"]):
        raise ValueError(f"channels must be three multiples of 16 (the norm groups), got {channels!r}.")
    unet = UNet2DModel(**config).to(device)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = _lr_schedule(optimizer, steps)
    ckpt = work / "unet.pt"
    start, log, generator, state = _load_checkpoint(ckpt, unet, optimizer, scheduler)
    ema = EMAModel(unet.parameters(), decay=ema_decay) if ema_decay > 0 else None
    if ema is not None and state:
        ema.load_state_dict(state["ema"])

    def averaged():
        if ema is None:
            return unet
        net = copy.deepcopy(unet)
        ema.copy_to(net.parameters())
        return net

    log.setdefault("samples", [])
    log["ema_decay"] = ema_decay
    log["block_out_channels"] = list(config["block_out_channels"])
    if start < steps:  # a finished stage called again keeps the record of the run that trained it
        log["threads"], log["device"] = torch.get_num_threads(), device
    t0, running = time.perf_counter() - log["seconds"], []
    for step in tqdm(range(start, steps), initial=start, total=steps, desc="unet", mininterval=5):
        z0 = latents[torch.randint(len(latents), (batch,), generator=generator)].to(device)
        noise = torch.randn(z0.shape, generator=generator).to(device)
        t = torch.randint(noise_scheduler.config.num_train_timesteps, (batch,), generator=generator).to(device)
        loss = ((unet(noise_scheduler.add_noise(z0, noise, t), t).sample - noise) ** 2).mean()
        _optimise(loss, optimizer, scheduler, step, running, log)
        if ema is not None:
            ema.step(unet.parameters())
        if (step + 1) % every == 0 or step + 1 == steps:
            if probe:
                log["samples"].append([step + 1, sample_probe(averaged(), vae, noise_scheduler)])
                unet.train()
            log["seconds"] = time.perf_counter() - t0
            tqdm.write(f"unet step {step + 1}: loss {loss.item():.4f}" +
                       (f", samples {log['samples'][-1][1]}" if probe else ""))
            _save_checkpoint(ckpt, step + 1, unet, optimizer, scheduler, log, generator, ema=ema)
    log["seconds"] = time.perf_counter() - t0
    _save_checkpoint(ckpt, steps, unet, optimizer, scheduler, log, generator, ema=ema)
    averaged().cpu().save_pretrained(out / "unet", safe_serialization=True)
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


# Per-recipe defaults: the settings the bundled weights were trained with (weights/<recipe>/training_log.json).
DEFAULTS = {
    "v1": dict(vae_steps=5500, vae_batch=16, vae_lr=2e-3, kl_weight=1e-4, adv_weight=0.0, adv_start=0.5,
               unet_steps=2000, unet_batch=64, unet_lr=1e-3, unet_latents=16384, every=250, ema_decay=0.0,
               vae_schedule="cosine"),
    # the shipped autoencoder was trained in three resumed stages: 3,000 steps at the constant rate (probes every
    # 500), continued to 6,000 (every 1,000), then the cosine tail from 6,000 to 8,000 (every 500); "constant-decay"
    # is the constant schedule up to its tail, so this one run is the same run, up to the probe points
    "v2": dict(vae_steps=8000, vae_batch=8, vae_lr=1e-3, kl_weight=1e-6, adv_weight=0.0, adv_start=0.5,
               unet_steps=3000, unet_batch=64, unet_lr=1e-3, unet_latents=8192, every=500, ema_decay=0.0,
               vae_schedule="constant-decay"),
    "v2-silu": dict(vae_steps=5000, vae_batch=8, vae_lr=2e-3, kl_weight=1e-6, adv_weight=0.0, adv_start=0.5,
                    unet_steps=3000, unet_batch=64, unet_lr=1e-3, unet_latents=8192, every=500, ema_decay=0.0,
                    vae_schedule="cosine"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["vae", "export-vae", "unet", "all"])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="v2",
                        help="v2 (default; bundled as 'tiny' and 'tiny-v2'): x8, 128x128, ReLU; v1 ('tiny-v1'): x4, "
                        "64x64; v2-silu: v2 with SiLU, shipped as 'tiny-v2' until 2026-11-30")
    parser.add_argument("--work", type=Path, default=None, help="checkpoint folder (resumable); "
                        "default tiny-training/<recipe>")
    parser.add_argument("--out", type=Path, default=None, help="where the exported model goes; "
                        "default decinv/tiny/weights/<recipe>")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    for name, kind in (("vae_steps", int), ("vae_batch", int), ("vae_lr", float), ("kl_weight", float),
                       ("adv_weight", float), ("adv_start", float), ("unet_steps", int), ("unet_batch", int),
                       ("unet_lr", float), ("unet_latents", int), ("every", int), ("ema_decay", float)):
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                            help=f"default: v2 {DEFAULTS['v2'][name]}, v1 {DEFAULTS['v1'][name]}")
    parser.add_argument("--vae-schedule", choices=SCHEDULES, default=None,
                        help="the autoencoder's learning rate after warm-up: constant-decay (v2's default: "
                        "constant, then a cosine over the last quarter), constant, or cosine decay (v1's and "
                        "v2-silu's)")
    parser.add_argument("--unet-channels", type=lambda v: tuple(int(c) for c in v.split(",")), default=None,
                        help="the UNet's block_out_channels, e.g. 64,128,128 (default 48,96,96)")
    parser.add_argument("--probe-horizons", type=lambda v: tuple(int(c) for c in v.split(",")), default=(50,),
                        help="gradient-free Adam horizons of the VAE's regime probe, e.g. 20,50,100,200 (default 50)")
    parser.add_argument("--probe-jacobian", action="store_true",
                        help="the regime probe also estimates the extremes of E(D(.))'s Jacobian spectrum per crop")
    parser.add_argument("--snapshots", action="store_true",
                        help="keep the VAE checkpoint of every probe step as vae-step<N>.pt in --work")
    parser.add_argument("--scale-crops", type=int, default=2048, help="training crops that fix scaling_factor")
    args = parser.parse_args(argv)
    for name, value in DEFAULTS[args.recipe].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.work = args.work or Path("tiny-training") / args.recipe
    args.out = args.out or WEIGHTS / args.recipe
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage in ("vae", "all"):
        train_vae(args.work, args.vae_steps, args.vae_batch, args.vae_lr, args.kl_weight, args.device, args.every,
                  args.recipe, args.adv_weight, args.adv_start, schedule=args.vae_schedule,
                  probe_horizons=args.probe_horizons, snapshots=args.snapshots,
                  probe_jacobian=args.probe_jacobian)
    if args.stage in ("export-vae", "all"):
        export_vae(args.work, args.out, args.scale_crops, args.recipe)
    if args.stage in ("unet", "all"):
        train_unet(args.work, args.out, args.unet_steps, args.unet_batch, args.unet_lr, args.unet_latents,
                   args.device, args.every, args.recipe, ema_decay=args.ema_decay, channels=args.unet_channels)
    if args.stage == "all":
        write_log(args.work, args)


if __name__ == "__main__":
    main()
