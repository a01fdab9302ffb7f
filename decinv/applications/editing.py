"""Background-preserving editing of an image whose diffusion trajectory must be recovered (paper Sec. 5.2, Fig. 4).

The paper edits real images with Patashnik et al.'s method [patashnik2023localizing], which needs the *whole*
latent trajectory z_T, ..., z_0 of the sampler that made the image. For an image x of unknown origin the trajectory
is recovered by inversion: decoder inversion x -> z_0_hat (encoder, gradient-based or gradient-free), then DDIM
inversion z_0_hat -> z_T_hat. The background of the edited image can only be as faithful as that recovered
trajectory, so the edit is a readout of decoder-inversion accuracy, as the watermark is in `decinv.applications.watermark`.

The edit implemented here is the blended-latent idea of Avrahami et al. [avrahami2023blended], on an
unconditional LDM: a latent mask m (1 = edit, 0 = keep) selects a region that is re-sampled from fresh noise,
and after every DDIM step the background is overwritten by the trajectory's latent at the same noise level,

    z_edit_T     = m * noise + (1 - m) * z_T
    z_edit_{i+1} = m * DDIM_step(z_edit_i, t_i) + (1 - m) * z_{i+1}        for i = 0 .. S-1,

so the returned z_edit_0 equals the trajectory's z_0 outside the mask, bit for bit. Inside it the UNet invents
new content that must agree with the background it sees at every noise level; that is why the whole trajectory,
not only z_0, is needed. Differences from Patashnik et al.: they edit with a text-to-image model, change the
object by mixing prompts in the cross-attention layers over an interval of denoising steps, and derive the
region from attention maps; here there is no text (the tiny LDM is unconditional), the change is new noise, and
the region is a given box. What both share, and what the paper's Fig. 4 probes, is that the unedited part is taken
from the image's own trajectory at every step.

Shapes: latents (B, C, h, w); a trajectory holds S + 1 of them, index 0 = z_T (noisiest), index S = z_0; masks
are float (1 or B, 1, h, w) at latent resolution. Images are (B, 3, H, W) in [-1, 1] with H = f h.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from decinv.core.metrics import mean_ci, nmse_db
from decinv.core.solvers import invert
from decinv.generation.diffusion import Trajectory, check_scheduler, ddim_invert, ddim_sample
from decinv.plotting import error_map, to_display

__all__ = ["Trajectory", "sample_trajectory", "inversion_trajectory", "resampled_trajectory", "box_mask",
           "check_mask", "pixel_mask", "blended_edit", "background_errors", "calibrate", "matched_iterations",
           "calibrate_together", "summarise", "compare", "Comparison", "paired_difference", "paired_verdict", "dilate",
           "show_fig4"]


def sample_trajectory(unet, scheduler, z_T: torch.Tensor, steps: int = 50) -> Trajectory:
    """The *true* trajectory of a generated image: `decinv.generation.diffusion.ddim_sample` keeping every latent.

    ``sample_trajectory(...).z_0`` equals ``ddim_sample(unet, scheduler, z_T, steps)`` bit for bit.
    """
    return ddim_sample(unet, scheduler, z_T, steps, return_trajectory=True, what="sample_trajectory")


def inversion_trajectory(unet, scheduler, z_0: torch.Tensor, steps: int = 50) -> Trajectory:
    """Naive DDIM inversion from z_0 (`decinv.generation.diffusion.ddim_invert`), every latent kept, in sampling order.

    The k-th latent after z_0 sits at the noise level of the sampling trajectory's latent S - k, so the list is
    reversed to match ``sample_trajectory``: ``z_0`` is the input itself (bit for bit) and ``z_T`` equals
    ``ddim_invert(unet, scheduler, z_0, steps)``.
    """
    return ddim_invert(unet, scheduler, z_0, steps, return_trajectory=True, what="inversion_trajectory")


@torch.no_grad()
def resampled_trajectory(unet, scheduler, z_0: torch.Tensor, steps: int = 50) -> Trajectory:
    """Invert z_0 to z_T_hat with naive DDIM, then sample again from z_T_hat: a trajectory the sampler really takes.

    Its z_0 is the DDIM round trip of the input, not the input: with an exact diffusion inversion the two would
    coincide with `inversion_trajectory`; with naive DDIM they differ by the round-trip error.
    """
    z_T = inversion_trajectory(unet, scheduler, z_0, steps).z_T
    traj = sample_trajectory(unet, scheduler, z_T, steps)
    traj.how = f"naive DDIM-{steps} inversion, then DDIM-{steps} sampling"
    return traj


TRAJECTORIES = {"inversion": inversion_trajectory, "resampled": resampled_trajectory}


def box_mask(side: int | tuple[int, int], box=(0.25, 0.75, 0.25, 0.75)) -> torch.Tensor:
    """A (1, 1, h, w) float mask, 1 inside the box (top, bottom, left, right) given as fractions of the sides.

    Edges are rounded to whole latent cells; the box must keep at least one cell inside and one outside.
    """
    h, w = (side, side) if isinstance(side, int) else side
    if len(box) != 4 or not all(0 <= float(b) <= 1 for b in box) or box[0] >= box[1] or box[2] >= box[3]:
        raise ValueError(f"box must be (top, bottom, left, right) fractions with 0 <= top < bottom <= 1 and "
                         f"0 <= left < right <= 1, got {box!r}")
    top, bottom, left, right = (round(b * n) for b, n in zip(box, (h, h, w, w)))
    mask = torch.zeros(1, 1, h, w, dtype=torch.float32)
    mask[..., top:bottom, left:right] = 1
    if not 0 < mask.sum() < h * w:
        raise ValueError(f"box {box!r} on a {h}x{w} latent covers {int(mask.sum())} of {h * w} cells; "
                         "make it cover at least one cell and leave at least one out")
    return mask


def check_mask(mask: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Validate a latent-resolution mask against latents (B, C, h, w); return it as float (1 or B, 1, h, w).

    Accepts (h, w), (1|B, h, w) or (1|B, 1, h, w) with values in [0, 1] (bool is fine). A pixel-resolution mask
    is refused with the factor to downsample by.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    b, _, h, w = latents.shape
    m = mask
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1 or m.shape[0] not in (1, b) or m.shape[-2:] != (h, w):
        hint = ""
        if mask.ndim >= 2 and mask.shape[-1] % w == 0 and mask.shape[-2] % h == 0 and mask.shape[-1] > w:
            f = mask.shape[-1] // w
            hint = (f" It looks like a pixel mask: a latent cell covers {f}x{f} pixels, so downsample it, e.g. "
                    f"F.max_pool2d(mask.float(), {f}) for a (1, 1, H, W) mask.")
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit latents {tuple(latents.shape)}: pass "
                         f"(h, w) = ({h}, {w}), (1|B, {h}, {w}) or (1|B, 1, {h}, {w}) at latent resolution, "
                         f"with B = {b}.{hint}")
    m = m.to(latents.device, latents.dtype)
    if not torch.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise ValueError("mask values must lie in [0, 1] (1 = edit, 0 = keep the background)")
    return m


def dilate(mask: torch.Tensor, cells: int) -> torch.Tensor:
    """Grow a (N, 1, h, w) latent mask by ``cells`` latent cells in every direction (a square structuring element).

    Used to leave a margin around the edit when measuring the background: the decoder's convolutions carry the
    edit a few pixels past the mask's edge even for the oracle (see the chapter).
    """
    if cells < 0:
        raise ValueError(f"cells must be >= 0, got {cells}")
    return F.max_pool2d(mask, 2 * cells + 1, stride=1, padding=cells) if cells else mask


def pixel_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """A latent mask (…, h, w) upsampled to pixels (…, f h, f w) by repeating each cell f x f times."""
    return mask.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


@torch.no_grad()
def blended_edit(unet, scheduler, trajectory: Trajectory, mask: torch.Tensor, noise: torch.Tensor, *,
                 return_trajectory: bool = False) -> torch.Tensor | Trajectory:
    """Re-sample the masked region from ``noise`` while the background follows ``trajectory`` (module docstring).

    ``trajectory``: from `sample_trajectory` (the oracle) or recovered from an image; its timesteps define the
    DDIM grid. ``mask`` (1 = edit) at latent resolution, see `check_mask`; ``noise`` (B, C, h, w), the new z_T
    inside the mask. Returns the edited z_0 (B, C, h, w). With a mask of zeros this returns ``trajectory.z_0``;
    with a mask of ones, plain DDIM sampling from ``noise``. ``return_trajectory=True`` returns the edit's whole
    `Trajectory` instead of its z_0.
    """
    z_T = trajectory.z_T
    if noise.shape != z_T.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, the trajectory's latents {tuple(z_T.shape)}")
    m = check_mask(mask, z_T)
    check_scheduler(scheduler, trajectory.steps)
    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(trajectory.steps, device=z_T.device)
    if not torch.equal(sched.timesteps.cpu(), trajectory.timesteps.cpu()):
        raise ValueError("the trajectory was made on another DDIM grid than this scheduler's "
                         f"{trajectory.steps}-step one; build it with the same scheduler")
    keep = 1 - m
    start = m * noise.to(z_T.dtype) + keep * z_T
    edit = ddim_sample(unet, scheduler, start, trajectory.steps, return_trajectory=return_trajectory,
                       after_step=lambda i, z: m * z + keep * trajectory.latents[i + 1], what="blended_edit")
    if return_trajectory:
        edit.how = f"blended edit of: {trajectory.how}"
    return edit


def background_errors(edited: torch.Tensor, x: torch.Tensor, mask_px: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image errors of ``edited`` against the original ``x`` over the background (where ``mask_px`` is 0).

    ``edited``, ``x``: (B, 3, H, W) in [-1, 1]; ``mask_px``: (1|B, 1, H, W), 1 = edited region. Returns (B,)
    tensors: ``nmse_db`` = 10 log10(sum_bg (e - x)^2 / sum_bg x^2) and ``psnr_db`` = 10 log10(2^2 / mean_bg
    (e - x)^2), the means taken over background pixels and channels only.
    """
    if edited.shape != x.shape or mask_px.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"edited {tuple(edited.shape)}, x {tuple(x.shape)} and mask {tuple(mask_px.shape)} "
                         "must share batch and pixel size")
    bg = (1 - mask_px.to(x.device, torch.float64)).expand(x.shape[0], 3, *x.shape[-2:])
    diff2 = ((edited.double().clamp(-1, 1) - x.double()) ** 2 * bg).flatten(1).sum(1)
    ref2 = (x.double() ** 2 * bg).flatten(1).sum(1)
    count = bg.flatten(1).sum(1)
    return {"nmse_db": 10 * torch.log10(diff2 / ref2),
            "psnr_db": 10 * torch.log10(4.0 / (diff2 / count))}


def calibrate(run, lengths=(1, 3), repeats: int = 1) -> tuple[float, float]:
    """Fit seconds = fixed + per_iteration * steps from timed calls ``run(steps)`` (each returns seconds).

    ``run(lengths[0])`` is called once more first, untimed, to warm up; each length is then timed ``repeats``
    times and the fastest time kept (on a shared machine, load only ever adds time). Returns (fixed, per_iteration).
    """
    return calibrate_together({"run": (run, lengths, repeats)})["run"]


def calibrate_together(runs: dict) -> dict[str, tuple[float, float]]:
    """`calibrate` for several methods at once, interleaved: ``runs`` maps a name to (run, lengths, repeats).

    All are warmed up first; then, round by round, each method still owed a repeat is timed at both of its lengths,
    so that a burst of load on a shared machine hits every method rather than one. Returns name -> (fixed, per).
    Where the longer run was not slower (load noise on a busy machine), the fit is (0, its time / its length):
    a slope near zero would otherwise match a budget with millions of iterations.
    """
    times = {}
    for name, (run, (a, b), repeats) in runs.items():
        if not 0 <= a < b or repeats < 1:
            raise ValueError(f"{name}: need two lengths 0 <= a < b and repeats >= 1, got {(a, b)!r}, {repeats!r}")
        run(a)
        times[name] = ([], [])
    for round_ in range(max(r for _, _, r in runs.values())):
        for name, (run, (a, b), repeats) in runs.items():
            if round_ < repeats:
                times[name][0].append(run(a))
                times[name][1].append(run(b))
    out = {}
    for name, (run, (a, b), _) in runs.items():
        ta, tb = min(times[name][0]), min(times[name][1])
        if tb > ta:
            per = (tb - ta) / (b - a)
            out[name] = (max(ta - per * a, 0.0), per)
        else:  # load noise hid the slope: charge the longer run's whole time to its iterations
            out[name] = (0.0, max(tb / b, 1e-9))
    return out


def matched_iterations(budget_s: float, fixed_s: float, per_iteration_s: float, minimum: int = 1) -> int:
    """Iterations whose predicted time fixed + k * per_iteration is closest to ``budget_s`` (at least ``minimum``).

    This is how the paper matched its Fig. 4 rows: iteration counts adjusted so that the run times agree.
    """
    if per_iteration_s <= 0 or budget_s <= 0:
        raise ValueError(f"budget and time per iteration must be positive, got {budget_s}, {per_iteration_s}")
    return max(minimum, int(round((budget_s - fixed_s) / per_iteration_s)))


@dataclass
class Row:
    """One method's results over the images: per-image arrays and the decoder inversion's wall time."""

    label: str
    method: str
    bits: int | None
    iterations: int | None
    seconds: float | None
    metrics: dict[str, np.ndarray] = field(default_factory=dict)


def summarise(rows: list[Row]):
    """A pandas table: one line per method, mean ± 95 % t-interval of every per-image metric (`decinv.mean_ci`)."""
    import pandas as pd

    out = []
    for r in rows:
        line = {"method": r.label, "iterations": "–" if r.iterations is None else r.iterations,
                "inversion time (s)": math.nan if r.seconds is None else r.seconds}
        for name, values in r.metrics.items():
            if np.all(np.isneginf(values)):
                line[name] = "exact"
                continue
            mean, half = mean_ci(values)
            line[name] = f"{mean:.2f} ± {half:.2f}" if np.isfinite(half) else f"{mean:.2f}"
        out.append(line)
    return pd.DataFrame(out).set_index("method")


def paired_difference(a: Row, b: Row, metric: str) -> tuple[float, float]:
    """Mean and 95 % t-interval half-width of the per-image difference a - b of ``metric`` (same images)."""
    d = np.asarray(a.metrics[metric], float) - np.asarray(b.metrics[metric], float)
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{metric}: differences are not finite for {a.label!r} - {b.label!r}")
    return mean_ci(d)


def paired_verdict(a: Row, b: Row, metric: str, lower_is_better: bool = True) -> tuple[str, float, float]:
    """Is ``a`` better than ``b`` on ``metric`` over the same images? ("better" | "worse" | "undecided", mean, half).

    Decided only when the 95 % t-interval of the per-image difference a - b excludes zero.
    """
    mean, half = paired_difference(a, b, metric)
    if not np.isfinite(half) or abs(mean) <= half:
        return "undecided", mean, half
    return ("better" if (mean < 0) == lower_is_better else "worse"), mean, half


def latent_nmse_db(z_hat: torch.Tensor, z_true: torch.Tensor) -> np.ndarray:
    """Per-image NMSE (dB) as a float numpy array; -inf where the latents agree exactly."""
    with np.errstate(divide="ignore"):
        return nmse_db(z_hat.float(), z_true.float()).cpu().numpy()


@dataclass
class Comparison:
    """Everything `compare` measured: one `Row` per method, decoded edits for the figure, the timing plan."""

    rows: list[Row]
    edits: dict[str, torch.Tensor]
    plan: list[dict]
    trajectory: str

    def table(self):
        """Mean ± 95 % interval per method (see `summarise`)."""
        return summarise(self.rows)

    def row(self, label: str) -> Row:
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(f"no row {label!r}; rows are {[r.label for r in self.rows]}")

    def mean(self, label: str, metric: str) -> float:
        return float(np.mean(self.row(label).metrics[metric]))

    def at_budget(self, i: int) -> dict[str, Row]:
        """The rows run at budget ``i`` (0-based), keyed "Grad-free 32-bit", "Grad-based", "Grad-free 16-bit"."""
        entry = self.plan[i]
        out = {}
        for key, k in entry.items():
            if key.endswith(": iterations"):
                name = key[: -len(": iterations")]
                out[name] = self.row(f"{name}, {k} it.")
        return out

    def plan_table(self):
        """The timing plan: per budget, each method's calibrated seconds per iteration, iterations, measured s."""
        import pandas as pd

        return pd.DataFrame(self.plan).set_index("budget").T


def _label(method: str, bits: int | None = None, iterations: int | None = None) -> str:
    name = {"encoder": "Encoder", "gradient-adam": "Grad-based", "gradfree-adam": "Grad-free"}[method]
    if bits is not None and method == "gradfree-adam":
        name += f" {bits}-bit"
    return name if iterations is None else f"{name}, {iterations} it."


@torch.no_grad()
def compare(x: torch.Tensor, oracle: Trajectory, model, pipeline, mask: torch.Tensor, noise: torch.Tensor, *,
            budgets=(50, 100), half_dtype: torch.dtype | None = torch.float16, trajectory: str = "inversion",
            margin: int = 1, grad_lr: float = 0.1, gradfree_lr: float = 0.01, calibration=((2, 8), 2),
            calibration_16bit=((1, 3), 1), log=print) -> Comparison:
    """Fig. 4 measured: edit ``x`` through the oracle trajectory and through trajectories recovered by each method.

    ``x`` (B, 3, H, W): the 8-bit images; ``oracle``: their true trajectories (`sample_trajectory`), whose z_0 is
    the true z*. ``budgets``: gradient-free 32-bit iterations (paper: 50 and 100). Time budgets are matched the
    way the paper did, by adjusting iteration counts "to match the execution time": every iterative method is
    first timed on these images, interleaved (`calibrate_together`: fixed + per-iteration seconds; ``calibration`` = (lengths, repeats)
    for the 32-bit methods, ``calibration_16bit`` for 16-bit, which is slow on a CPU), the budget is gradient-free
    32-bit's predicted time at n iterations, and the gradient-based and 16-bit gradient-free iteration counts are
    the ones predicted to take as long (`matched_iterations`). Each row then records its own measured time. ``half_dtype``: the 16-bit type (None skips the 16-bit rows), run on a 16-bit copy of the
    model (``model`` itself is left in float32). Learning rates and schedules are the paper's (`decinv.method_options`).

    Each recovered z_0_hat goes through naive DDIM inversion on the oracle's grid (``trajectory``: "inversion"
    keeps the inversion's own latents, "resampled" samples again from z_T_hat), then `blended_edit` with the same
    ``mask`` and ``noise``. Per image: background NMSE and PSNR of the decoded edit against x outside the mask grown
    by ``margin`` latent cells (`dilate`), NMSE of z_0_hat against z* and of z_T_hat against the true z_T, and the
    NMSE of the edit against the oracle's edit inside the mask (how much the recovered trajectory changes the new
    content). Returns a `Comparison`.
    """

    if trajectory not in TRAJECTORIES:
        raise ValueError(f"trajectory must be one of {', '.join(TRAJECTORIES)}, got {trajectory!r}")
    if model.dtype != torch.float32:
        raise ValueError(f"compare expects the model in float32 (it makes its own 16-bit copy), got {model.dtype}")
    if not budgets or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in budgets):
        raise ValueError(f"budgets must be positive gradient-free iteration counts, e.g. [50, 100]; got {budgets!r}")
    unet, scheduler = pipeline.unet, pipeline.scheduler
    steps = oracle.steps
    m = check_mask(mask, oracle.z_T)
    m_px, bg_px = pixel_mask(m, model.downsample), pixel_mask(dilate(m, margin), model.downsample)
    if bool((bg_px == 1).all()):
        raise ValueError(f"the mask grown by margin={margin} cells covers the whole image: no background is left "
                         "to measure; use a smaller box or margin")
    z_true, zT_true = oracle.z_0, oracle.z_T
    oracle_edit = model.decode(blended_edit(unet, scheduler, oracle, m, noise))

    def metrics(edited, z0_hat, zT_hat):
        bg = background_errors(edited, x, bg_px)
        # both sides clamped, as displayed: the oracle's decoded edit may overshoot [-1, 1] too
        inside = background_errors(edited, oracle_edit.clamp(-1, 1), 1 - m_px)["nmse_db"].numpy()
        return {"background NMSE (dB)": bg["nmse_db"].numpy(), "background PSNR (dB)": bg["psnr_db"].numpy(),
                "z0 NMSE (dB)": latent_nmse_db(z0_hat, z_true), "zT NMSE (dB)": latent_nmse_db(zT_hat, zT_true),
                "edit vs oracle, inside (dB)": np.where(np.isnan(inside), -np.inf, inside)}

    rows = [Row("Oracle (true trajectory)", "oracle", None, None, None, metrics(oracle_edit, z_true, zT_true))]
    edits, plan = {"Oracle": oracle_edit}, []

    # A 16-bit copy, never a cast of `model` in place: fp32 -> fp16 -> fp32 would round the caller's weights.
    half = copy.deepcopy(model).to(dtype=half_dtype) if half_dtype is not None else None

    def run(method, iterations, dtype):
        options = {"gradient-adam": {"lr": grad_lr}, "gradfree-adam": {"lr": gradfree_lr}}.get(method, {})
        return invert(x, model if dtype == torch.float32 else half, method, iterations, progress=False, **options)

    def add(method, iterations, dtype, bits):
        r = run(method, iterations, dtype)
        traj = TRAJECTORIES[trajectory](unet, scheduler, r.z.float(), steps)
        edited = model.decode(blended_edit(unet, scheduler, traj, m, noise))
        label = _label(method, bits, iterations)
        rows.append(Row(label, method, bits, iterations, r.seconds, metrics(edited, r.z, traj.z_T)))
        edits[label] = edited
        log(f"{label}: {r.seconds:.2f} s, background NMSE {rows[-1].metrics['background NMSE (dB)'].mean():.2f} dB")
        return r.seconds

    add("encoder", None, torch.float32, 32)
    runs = [("gradfree-adam", torch.float32, 32), ("gradient-adam", torch.float32, 32)]
    if half_dtype is not None:
        runs.append(("gradfree-adam", half_dtype, 16))
    fits = calibrate_together({(meth, bits): (lambda k, meth=meth, dt=dt: run(meth, k, dt).seconds,
                                              *(calibration_16bit if bits == 16 else calibration))
                               for meth, dt, bits in runs})
    fixed32, per32 = fits[("gradfree-adam", 32)]
    for n in budgets:
        budget = fixed32 + n * per32
        entry = {"budget": f"Grad-free 32-bit, {n} it.", "budget (s, predicted)": budget}
        for meth, dt, bits in runs:
            fixed, per = fits[(meth, bits)]
            k = n if (meth, bits) == ("gradfree-adam", 32) else matched_iterations(budget, fixed, per)
            seconds = add(meth, k, dt, bits)
            name = _label(meth, bits)
            entry[f"{name}: s per it."] = per
            entry[f"{name}: iterations"] = k
            entry[f"{name}: measured s"] = seconds
        plan.append(entry)
    return Comparison(rows, edits, plan, trajectory)


def show_fig4(x: torch.Tensor, edits: dict[str, torch.Tensor], mask_px: torch.Tensor, examples=(0, 1),
              gain: float = 5.0):
    """The paper's Fig. 4 layout: one row per method, per example the edited image and its error map x ``gain``.

    ``edits`` maps a row label to (B, 3, H, W) decoded edits; the first column pair shows the original x with the
    edit region outlined. The error map is `decinv.plotting.error_map`: |edit - x| in [0, 1] pixel units, times
    ``gain``, clipped, per colour channel.
    Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt


    labels = ["input x"] + list(edits)
    ncols = 2 * len(examples)
    fig, axes = plt.subplots(len(labels), ncols, figsize=(1.55 * ncols + 1.2, 1.55 * len(labels)), squeeze=False)
    m = mask_px[0, 0].cpu().numpy() if mask_px.shape[0] == 1 else None
    for j, k in enumerate(examples):
        mk = m if m is not None else mask_px[k, 0].cpu().numpy()
        for i, label in enumerate(labels):
            img = x[k] if i == 0 else edits[label][k]
            ax_img, ax_err = axes[i, 2 * j], axes[i, 2 * j + 1]
            ax_img.imshow(to_display(img))
            if i == 0:
                ax_img.contour(mk, levels=[0.5], colors="yellow", linewidths=1)
                ax_err.imshow(mk, cmap="gray", vmin=0, vmax=1)
            else:
                ax_err.imshow(to_display(error_map(img, x[k], gain), vrange=(0, 1)))
            for ax in (ax_img, ax_err):
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
            if i == 0:
                ax_img.set_title(f"example {j + 1}: edited", fontsize=9)
                ax_err.set_title(f"edit region / error ×{gain:g}", fontsize=9)
            if j == 0:
                ax_img.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    return fig
