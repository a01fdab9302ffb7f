"""Facts taken from the paper (Hong, Jeon, Lee, Ryu, Chun; NeurIPS 2024; arXiv 2409.18442), each cited by section,
table or figure, so that no chapter types a paper number by hand.

Numbers are as printed; "paper-notes §N" points at the section of the project's notes that quotes them. Three kinds
of entries:

* **tables and figures**: `PAPER_S1` (+ `PAPER_S1_CI`, `PAPER_FIG3_MEMORY`), `PAPER_S2A` (+ `PAPER_S2A_CI`),
  `PAPER_S2B`, `PAPER_TABLE2`, `PAPER_FIG_S1`, `PAPER_FIG4`;
* **settings and hardware**: `SEC34`, `FIG5`, `GRADFREE_ADAM`, `GRADIENT_SCHEDULED`, `GRADIENT_FIXED`, `S1_IMAGES`,
  `PAPER_GPU`, `PAPER_MODEL`, `SD21_AUTOENCODER`, `PAPER_WATERMARK` (a few of these come from the official code,
  and say so);
* **lookups by data**: `s1_point`, `s1_setting`, `s2a_row` and `s2b_point` take the keys a grid row holds (method,
  bits, learning rate as a float, schedule as in `decinv.analysis.grid`, iterations) and return `PaperPoint` (NMSE
  dB, ± 95 % CI, seconds, GB), or None where the paper has no such setting, so a chapter never matches display
  strings; `as_printed` formats a number as the paper prints it (true minus sign).

Numbers the paper does not give are not here, with one exception kept apart at the end of the module and named as
ours: `SD21_ENCODER_NMSE_ESTIMATE`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

# ---------------------------------------------------------------------------------------------------- settings

# Sec. 4 / App. A.2.1: the practical settings of Fig. 3 and Table S1 (paper-notes §2.3-2.4), as `decinv.analysis.lab`
# Setting fields (lr a float; schedule None for a fixed lr, "paper" for the gradient-free warm-up / cosine / constant
# schedule, "warmup-cosine" for the gradient-based one).
GRADFREE_ADAM = {"lr": 0.01, "schedule": "paper"}  # gradient-free Adam, warm-up 1/10, cosine, constant after 8/10
GRADIENT_SCHEDULED = {"lr": 0.1, "schedule": "warmup-cosine"}  # gradient-based "0.1 scheduled", the setting of [14]
GRADIENT_FIXED = {"lr": 0.01, "schedule": None}  # gradient-based "0.01 fixed"

# Sec. 3.4 / Fig. 2: the cocoercivity check. Forward step and inertial KM with a fixed rho = 0.001, KM's alpha = 0.9,
# z_inf := z_300, x-axis min_k over k in [0, 100] of the Eq. 14 ratio, 100 instances per model and algorithm. The
# paper's finding is qualitative: "most of the instances" have the ratio > 0 for all k (no fraction, no beta given).
SEC34 = {"step_size": 0.001, "alpha": 0.9, "z_inf_step": 300, "window": 100, "instances": 100}

# Sec. 6.1 / Fig. 5 (paper-notes §4): the same check for gradient-free Adam "under Sec. 4 conditions, specifically
# with 16-bit precision and 50 iterations"; x-axis min_k over k in [0, 50], z_inf ~ z_300.
FIG5 = {"bits": 16, "iterations": 50, "window": 50, "z_inf_step": 300}

# Sec. 1 / Sec. 7 / [30]: 16-bit gradient-based inversion "is unimplementable, due to the underflow problem".
GRADIENT_16BIT = "unimplementable (underflow)"

# ---------------------------------------------------------------------------------------------------- Table S1

# Paper Table S1 (a/b/c) (paper-notes §5.4): per setting, ([(iterations, NMSE dB, runtime s per image; per video for
# LaVie), ...], peak memory GB). The GPU chapter draws it; the book build's GPU estimates (scripts/book_chapters.py)
# use its runtimes. Keys: (method, bits, the paper's lr column); `S1_SETTING` turns the lr column into Setting fields
# and `s1_point` looks a point up by those fields. The ± of every point is in `PAPER_S1_CI`.
PAPER_S1 = {
    "SD2.1": {
        ("gradient-adam", 32, "0.1 sched"): ([(20, -15.92, 6.11), (30, -17.84, 9.31), (50, -20.69, 15.7), (100, -24.82, 31.7)], 8.83),
        ("gradient-adam", 32, "0.01 fixed"): ([(20, -18.61, 6.29), (30, -19.51, 9.37), (50, -20.93, 16.0), (100, -23.00, 32.8)], 8.83),
        ("gradfree-adam", 32, "0.01 sched"): ([(20, -19.39, 3.34), (50, -20.84, 8.53), (100, -21.71, 17.7), (200, -21.85, 34.5)], 3.81),
        ("gradfree-adam", 16, "0.01 sched"): ([(20, -18.74, 1.91), (50, -20.82, 4.90), (100, -21.72, 9.56), (200, -21.86, 19.3)], 3.15)},
    "LaVie": {
        ("gradient-adam", 32, "0.1 sched"): ([(20, -17.35, 24.86), (30, -18.12, 37.07), (50, -19.58, 61.37), (100, -22.20, 122.31)], 64.7),
        ("gradient-adam", 32, "0.01 fixed"): ([(20, -19.06, 25.11), (30, -19.68, 37.11), (50, -20.66, 61.67), (100, -22.14, 122.46)], 64.7),
        ("gradfree-adam", 32, "0.01 sched"): ([(20, -20.21, 12.96), (50, -21.42, 32.17), (100, -21.58, 64.25), (200, -21.21, 128.34)], 11.7),
        ("gradfree-adam", 16, "0.01 sched"): ([(20, -19.86, 8.59), (50, -21.37, 21.19), (100, -21.52, 42.28), (200, -21.14, 83.45)], 7.13)},
    "InstaFlow": {
        ("gradient-adam", 32, "0.1 sched"): ([(20, -15.67, 6.29), (30, -16.22, 9.55), (50, -17.26, 16.12), (100, -19.15, 32.54)], 8.38),
        ("gradient-adam", 32, "0.01 fixed"): ([(20, -15.94, 6.30), (30, -16.40, 9.51), (50, -17.14, 15.92), (100, -18.33, 32.14)], 8.38),
        ("gradfree-adam", 32, "0.01 sched"): ([(20, -16.55, 3.17), (50, -17.46, 8.34), (100, -17.76, 16.90), (200, -17.81, 34.21)], 3.2),
        ("gradfree-adam", 16, "0.01 sched"): ([(20, -16.38, 1.89), (50, -17.46, 4.93), (100, -17.76, 9.99), (200, -17.82, 20.04)], 2.62)},
}

# Table S1 (a/b/c) (paper-notes §5.4): the "±" of every point of `PAPER_S1`, i.e. the half-width (dB) of the 95 %
# confidence interval of the mean NMSE over the 100 images, {iterations: half-width}, under the same keys. The paper
# does not give its CI formula (presumably 1.96 standard errors, paper-notes §5.2).
PAPER_S1_CI = {
    "SD2.1": {
        ("gradient-adam", 32, "0.1 sched"): {20: 0.44, 30: 0.55, 50: 0.73, 100: 1.08},
        ("gradient-adam", 32, "0.01 fixed"): {20: 0.49, 30: 0.55, 50: 0.67, 100: 0.85},
        ("gradfree-adam", 32, "0.01 sched"): {20: 0.54, 50: 0.66, 100: 0.77, 200: 0.82},
        ("gradfree-adam", 16, "0.01 sched"): {20: 0.48, 50: 0.66, 100: 0.77, 200: 0.82}},
    "LaVie": {
        ("gradient-adam", 32, "0.1 sched"): {20: 0.45, 30: 0.49, 50: 0.59, 100: 0.81},
        ("gradient-adam", 32, "0.01 fixed"): {20: 0.43, 30: 0.48, 50: 0.57, 100: 0.71},
        ("gradfree-adam", 32, "0.01 sched"): {20: 0.43, 50: 0.54, 100: 0.62, 200: 0.58},
        ("gradfree-adam", 16, "0.01 sched"): {20: 0.42, 50: 0.55, 100: 0.63, 200: 0.58}},
    "InstaFlow": {
        ("gradient-adam", 32, "0.1 sched"): {20: 0.48, 30: 0.53, 50: 0.62, 100: 0.78},
        ("gradient-adam", 32, "0.01 fixed"): {20: 0.48, 30: 0.52, 50: 0.59, 100: 0.70},
        ("gradfree-adam", 32, "0.01 sched"): {20: 0.53, 50: 0.63, 100: 0.68, 200: 0.70},
        ("gradfree-adam", 16, "0.01 sched"): {20: 0.51, 50: 0.63, 100: 0.68, 200: 0.71}},
}

# The lr column of Table S1 as Setting fields, per method: "0.1 sched" of the gradient-based method is the warm-up +
# cosine of [14], "0.01 sched" of the gradient-free one is the paper's own schedule (Sec. 4).
S1_SETTING = {("gradient-adam", "0.1 sched"): GRADIENT_SCHEDULED,
              ("gradient-adam", "0.01 fixed"): GRADIENT_FIXED,
              ("gradfree-adam", "0.01 sched"): GRADFREE_ADAM}

S1_IMAGES = 100  # Sec. 5 / App. A.2.1 (paper-notes §5.1): generated images per model behind every Table S1 point
PAPER_GPU = {"SD2.1": "RTX 3090 Ti 24 GB", "LaVie": "A100 SXM4 80 GB", "InstaFlow": "RTX 3090 24 GB"}  # App. A.4
# Table S1 (a/b/c): the three LDMs the paper inverts, keyed by the decinv profile that stands for each (sd21: SD 2.1;
# sd15: InstaFlow-0.9B, SD 1.5's VAE; sd14-video: AnimateDiff on SD 1.4, a stand-in for LaVie, see
# decinv.generation.experiments). The paper's hardware for each is PAPER_GPU.
PAPER_MODEL = {"sd21": "SD2.1", "sd15": "InstaFlow", "sd14-video": "LaVie"}

# Fig. 3 (a/b/c), right-hand bars (paper-notes §5.5): peak memory in GB, `torch.cuda.max_memory_allocated()` for one
# image (one 16-frame video for LaVie), all resident weights included, keyed (method, bits). The gradient-based bar
# covers both of its learning rates. These are the bars as drawn; they agree with Table S1's memory column except
# InstaFlow's 32-bit gradient-free bar, 3.29 GB in Fig. 3c against 3.2 GB in Table S1c.
PAPER_FIG3_MEMORY = {
    "SD2.1": {("gradient-adam", 32): 8.83, ("gradfree-adam", 32): 3.81, ("gradfree-adam", 16): 3.15},
    "LaVie": {("gradient-adam", 32): 64.7, ("gradfree-adam", 32): 11.7, ("gradfree-adam", 16): 7.13},
    "InstaFlow": {("gradient-adam", 32): 8.38, ("gradfree-adam", 32): 3.29, ("gradfree-adam", 16): 2.62},
}


class PaperPoint(NamedTuple):
    """One point of the paper's tables: a mean NMSE of the recovered latent, ``nmse_db`` (dB, 10 log10 of
    ||z - z*||² / ||z*||², averaged over the images), its 95 % confidence half-width ``ci`` (dB, the table's "±"),
    and, where the table gives them, the runtime per image ``seconds`` (per video for LaVie) and the peak GPU memory
    ``memory_gb`` (GB). Tables S2a/S2b give no runtime or memory: those fields are then None."""

    nmse_db: float
    ci: float
    seconds: float | None = None
    memory_gb: float | None = None

    def text(self) -> str:
        """The NMSE as the paper prints it, "−19.39 ± 0.54" (two decimals, a true minus sign)."""
        return as_printed(self.nmse_db, self.ci)


def as_printed(value: float, ci: float | None = None, digits: int = 2) -> str:
    """``value`` (and ``± ci``) with ``digits`` decimals and a true minus sign (U+2212), as the paper's tables print
    numbers: as_printed(-21.71, 0.77) == "−21.71 ± 0.77"."""
    text = f"{value:.{digits}f}" + ("" if ci is None else f" ± {ci:.{digits}f}")
    return text.replace("-", "\u2212")


def _same_setting(fields: dict, lr: float, schedule: str | None) -> bool:
    """Whether Setting fields {"lr", "schedule"} are (lr, schedule). A schedule that is not a string (None, or the
    NaN a pandas column holds for None) means a fixed learning rate."""
    schedule = schedule if isinstance(schedule, str) else None
    return lr is not None and math.isclose(fields["lr"], float(lr)) and fields["schedule"] == schedule


def s1_key(method: str, bits: int, lr: float, schedule: str | None) -> tuple | None:
    """The `PAPER_S1` key, (method, bits, lr column), of a setting given as data, or None if Table S1 has no such
    setting (e.g. gradient-based in 16-bit, a learning rate the paper did not run, or a schedule it did not use)."""
    for (m, column), fields in S1_SETTING.items():
        if m == method and _same_setting(fields, lr, schedule):
            key = (method, int(bits), column)
            return key if key in PAPER_S1["SD2.1"] else None
    return None


def s1_setting(model: str, method: str, bits: int, lr: float, schedule: str | None) -> dict[int, PaperPoint]:
    """All of Table S1's points of one setting, {iterations: `PaperPoint`} in the table's order, with the arguments
    of `s1_point` (without ``iterations``); {} for a setting the paper did not run."""
    key = s1_key(method, bits, lr, schedule)
    if key is None:
        return {}
    points, memory = PAPER_S1[model][key]
    return {k: PaperPoint(db, PAPER_S1_CI[model][key][k], seconds, memory) for k, db, seconds in points}


def s1_point(model: str, method: str, bits: int, lr: float, schedule: str | None,
             iterations: int) -> PaperPoint | None:
    """Table S1's point of one grid setting, looked up by the keys of a `decinv.analysis.grid` row.

    ``model``: "SD2.1" (Table S1a), "LaVie" (S1b) or "InstaFlow" (S1c); ``method``: "gradient-adam" or
    "gradfree-adam"; ``bits``: 32 or 16; ``lr``: the (maximal) learning rate as a float; ``schedule``: None (fixed;
    the NaN a pandas row holds instead counts as None), "paper" (the gradient-free schedule) or "warmup-cosine" (the
    gradient-based one); ``iterations``: K.

    Returns the `PaperPoint` (NMSE dB, ± 95 % CI, seconds per image, peak GB), or None for a setting or an iteration
    count the paper did not run, e.g. s1_point("SD2.1", "gradfree-adam", 32, 0.01, "paper", 100) gives
    PaperPoint(-21.71, 0.77, 17.7, 3.81) and the same at 30 iterations gives None (Table S1 runs the gradient-free
    method at 20/50/100/200). The schedule's horizon cap (100 iterations in the official code) is not a key."""
    return s1_setting(model, method, bits, lr, schedule).get(int(iterations))


def table_s1(model: str = "SD2.1") -> dict:
    """Table S1's NMSE by setting and iterations: {(method, bits, lr): {iterations: NMSE dB}} for ``model``
    ("SD2.1", "LaVie" or "InstaFlow")."""
    return {key: {k: db for k, db, _ in points} for key, (points, _) in PAPER_S1[model].items()}


# ---------------------------------------------------------------------------------------------------- Table S2

# Table S2a (SD 2.1, 32-bit; paper-notes §5.6): optimizer ablation, NMSE dB in the table's four columns, "only
# changing the optimizer while keeping all other conditions the same". The step sizes of the vanilla and KM rows are
# not stated. The header is printed "20 / 30 / 50 / 100" (`S2A_PRINTED_ITERATIONS`), but the Adam row equals Table
# S1a's gradient-free 32-bit points at 20 / 50 / 100 / 200 iterations, so the columns probably are those
# (`S2A_ITERATIONS`). The ± of each column is in `PAPER_S2A_CI`; `s2a_row` gives both by decinv method name.
PAPER_S2A = {"vanilla": (-16.87, -17.42, -18.21, -19.35), "inertial-km": (-18.99, -20.72, -21.46, -20.91),
             "adam": (-19.39, -20.84, -21.71, -21.85)}
PAPER_S2A_CI = {"vanilla": (0.38, 0.41, 0.46, 0.54), "inertial-km": (0.53, 0.73, 0.96, 1.20),
                "adam": (0.54, 0.66, 0.77, 0.82)}
S2A_PRINTED_ITERATIONS = (20, 30, 50, 100)  # the header as printed
S2A_ITERATIONS = (20, 50, 100, 200)  # the header the Adam row implies (derived from Table S1a)
S2A_METHOD = {"forward-step": "vanilla", "inertial-km": "inertial-km", "gradfree-adam": "adam"}  # decinv -> row


def s2a_row(method: str) -> tuple[PaperPoint, ...] | None:
    """Table S2a's row of a decinv method ("forward-step" is the paper's "Vanilla", "inertial-km" its "KM
    iterations", "gradfree-adam" its "Adam (orig.)"), as four `PaperPoint` (NMSE dB, ± 95 % CI) in column order,
    or None for a method the table does not have. Which iteration counts the columns are is ambiguous: see
    `S2A_PRINTED_ITERATIONS` and `S2A_ITERATIONS`."""
    row = S2A_METHOD.get(method)
    if row is None:
        return None
    return tuple(PaperPoint(db, ci) for db, ci in zip(PAPER_S2A[row], PAPER_S2A_CI[row]))


# Table S2b (SD 2.1, 32-bit, gradient-free Adam; paper-notes §5.6): learning-rate schedule ablation, NMSE dB ± 95 % CI
# after 20 / 50 / 100 / 200 iterations (`S2B_ITERATIONS`), keyed by (lr, schedule) as Setting fields: a fixed 0.01, a
# fixed 0.002 and the paper's schedule (whose row repeats Table S1a's gradient-free 32-bit points). The paper's
# reading: the large fixed rate degrades with many iterations, the small one is poor with few, the schedule is
# "consistent ... regardless of the number of iterations".
S2B_ITERATIONS = (20, 50, 100, 200)
PAPER_S2B = {
    (0.01, None): ((-20.05, 0.58), (-21.07, 0.70), (-21.22, 0.74), (-20.61, 0.79)),
    (0.002, None): ((-17.85, 0.43), (-19.28, 0.53), (-20.59, 0.64), (-21.57, 0.74)),
    (0.01, "paper"): ((-19.39, 0.54), (-20.84, 0.66), (-21.71, 0.77), (-21.85, 0.82)),
}


def s2b_point(lr: float, schedule: str | None, iterations: int) -> PaperPoint | None:
    """Table S2b's point of gradient-free Adam (SD 2.1, 32-bit) with learning rate ``lr`` (a float) and
    ``schedule`` (None: fixed; "paper": the paper's schedule) after ``iterations``: a `PaperPoint` (NMSE dB,
    ± 95 % CI), or None where the table has no such row or column."""
    if iterations not in S2B_ITERATIONS:
        return None
    for (row_lr, row_schedule), cells in PAPER_S2B.items():
        if _same_setting({"lr": row_lr, "schedule": row_schedule}, lr, schedule):
            return PaperPoint(*cells[S2B_ITERATIONS.index(iterations)])
    return None


# ---------------------------------------------------------------------------------------------------- applications

# Sec. 5 / Table 2 and Fig. S1: tree-ring watermark classification with three decoder inversions.
PAPER_PROTOCOL_MODEL = {"sd21": "SD2.1", "instaflow": "InstaFlow"}  # watermark protocol name -> the paper's LDM

PAPER_TABLE2 = {  # paper Table 2 (notes §5.7): per image, GPU, decoder + diffusion inversion
    "SD2.1": {"accuracy": {"Encoder": 186, "Grad-based": 207, "Grad-free": 202},
              "peak memory (GB)": {"Encoder": 5.71, "Grad-based": 11.4, "Grad-free": 6.35},
              "runtime (s)": {"Encoder": 5.66, "Grad-based": 38.0, "Grad-free": 22.9}},
    "InstaFlow": {"accuracy": {"Encoder": 149, "Grad-based": 227, "Grad-free": 227},
                  "peak memory (GB)": {"Encoder": 2.93, "Grad-based": 8.84, "Grad-free": 3.15},
                  "runtime (s)": {"Encoder": 3.55, "Grad-based": 35.9, "Grad-free": 13.6}},
}
"""Accuracies are counts out of 300 (100 prompts × 3 keys)."""

PAPER_FIG_S1 = {  # paper Fig. S1 (notes §5.7): rows = actual key 1/2/3 (100 each), columns = predicted key
    "SD2.1": {"Encoder": [[54, 14, 32], [27, 47, 26], [12, 3, 85]],
              "Grad-based": [[47, 24, 29], [17, 66, 17], [4, 2, 94]],
              "Grad-free": [[52, 17, 31], [18, 57, 25], [5, 2, 93]]},
    "InstaFlow": {"Encoder": [[29, 36, 35], [1, 36, 63], [0, 16, 84]],
                  "Grad-based": [[31, 55, 14], [1, 96, 3], [0, 0, 100]],
                  "Grad-free": [[30, 60, 10], [1, 97, 2], [0, 0, 100]]},
}

# Sec. 5.1 / App. A.2.2 and the official code (paper-notes §5.7): the watermark's geometry. Three ring keys on a disc
# of radius 6 Fourier coefficients in channel 0 of SD 2.1's 4x64x64 initial latent; 100 prompts per model.
PAPER_WATERMARK = {"latent_side": 64, "radius": 6, "keys": 3, "prompts": 100}

# App. A.2.2 and the official code (paper-notes §5.7): how each watermarked image is made and read back. CFG scale per
# protocol kind (SD 2.1: 7.5, main_watermark_detection.py; InstaFlow: 1.0), InstaFlow's backward-Euler fixed-point
# iterations, and the decoder-inversion iterations of both iterative methods (gradient-based lr 0.1 scheduled,
# gradient-free lr 0.01 scheduled: GRADIENT_SCHEDULED, GRADFREE_ADAM).
PAPER_WATERMARK_PROTOCOL = {"guidance": {"diffusion": 7.5, "rectified-flow": 1.0}, "euler_iterations": 100,
                            "decoder_inversion_steps": 100}

# The official code's tree-ring keys (paper-notes §5.7; the paper prints none): row w of the table sets key w, entry
# r - 1 its ring r, and the ring value is KEY_SCALE * ((entry - 1) * 2 + 1) (`decinv.applications.watermark`).
WATERMARK_KEY_TABLE = ((1.1, 0.8, 1.2, 0.9, 0.6, 1.4),
                       (1.1, 0.6, 1.1, 1.2, 0.8, 1.2),
                       (0.7, 1.2, 1.3, 0.8, 0.9, 1.1))
WATERMARK_KEY_SCALE = 80.0

# Sec. 5.2 / Fig. 4 (paper-notes §5.8): background-preserving editing at two runtime budgets, the short (about 9 s)
# first. Each entry: (method, bits, iterations, seconds per image) as printed in the figure. The figure names neither
# the model nor the gradient-based learning rate; its runtimes equal Table S1a's, with the gradient-based ones those
# of "0.1 sched" (derived), so SD 2.1 is implied. The figure gives no NMSE.
PAPER_FIG4 = ((("gradient-adam", 32, 30, 9.31), ("gradfree-adam", 32, 50, 8.53), ("gradfree-adam", 16, 100, 9.56)),
              (("gradient-adam", 32, 50, 15.7), ("gradfree-adam", 32, 100, 17.7), ("gradfree-adam", 16, 200, 19.3)))

# Paper-notes §1 and §5.1 (official code, SD 2.1): 3x512x512 images in [-1, 1], 4x64x64 latents (x8), latent =
# posterior x 0.18215.
SD21_AUTOENCODER = {"image_size": 512, "downsample": 8, "latent_channels": 4, "scaling_factor": 0.18215}

# ---------------------------------------------------------------------------------------------------- ours

# NOT a number of the paper: the paper reports no encoder NMSE (the NMSE of E(x) against z*). About -16 dB is our
# estimate for SD 2.1's encoder on the paper's images, from its Fig. 2 and Table S2a. The model card and the
# real-autoencoder chapter measure the paper's gains against it.
SD21_ENCODER_NMSE_ESTIMATE = -16.0
