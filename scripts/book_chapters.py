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
chapter's cost is that slope times the inversion iterations its code runs at the given parameters (`workload`).
Forward-step, inertial-KM and Anderson iterations evaluate the same E(D(z)) as a gradient-free Adam iteration and are
costed as one; extra E(D(z)) evaluations a chapter makes for its analysis (e.g. the cocoercivity ratios of the
gradient-based paths) are counted the same way. The watermark chapter's diffusion inversions (and the encoding before
them) are costed at Table 2's encoder runtime per image, which measured exactly that. Not included: loading, the first encoding, decoding for figures,
and generating the instances (the paper reports no generation times, so that part is "not estimated"; the number of
UNet evaluations it needs is given instead). The paper's 32-bit gradient-free runtimes include its code's fresh fp32
copy of the VAE at every iteration (see the GPU page), so decinv's 32-bit runs should be faster than estimated.
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
    """Seconds per instance-iteration for the three cost classes: ``free32``/``free16`` (one E(D(z)) in 32/16 bits:
    gradient-free Adam, forward step, inertial KM, Anderson) and ``grad32`` (D forward + backward, gradient-based
    Adam; the mean of the paper's two learning-rate settings, which cost the same); and ``diffusion_inversion``,
    seconds per image to encode it and invert the diffusion (50 guided DDIM steps for SD 2.1, 100 backward-Euler
    iterations for InstaFlow): Table 2's encoder runtime, which is exactly that (NaN for LaVie, not in Table 2)."""
    from decinv.applications.watermark_pipelines import PAPER_TABLE2

    s = per_iteration_seconds(paper_model)
    return {"free32": s[("gradfree-adam", 32, "0.01 sched")][0], "free16": s[("gradfree-adam", 16, "0.01 sched")][0],
            "grad32": (s[("gradient-adam", 32, "0.1 sched")][0] + s[("gradient-adam", 32, "0.01 fixed")][0]) / 2,
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


def _shared_runs(iterations, cap):
    """Chapter 4's grouping: scheduled horizons sharing min(k, cap) are read off one run of the longest length."""
    horizon = (lambda k: min(k, cap)) if cap else (lambda k: k)
    return sorted({max(j for j in iterations if horizon(j) == horizon(k)) for k in iterations})


def workload(chapter: str, p: dict, frames: int = 0) -> dict:
    """Instance-iterations per cost class (``free32``, ``free16``, ``grad32``) that ``chapter``'s code runs with
    parameters ``p`` (its parameters cell's names), and ``instances`` generated. ``frames``: frames per instance of a
    video profile (chapter 4's video-memory runs count frames; F of them make one instance); 0 for images."""
    w = {"free32": 0.0, "free16": 0.0, "grad32": 0.0, "diffusion_inversion": 0.0}
    per_frame = 1 / frames if frames else 1.0
    if chapter == "01_motivation":
        n = p["n_images"]
        w["free32"] = 2 * n * p["steps"]  # gradient-free Adam and forward step
        instances = n
    elif chapter == "02_cocoercivity":
        n, na = p["n_images"], min(p["n_images_adam"], p["n_images"])
        window_adam = min(p["k_window_adam"], p["steps_inf_adam"] - 1)
        w["free32"] = 2 * n * p["steps_inf"] + na * (window_adam + 1)  # FSM, KM; E(D) on the grad-based path
        w["free32" if p["adam_bits"] == 32 else "free16"] += na * p["steps_inf_adam"]
        w["grad32"] = na * p["steps_inf_adam"]
        instances = n
    elif chapter == "03_fsm_km":
        table = [t for t in p["table_iterations"] if t <= p["steps"]]
        w["free32"] = (p["n_probe"] * p["probe_steps"] + len(p["sweep_factors"]) * p["n_sweep"] * p["sweep_steps"]
                       + 4 * p["n_images"] * p["steps"] + p["n_images"] * sum(table))
        instances = max(p["n_images"], p["n_probe"], p["n_sweep"])
    elif chapter == "04_adam_scheduling":
        n, n16, cap = p["n_images"], min(p["n_images_fp16"], p["n_images"]), p["schedule_cap"]
        w["grad32"] = n * sum(p["grad_iterations"]) + n * max(p["grad_iterations"])  # scheduled runs; one fixed
        w["grad32"] += n16 * 5 + 3 * p["memory_steps"]  # the 16-bit gradient-based attempt; the memory runs
        w["free32"] = n * sum(_shared_runs(p["free_iterations"], cap))  # the scheduled grid
        w["free32"] += n16 * sum(p["fp16_iterations"])  # the 32-bit runs beside the 16-bit ones
        w["free32"] += len(p["ablation_lrs"]) * n * max(p["free_iterations"]) + 3 * p["memory_steps"]
        w["free16"] = n16 * sum(_shared_runs(p["fp16_iterations"], cap)) + 3 * p["memory_steps"]
        video = 2 * p["video_steps"] * sum(p["video_frames"]) * per_frame  # chunked and not, per method
        w["free32"] += video
        w["grad32"] += video
        instances = n
    elif chapter == "05_watermark":
        # the real-model section: 3 images per prompt, each decoder-inverted by the encoder, gradient-based and
        # gradient-free Adam, then diffusion-inverted once per method and once more for the true z_0 (oracle row)
        images = 3 * p["n_images"]
        w["free32"] = w["grad32"] = images * p["dinv_steps"]
        w["diffusion_inversion"] = images * 4
        instances = images
    elif chapter == "07_anderson":
        w["free32"] = p["n_images"] * p["steps"] * (2 + len(p["memories"]))  # Adam, forward step, Anderson per m
        instances = p["n_images"]
    elif chapter == "09_gpu":
        # the setup check: warm-up + repeats of one E(D) and one D forward+backward on n_images instances
        calls = p["n_images"] * (p["repeats"] + 1)
        w["free32"], w["grad32"], w["free16"] = 2 * calls, 2 * calls, calls  # (timed twice: warm-up of both runs)
        instances = 0
    else:
        raise ValueError(f"no workload model for chapter {chapter!r}; known: 01-06, 08.")
    return {**w, "instances": instances}


def generation_unet_calls(profile: str) -> int:
    """UNet evaluations to generate one instance with the profile's protocol (CFG > 1 doubles the batch, not the
    calls; a video clip is one call for all its frames)."""
    from decinv.generation.experiments import get_profile
    from decinv.generation.pipelines import PROTOCOLS

    prof = get_profile(profile)
    return PROTOCOLS[prof.protocol].steps if prof.protocol else 0


def estimate(chapter: str, profile: str, params: dict | None = None, root: Path | None = None) -> dict:
    """Estimated GPU seconds of ``chapter``'s inversions for ``profile`` at its defaults updated by ``params``.

    Returns a dict: ``inversion_s`` (the estimate), ``by_class`` (seconds per cost class), ``instances`` (generated),
    ``generation`` ("not estimated", with the UNet calls it needs), ``basis`` (the paper model and GPU)."""
    if profile not in PAPER_MODEL:
        raise ValueError(f"GPU estimates exist for {', '.join(PAPER_MODEL)} (the paper's models), not {profile!r}.")
    from decinv.generation.experiments import get_profile

    p = {**notebook_defaults(chapter, root), **(params or {})}
    paper = PAPER_MODEL[profile]
    costs = unit_costs(paper)
    w = workload(chapter, p, get_profile(profile).frames)
    by_class = {k: w[k] * costs[k] for k in costs if w[k]}  # a class the chapter never runs costs nothing
    calls = generation_unet_calls(profile) * w["instances"]
    return {"chapter": chapter, "profile": profile, "inversion_s": sum(by_class.values()), "by_class": by_class,
            "iterations": {k: w[k] for k in ("free32", "free16", "grad32")},
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
