"""Which book chapters run which profile, and how long a chapter should take on a GPU (estimated, not measured).

Book-build logic, not library code: `scripts/build_book.py` uses it to skip chapters and print estimates, and the GPU
chapter (notebooks/09_gpu.md) imports it as ``from scripts import book_chapters`` (the book runs with the repository
root on PYTHONPATH).

One switch per run: every chapter with a ``profile`` parameter runs the paper's protocol for that profile
(`decinv.generation.experiments.load_profile` / `make_instances`). `CHAPTERS` says which profiles a chapter can run and, for the
others, why not; ``scripts/build_book.py --profile`` (``make book PROFILE=... DEVICE=...``) skips those with the reason.

GPU run times are **estimates from the paper's own timings**, never measurements: the per-iteration cost of each
method is the least-squares slope of runtime against iterations in the paper's Table S1 (seconds per image, or per
video for LaVie, on the paper's GPUs: RTX 3090 Ti for SD 2.1, A100 for LaVie, RTX 3090 for InstaFlow), and a
chapter's cost is that slope times the work its code does at the given parameters, run with ``device="cuda"``
(`workload`, in the units `decinv.core.work` counts: items × iterations per kind, an item being an image or a video
frame). Forward-step, inertial-KM and Anderson iterations evaluate the same E(D(z)) as a gradient-free Adam iteration
and are costed as one; extra E(D(z)) evaluations a chapter makes for its analysis (e.g. the cocoercivity ratios, T
at a run's last iterate) are counted the same way; a 16-bit gradient-based iteration is costed as a 32-bit one (the
paper has no such runtime). The watermark chapter's diffusion inversions (and the encoding before them) are costed
at Table 2's encoder runtime per image, which measured exactly that. Not included: loading, the first encoding,
decoding for figures, and generating the instances (the paper reports no generation times, so that part is "not
estimated"; the number of UNet evaluations it needs is given instead). The paper's 32-bit gradient-free runtimes
include its code's fresh fp32 copy of the VAE at every iteration (see the GPU page), so decinv's 32-bit runs should be
faster than estimated.

`workload` is a hand model of each chapter's loops; tests/test_notebooks.py checks it, kind by kind, against the
work `decinv.core.work` counts while each estimated chapter runs in smoke mode. Chapter 9's setup check calls the
autoencoder directly (nothing there is counted), so its model is checked only by reading the chapter.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decinv.paper import PAPER_GPU, PAPER_MODEL, PAPER_S1  # noqa: F401  (re-exported: chapters and the build use them)

TINY = ("tiny", "tiny-v1", "tiny-v2")
HUB = ("sd21", "sd15", "sd14-video")


@dataclass(frozen=True)
class Chapter:
    """A chapter notebook (``notebooks/<name>.md``) and the profiles it runs; ``why_not``: the reason for others."""

    name: str
    profiles: tuple
    why_not: str = ""


CHAPTERS = {c.name: c for c in [
    Chapter("01_motivation", TINY + HUB),
    Chapter("02_cocoercivity", TINY + HUB),
    Chapter("03_fsm_km", TINY + HUB),
    Chapter("04_adam_scheduling", TINY + HUB),
    Chapter("05_watermark", TINY + ("sd21", "sd15"),
            "tree-ring watermarks need an image sampler and its inversion (the paper's Table 2: SD 2.1 and "
            "InstaFlow); there is none for video. Run it with profile sd21 or sd15."),
    Chapter("06_editing", TINY,
            "editing re-runs the sampler along the inverted trajectory, which decinv implements for the bundled "
            "tiny LDMs only. Run it with profile tiny or tiny-v1 (device cuda works)."),
    Chapter("07_anderson", TINY + HUB),
    Chapter("08_real_autoencoder", (),
            "it studies TAEF2, a real pretrained autoencoder read from DECINV_TAESD_DIR (or its committed record); "
            "the profiles do not apply to it."),
    Chapter("09_gpu", TINY + HUB),
    Chapter("model_card", ("tiny", "tiny-v2"),
            "the model card describes the bundled tiny models; it ignores other profiles, so it is not re-run."),
]}


def can_run(chapter: str, profile: str) -> tuple[bool, str]:
    """(whether ``chapter`` runs ``profile``, the reason when it does not). Unknown chapters: a reason saying so."""
    info = CHAPTERS.get(chapter)
    if info is None:
        return False, f"{chapter} takes no profile parameter."
    if profile in info.profiles:
        return True, ""
    return False, f"{chapter} cannot run profile {profile!r}: {info.why_not}"


# ---------------------------------------------------------------------------------------------- estimated times


def per_iteration_seconds(paper_model: str) -> dict:
    """{(method, bits, lr): (slope s/iteration, intercept s)} of the paper's Table S1 for ``paper_model`` (per image;
    per video for LaVie), by least squares of runtime against iterations."""
    out = {}
    for key, (points, _) in PAPER_S1[paper_model].items():
        it, _, secs = (np.asarray(v, dtype=float) for v in zip(*points))
        slope, intercept = np.polyfit(it, secs, 1)
        out[key] = (float(slope), float(intercept))
    return out


def unit_costs(paper_model: str) -> dict:
    """Seconds per instance and unit of work, for each kind of `WORK_KINDS`: ``free32``/``free16`` (one E(D(z)) in
    32/16 bits: an iteration of gradient-free Adam, forward step, inertial KM or Anderson, or an extra evaluation)
    and ``grad32`` (D forward + backward, gradient-based Adam; the mean of the paper's two learning-rate settings,
    which cost the same) per iteration; ``grad16`` costed as ``grad32`` (the paper has no 16-bit gradient-based
    runtime: its Adam state underflows, "unimplementable"); and ``diffusion_inversion``, seconds per image to encode
    it and invert the diffusion (50 guided DDIM steps for SD 2.1, 100 backward-Euler iterations for InstaFlow):
    Table 2's encoder runtime, which is exactly that (NaN for LaVie, not in Table 2). An instance is an image, or a
    video for LaVie."""
    from decinv.applications.watermark_pipelines import PAPER_TABLE2

    s = per_iteration_seconds(paper_model)
    grad32 = (s[("gradient-adam", 32, "0.1 sched")][0] + s[("gradient-adam", 32, "0.01 fixed")][0]) / 2
    return {"free32": s[("gradfree-adam", 32, "0.01 sched")][0], "free16": s[("gradfree-adam", 16, "0.01 sched")][0],
            "grad32": grad32, "grad16": grad32,
            "diffusion_inversion": PAPER_TABLE2.get(paper_model, {}).get("runtime (s)", {}).get("Encoder", math.nan)}


def notebook_defaults(name: str, root: Path | None = None) -> dict:
    """The literal defaults of ``notebooks/<name>.md``'s parameters cell (``ast.literal_eval`` of each assignment)."""
    import jupytext

    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    nb = jupytext.read(root / "notebooks" / f"{name}.md")
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    out = {}
    for node in ast.parse(cells[0].source).body if cells else []:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


WORK_KINDS = ("free32", "free16", "grad32", "grad16", "diffusion_inversion")
"""The kinds of work `workload` predicts and `decinv.core.work` counts; each has a unit cost (`unit_costs`)."""


def workload(chapter: str, p: dict, frames: int = 0) -> dict:
    """The work ``chapter``'s code does with parameters ``p`` (its parameters cell's names and values, after its
    smoke reductions when ``smoke``), in `decinv.core.work`'s units: items × iterations per kind of `WORK_KINDS`
    (``free32``/``free16``: one E(D(z)) per item, solver iteration or extra evaluation; ``grad32``/``grad16``: one
    D forward + backward; ``diffusion_inversion``: latents inverted), every run counted to its full length (what
    ``count_work().asked()`` reports; a run that stops early does less), and ``instances`` generated.

    ``frames``: F of a video profile (0 for images). An item is an image, or a frame: the chapters flatten each
    generated clip into its F frames and invert those as images (`decinv.generation.instances.Instances.frames`), so
    their counts are F times the clips' (``p`` keeps the parameters cell's clip counts); `estimate` divides by F to
    cost frames at the paper's per-video runtimes. Not counted, as by `decinv.core.work`: the first encodings,
    decoding for figures, generation, and the chapters' direct autoencoder calls (chapter 4's one 16-bit gradient
    by hand on ``n_images_fp16`` images, chapter 9's timed calls, which are counted here by reading its code).

    tests/test_notebooks.py runs every estimated chapter in smoke mode under ``count_work`` and checks this
    against the count."""
    from decinv.analysis.grid import runs_for

    w = dict.fromkeys(WORK_KINDS, 0)
    f = frames or 1  # items per generated instance
    if chapter == "01_motivation":
        n = p["n_images"] * f
        # gradient-free Adam and forward step; T.ed(z*), and ||T|| at z* and at each run's last iterate
        w["free32"] = 2 * n * p["steps"] + 4 * n
        instances = p["n_images"]
    elif chapter == "02_cocoercivity":
        n, na = p["n_images"] * f, min(p["n_images_adam"], p["n_images"]) * f
        window_adam = min(p["k_window_adam"], p["steps_inf_adam"] - 1)
        # forward step and KM, each with T at its z_inf; the gradient-based path's E(D) at p_0..p_window and z_inf
        w["free32"] = 2 * (n * p["steps_inf"] + n) + na * (window_adam + 1) + na
        w["free32" if p["adam_bits"] == 32 else "free16"] += na * p["steps_inf_adam"] + na  # grad-free Adam, T(z_inf)
        w["grad32"] = na * p["steps_inf_adam"]
        instances = p["n_images"]
    elif chapter == "03_fsm_km":
        n, n_probe, n_sweep = (p[k] * f for k in ("n_images", "n_probe", "n_sweep"))
        table = [t for t in p["table_iterations"] if t <= p["steps"]]
        sweeps = len(p["sweep_factors"])
        w["free32"] = (n_probe * (p["probe_steps"] + 1)  # the probe run and T at its end
                       + n_sweep * (1 + sweeps * (p["sweep_steps"] + 1))  # T(z_0); per step: the run, T at its end
                       + 4 * n * p["steps"] + n * sum(table))  # FSM and three KM settings; Adam per table column
        instances = max(p["n_images"], p["n_probe"], p["n_sweep"])
    elif chapter == "04_adam_scheduling":
        n, n16, cap = p["n_images"] * f, min(p["n_images_fp16"], p["n_images"]) * f, p["schedule_cap"]
        runs = lambda iterations, schedule: sum(runs_for(iterations, schedule, cap))  # grid.sweep's runs
        # gradient-based grid: warm-up + cosine, one run per K; fixed lr, one run read off at every K
        w["grad32"] = n * (runs(p["grad_iterations"], "warmup-cosine") + runs(p["grad_iterations"], None))
        w["grad16"] = n16 * 5  # the 16-bit attempt (5 iterations asked; its Adam state underflows at once)
        w["free32"] = n * runs(p["free_iterations"], "paper")  # the scheduled gradient-free grid
        w["free32"] += n16 * sum(set(p["fp16_iterations"]))  # 32-bit runs beside the 16-bit ones, one per K
        w["free32"] += len(set(p["ablation_lrs"])) * n * max(p["free_iterations"])  # fixed lrs: one run each
        w["free16"] = n16 * runs(p["fp16_iterations"], "paper") + n16  # the 16-bit grid; T(z_0) by hand
        for kind in ("grad32", "free32", "free16"):
            w[kind] += 3 * p["memory_steps"]  # three one-image peak-memory runs per setting
        video = 2 * p["video_steps"] * sum(p["video_frames"])  # one clip per length, chunked and not, per method
        w["free32"] += video
        w["grad32"] += video
        instances = p["n_images"]
    elif chapter == "05_watermark":
        from decinv.applications.watermark_pipelines import MEMORY_PROBE_ITERATIONS

        # run_watermark on each of the two discs: 3 images per prompt, each inverted by the encoder and by gradient-
        # based and gradient-free Adam, then diffusion-inverted once per method and once more from the true z_0 (the
        # oracle row). On the tiny LDM all images go in one batch, and the per-image peak memory is measured apart on
        # one image: each method again with min(dinv_steps, 5) iterations and one diffusion inversion.
        images, d = 3 * p["n_images"], p["dinv_steps"]
        probe = int(p["profile"] in TINY and images > 1)
        per_disc = images * d + probe * min(d, MEMORY_PROBE_ITERATIONS)
        w["free32"] = w["grad32"] = 2 * per_disc
        w["diffusion_inversion"] = 2 * (4 * images + 3 * probe)
        w["diffusion_inversion"] += len(p["noise_levels"]) * images  # the sensitivity check (read_back per level)
        instances = 3 * images  # the two discs' images and the unwatermarked reference
    elif chapter == "07_anderson":
        w["free32"] = p["n_images"] * f * p["steps"] * (2 + len(p["memories"]))  # Adam, forward step, Anderson per m
        instances = p["n_images"]
    elif chapter == "09_gpu":
        # the setup check, on n_images instances of random latents: one E(D) and one D forward + backward before
        # timing, then per timed operation a warm-up and `repeats` calls; the 16-bit E(D) is timed on CUDA only
        images = p["n_images"] * f
        w["free32"] = w["grad32"] = images * (p["repeats"] + 2)
        w["free16"] = images * (p["repeats"] + 1) if str(p["device"]).startswith("cuda") else 0
        instances = 0
    else:
        raise ValueError(f"no workload model for chapter {chapter!r}; known: {', '.join(ESTIMATED_CHAPTERS)}.")
    return {**w, "instances": instances}


def generation_unet_calls(profile: str) -> int:
    """UNet evaluations to generate one instance with the profile's protocol (CFG > 1 doubles the batch, not the
    calls; a video clip is one call for all its frames)."""
    from decinv.generation.experiments import get_profile
    from decinv.generation.pipelines import PROTOCOLS

    prof = get_profile(profile)
    return PROTOCOLS[prof.protocol].steps if prof.protocol else 0


def estimate(chapter: str, profile: str, params: dict | None = None, root: Path | None = None) -> dict:
    """Estimated GPU seconds of ``chapter``'s inversions for ``profile`` at its defaults, run with ``profile`` and
    ``device="cuda"``, updated by ``params``.

    Returns a dict: ``inversion_s`` (the estimate), ``by_class`` (seconds per kind of work), ``iterations`` (items ×
    iterations per solver kind, `workload`; frames on a video profile), ``diffusion_inversions``, ``instances``
    (generated: images, or clips), ``generation`` ("not estimated", with the UNet calls it needs), ``basis`` (the
    paper model and GPU)."""
    if profile not in PAPER_MODEL:
        raise ValueError(f"GPU estimates exist for {', '.join(PAPER_MODEL)} (the paper's models), not {profile!r}.")
    from decinv.generation.experiments import get_profile

    p = {**notebook_defaults(chapter, root), "profile": profile, "device": "cuda", **(params or {})}
    paper = PAPER_MODEL[profile]
    costs = unit_costs(paper)
    frames = get_profile(profile).frames
    w = workload(chapter, p, frames)
    # the paper's LaVie costs are per video: a frame costs 1/F of one (a diffusion inversion is per image)
    per_item = {k: (1 / frames if frames and k != "diffusion_inversion" else 1) for k in costs}
    by_class = {k: w[k] * costs[k] * per_item[k] for k in costs if w[k]}  # a kind the chapter never runs costs 0
    calls = generation_unet_calls(profile) * w["instances"]
    return {"chapter": chapter, "profile": profile, "inversion_s": sum(by_class.values()), "by_class": by_class,
            "iterations": {k: w[k] for k in WORK_KINDS if k != "diffusion_inversion"},
            "diffusion_inversions": w["diffusion_inversion"], "instances": w["instances"], "unet_calls": calls,
            "generation": f"not estimated ({calls} UNet evaluations)" if calls else "none",
            "basis": f"paper Table S1, {paper} on {PAPER_GPU[paper]}"}


ESTIMATED_CHAPTERS = ("01_motivation", "02_cocoercivity", "03_fsm_km", "04_adam_scheduling", "05_watermark",
                      "07_anderson", "09_gpu")


def estimates_table(profiles=HUB, chapters=ESTIMATED_CHAPTERS, root: Path | None = None):
    """A pandas DataFrame: one row per (profile, chapter) with the estimated minutes of inversion at the chapter's
    defaults, the instances generated and the generation column ("not estimated")."""
    import pandas as pd

    rows = []
    for profile in profiles:
        for chapter in chapters:
            if not can_run(chapter, profile)[0]:  # e.g. the watermark chapter has no video protocol
                continue
            e = estimate(chapter, profile, root=root)
            rows.append({"profile": profile, "chapter": chapter, "instances": e["instances"],
                         "estimated inversion time (min)": round(e["inversion_s"] / 60, 1),
                         "generation": e["generation"], "basis": e["basis"]})
    return pd.DataFrame(rows)


def format_minutes(seconds: float) -> str:
    """'12 s', '3.4 min' or '1.6 h'."""
    if not math.isfinite(seconds):
        return "n/a"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------------------------------- GPU commands


def parameters_cell(path: Path) -> list[tuple[str, str, str]]:
    """(name, default as written, trailing comment) for each assignment of a MyST notebook's parameters cell, in
    order; [] when it has none. ``x = 4  # images`` gives ``("x", "4", "images")``."""
    import jupytext

    nb = jupytext.read(path)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        return []
    source = cells[0].source
    lines = source.splitlines()
    out = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            rest = lines[node.end_lineno - 1][node.end_col_offset:]
            comment = rest.split("#", 1)[1].strip() if "#" in rest else ""
            out.append((node.targets[0].id, ast.get_source_segment(source, node.value), comment))
    return out


HUB_FILES = {"unet": "unet/config.json", "vae": "vae/config.json", "text_encoder": "text_encoder/config.json",
             "tokenizer": "tokenizer/tokenizer_config.json"}  # subfolder -> the file that says it is cached


def hub_needs(profile: str) -> list[tuple[str, str | None, str]]:
    """[(hub repository, subfolder or None for the whole repository, what for)] that ``profile`` loads."""
    from decinv.generation.experiments import PROFILES
    from decinv.generation.pipelines import PROTOCOLS

    protocol = PROTOCOLS[PROFILES[profile].protocol]
    out = [(protocol.repo, sub, "pipeline") for sub in HUB_FILES]
    if protocol.adapter:
        out.append((protocol.adapter, None, "motion adapter"))
    return out


def command_block(profile: str, role: str, present: list[str], runs: list[str]) -> str:
    """The shell lines that fetch ``profile``'s weights and build the book with it on a GPU (``runs``: the chapters
    that run it), then one comment per chapter of ``present`` that does not (with the reason)."""
    lines = [f"# {role}"]
    repos: dict = {}
    for repo, sub, _ in hub_needs(profile):
        repos.setdefault(repo, []).append(sub)
    for repo, subs in repos.items():
        include = " --include " + " ".join(f'"{s}/*"' for s in subs) if all(subs) else ""
        lines.append(f"hf download {repo}{include}      # once, with network access")
    lines += ["pip install datasets   # the paper's prompts (Gustavosta/Stable-Diffusion-Prompts, cached once),",
              "                       # or instead: export DECINV_PROMPTS=my_prompts.txt (one prompt per line)", "",
              f"make book PROFILE={profile} DEVICE=cuda      # every chapter that runs {profile}, then the site"]
    if runs:
        only = " ".join(c.split("_")[0] for c in runs)
        lines.append(f"# or chapter by chapter: python scripts/build_book.py --only {only} "
                     f"-p profile {profile} -p device cuda --no-build")
    for c in present:
        if c not in runs:
            lines.append(f"# skipped: {can_run(c, profile)[1] if c in CHAPTERS else c + ' takes no profile'}")
    return "\n".join(lines)
