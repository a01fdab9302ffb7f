"""Dataset jobs: invert many image files in batches, stream the results to disk, resume after a crash, and spread the
work over processes or GPUs with ``torchrun``.

    decinv invert photos/ extra/*.png @more.txt --out runs/a              # one process, batches of 16
    decinv invert photos/ --out runs/a --resume                           # continue after a crash or a kill
    torchrun --nproc_per_node 2 -m decinv invert photos/ --out runs/a     # 2 processes (one GPU each, if any)
    decinv watermark generated/ --profile tiny --out runs/wm              # tree-ring keys, through the same job

From Python: ``run_job(inputs, out, model, method=..., steps=...)``, then ``read_manifest(out)`` and
``load_latents(out)``.

**Inputs** (`collect_inputs`): image files (any name), folders (searched recursively, in sorted order, for files with
an image extension PIL knows; hidden files and folders are skipped), glob patterns (``"imgs/**/*.png"``, sorted) and
list files (``@list.txt``: one file, folder or pattern per line, relative to the list's folder; blank lines and
``#`` comments skipped). Each file counts once, by its absolute path. A name that matches nothing is an error before
any work; a file that cannot be inverted (unreadable, truncated, too small, values out of range) is not: it becomes
a manifest row with status ``"error"`` and the job goes on.

**Batches** (`plan`): the images are grouped by the size they are inverted at (after ``size`` and the crop to a
multiple of the autoencoder's factor), in input order, and each group is cut into batches of ``batch_size``. A
batch's id is a hash of its file list. Only headers are read to plan; pixels are read one batch at a time, so memory
is bounded by the batch, not by the number of images.

**Output folder** (every file is written under a temporary name in ``.tmp/`` and renamed into place, so a file under
its final name is always complete, even after ``kill -9``):

    job.json                  the settings every row was made with (model, method, steps, options, dtype, size,
                              readout); a resumed job must use the same ones
    shards/<id>.safetensors   one per batch with at least one good image: float32 latent (C, h, w) per image, keyed by
                              its source path (watermark jobs also store ẑ_T under "<source>#z_T")
    parts/<id>.jsonl          the batch's manifest rows, written after its shard: a batch is done iff its part exists
    manifest.jsonl            all rows of parts/, sorted by source, rewritten at the end of every run
    summary.json              this run's counts, time and rate (and the per-key table of a watermark job)

**Manifest rows** (one JSON object per line; `ROW_FIELDS` describes every field): source path, status (``"ok"``,
``"error"`` = the input was refused, ``"failed"`` = the inversion gave a non-finite value, with ``error`` saying
which), the file's width, height and mode, the shape inverted, method, effective options, steps, residual
||E(D(z)) - E(x)|| at the result and at the encoder's E(x), PSNR of D(z), seconds, shard and key. A number that is
not finite is never stored under ``"ok"``: the row is ``"failed"`` instead.

**Resume** (``resume=True``, ``--resume``): every source with a row in parts/ is skipped (``retry_failed`` also redoes
the ``"error"``/``"failed"`` ones), and the rest is planned again. Because batches are cut per size group in input
order and a batch is only ever saved whole, the remaining images form exactly the batches an uninterrupted run
would have made, so a resumed job ends with the same latents, bit for bit, as one that never stopped (with the same
batch size and torch thread count: batched convolutions do not give bit-identical per-image results for different
batch compositions).

**Data-parallel** (``torchrun --nproc_per_node N``, or ``--nnodes``/``--rdzv-endpoint`` for several machines with
a shared filesystem): torchrun starts N copies of the command; `run_job` joins them into a ``torch.distributed``
process group (gloo: only the plan and a barrier are exchanged, never tensors, so gloo serves GPUs too), rank 0
plans and broadcasts the batches, rank r inverts batches r, r + N, r + 2N, ... on its own device
(``cuda:LOCAL_RANK`` on GPUs, see `rank_device`) and writes its own shards and parts, and after a barrier rank 0
merges them into manifest.jsonl. Batches do not depend on N, so N processes give the same latents, bit for bit, as
one with the same batch size and thread count.
"""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from decinv.applications import watermark as wm
from decinv.applications.watermark_pipelines import watermark_ldm
from decinv.core.images import BadImageError, load_image, probe
from decinv.core.measure import jsonable
from decinv.core.metrics import psnr
from decinv.core.progress import progress_bar
from decinv.core.solvers import METHODS, invert, method_options
from decinv.core.validation import ImageRangeWarning, resolve_device

FORMAT = "decinv-job/1"
MAX_EXIT_STATUS = 100  # the exit status is the number of inputs that were not inverted, capped here

ROW_FIELDS = {
    "source": "absolute path of the image file (the row's identity)",
    "status": '"ok"; "error": the input was refused (unreadable, too small, out of range); "failed": the inversion '
              "(or the readout) gave a non-finite value or raised",
    "error": "why the row is not ok (null when ok)",
    "image": "{width, height, mode} of the file as PIL reads its header (null if it has none)",
    "shape": "[3, H, W] as inverted (after --size and the crop to a multiple of the autoencoder's factor)",
    "latent_shape": "[C, h, w] of the stored latent",
    "method": "decinv.invert method", "steps": "iterations asked for", "steps_run": "iterations run",
    "options": "the method's effective options (defaults filled in)",
    "solver_status": "InversionResult.status of the batch (completed / converged / failed: ...)",
    "residual": "||E(D(z)) - E(x)|| at the stored latent z (Euclidean norm over the latent, float32)",
    "residual_encoder": "the same at z = E(x), the encoder alone (what the inversion started from)",
    "psnr_db": "PSNR of D(z) against the input (dB, images in [-1, 1]; null only if D(z) equals it exactly)",
    "psnr_encoder_db": "PSNR of D(E(x)) against the input (dB)",
    "seconds": "the batch's wall time (load, inversion, checks, readout) divided by its images",
    "batch": "id of the batch (hash of its sources)", "batch_size": "images inverted in that batch",
    "shard": "file holding the latent, relative to the output folder (null when not ok)",
    "key": "tensor name of the latent in the shard (the source path)",
    "watermark": "watermark jobs: {key (0, 1, 2 = the paper's watermarks 1, 2, 3), distance (to that key), "
                 "distances (to all three), z_T_key (tensor name of the diffusion-inverted noise in the shard)}",
}


class JobError(RuntimeError):
    """The job cannot start or go on (bad inputs, an output folder made with other settings, out of memory)."""


# ------------------------------------------------------------------------------------------------------ inputs


def _image_suffixes() -> set[str]:
    from PIL import Image

    return {s.lower() for s in Image.registered_extensions()}


def _folder_files(folder: Path, suffixes: set[str]) -> list[str]:
    """Image files under ``folder``, recursively, sorted by relative path; hidden files and folders skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in suffixes]
    return found


def collect_inputs(specs, *, base: str | Path | None = None) -> list[str]:
    """Absolute paths of the image files named by ``specs`` (files, folders, glob patterns, ``@list`` files), in
    order, each once. Relative names are taken from ``base`` (default: the working directory).

    Raises `JobError` for a name that matches nothing, a nested ``@list`` or an empty result, each message saying
    what to pass instead."""
    suffixes = _image_suffixes()
    base = Path(base) if base is not None else Path.cwd()
    out, seen = [], set()

    def add(path: str) -> None:
        path = os.path.abspath(path)
        if path not in seen:
            seen.add(path)
            out.append(path)

    def expand(spec: str, where: Path, in_list: str | None) -> None:
        origin = f" (line of {in_list})" if in_list else ""
        if spec.startswith("@"):
            if in_list:
                raise JobError(f"{spec}{origin}: list files cannot name other list files; list the files instead.")
            listing = where / spec[1:]
            if not listing.is_file():
                raise JobError(f"{spec}: no such list file ({listing}); a list file holds one image, folder or "
                               "pattern per line.")
            for line in listing.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    expand(line, listing.parent, spec)
            return
        path = where / spec
        if glob.has_magic(spec):
            matches = sorted(glob.glob(str(path), recursive=True))
            if not matches:
                raise JobError(f"{spec}{origin}: the pattern matches no file.")
            for match in matches:
                if os.path.isdir(match):
                    for f in _folder_files(Path(match), suffixes):
                        add(f)
                else:
                    add(match)
        elif path.is_dir():
            for f in _folder_files(path, suffixes):
                add(f)
        elif path.exists():
            add(str(path))
        else:
            raise JobError(f"{spec}{origin}: no such file or folder.")

    for spec in specs:
        expand(str(spec), base, None)
    if not out:
        raise JobError(f"no image files in {', '.join(map(str, specs))}: folders are searched recursively for "
                       f"files ending in an image extension (.png, .jpg, .tif, ...); name other files directly.")
    return out


# -------------------------------------------------------------------------------------------------------- plan


@dataclass
class Batch:
    """Images inverted together: ``sources`` (absolute paths) with their ``infos`` (the `ImageInfo` from the
    header, or the error message when the file was refused at planning), all of inverted size ``shape`` (H, W);
    ``shape`` is None for a batch of refused files only, which needs no model."""

    id: str
    sources: list[str]
    infos: list
    shape: tuple[int, int] | None


def _batch_id(sources: list[str]) -> str:
    return hashlib.sha1("\n".join(sources).encode()).hexdigest()[:16]


def plan(sources: list[str], size: int | None, multiple: int, batch_size: int) -> list[Batch]:
    """Cut ``sources`` into batches: per inverted size (H, W), in input order, chunks of ``batch_size``; the files
    refused at planning (`decinv.core.images.probe` raised) in chunks of their own. Batches are ordered by their first
    source's position. Reads only headers.

    Removing whole batches from ``sources`` (what a resumed job does) leaves the remaining batches unchanged, because
    every chunk but the last of a group is full."""
    groups: dict = {}
    position = {s: i for i, s in enumerate(sources)}
    for source in sources:
        try:
            info = probe(source, size, multiple)
            groups.setdefault(info.shape, []).append((source, info))
        except BadImageError as error:
            groups.setdefault(None, []).append((source, str(error)))
    batches = []
    for shape, items in groups.items():
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            names = [s for s, _ in chunk]
            batches.append(Batch(_batch_id(names), names, [i for _, i in chunk], shape))
    return sorted(batches, key=lambda b: position[b.sources[0]])


# ------------------------------------------------------------------------------------------- files, atomically


def _atomic(path: Path, write, tmp: Path) -> None:
    """Write ``path`` through ``write(temporary_path)`` in ``tmp`` (same filesystem), fsync it, rename it into place:
    readers see the old file or the whole new one, never a part."""
    tmp.mkdir(parents=True, exist_ok=True)
    partial = tmp / f"{path.name}.{os.getpid()}.tmp"
    write(partial)
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, path)


def _write_text(path: Path, text: str, tmp: Path) -> None:
    _atomic(path, lambda p: p.write_text(text), tmp)


def _rows_text(rows: list[dict]) -> str:
    return "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)


def read_manifest(out: str | Path) -> list[dict]:
    """Every manifest row of the job in ``out`` (from its parts, so also mid-run or after a kill), sorted by source.

    See `ROW_FIELDS` for the fields."""
    rows = {}
    for part in sorted(Path(out, "parts").glob("*.jsonl")):
        for line in part.read_text().splitlines():
            row = json.loads(line)
            rows[row["source"]] = row
    return [rows[s] for s in sorted(rows)]


def load_latents(out: str | Path, *, which: str = "z0") -> dict[str, torch.Tensor]:
    """{source path: latent (C, h, w) float32} for every ``"ok"`` row of the job in ``out``.

    ``which="z0"``: the decoder inversion (every job); ``"z_T"``: the diffusion-inverted noise of a watermark job."""
    from safetensors import safe_open

    if which not in ("z0", "z_T"):
        raise ValueError(f"which must be 'z0' or 'z_T', got {which!r}.")
    by_shard: dict = {}
    for row in read_manifest(out):
        if row["status"] == "ok":
            key = row["key"] if which == "z0" else (row.get("watermark") or {}).get("z_T_key")
            if key is None:
                raise ValueError(f"{out} is not a watermark job: its rows hold no z_T; use which='z0'.")
            by_shard.setdefault(row["shard"], []).append((row["source"], key))
    latents = {}
    for shard, items in by_shard.items():
        with safe_open(str(Path(out) / shard), framework="pt") as f:
            for source, key in items:
                latents[source] = f.get_tensor(key)
    return latents


# ------------------------------------------------------------------------------------------------ distributed


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment variables; (0, 1, 0) outside torchrun."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def rank_device(device: str | torch.device | None = "auto") -> torch.device:
    """The device this process should use: under torchrun with CUDA, ``cuda:LOCAL_RANK`` (one GPU per rank) when
    ``device`` is "auto" or a bare "cuda"; otherwise `decinv.core.validation.resolve_device` of ``device``."""

    resolved = resolve_device(device)
    _, world, local = dist_env()
    if world > 1 and resolved.type == "cuda" and (device in (None, "auto", "cuda")):
        if local >= torch.cuda.device_count():
            raise JobError(f"rank with LOCAL_RANK={local} has no GPU: this machine has {torch.cuda.device_count()}; "
                           f"start at most that many processes per node (torchrun --nproc_per_node).")
        resolved = torch.device("cuda", local)
    return resolved


class _Group:
    """The torch.distributed process group of a torchrun launch (gloo), or a stand-in for one process."""

    def __init__(self):
        import torch.distributed as dist

        self.rank, self.world, _ = dist_env()
        self.dist, self.owned = dist, False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo", timeout=_dt.timedelta(hours=12))
            self.owned = True
        if self.world > 1:
            self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (pickled)."""
        if self.world == 1:
            return value
        box = [value]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        if self.owned:
            self.dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------- readouts


class TreeRing:
    """Tree-ring key detection (paper Sec. 5.1) as a job readout: for each decoder-inverted latent ẑ_0 (B, C, s, s),
    the diffusion inversion ẑ_T, then the nearest of the three keys of `decinv.applications.watermark` in mean complex-modulus L1
    distance over the key's disc of Fourier coefficients of channel ``channel`` (`decinv.applications.watermark.distances`).

    ``pipeline``: anything `decinv.applications.watermark_pipelines.watermark_ldm` accepts — the bundled LDM's
    pipeline (``load_profile("tiny")``: naive DDIM inversion with its UNet, ``steps`` default 50) or a real
    text-to-image pipeline (``load_profile("sd21" | "sd15")``: the paper's diffusion inversion with ``prompt`` for
    every image, "" = unknown prompt, ``steps`` default the protocol's). The inversion is that LDM's
    ``invert_diffusion``, the call chapter 5's protocol makes, so a job and the chapter read keys alike.
    ``radius``/``centred_on_dc``: the key disc (official off-DC disc by default);
    ``key_scale``: multiplies the ring values, None = s / 64 (1 on SD's 64×64 latent).

    Calling it on ẑ_0 returns (ẑ_T (B, C, s, s) float32 CPU, one dict per image: ``key`` 0..2, ``distance`` to that
    key, ``distances`` to all three). A latent that is not square, or too small for ``radius``, raises ValueError."""

    def __init__(self, pipeline, *, radius: int = 6, channel: int = 0, centred_on_dc: bool = False,
                 key_scale: float | None = None, steps: int | None = None, prompt: str = "",
                 guidance_scale: float | None = None):

        try:
            self.ldm = watermark_ldm(pipeline, guidance_scale=guidance_scale, steps=steps)
        except TypeError:
            raise TypeError(f"TreeRing needs the bundled LDM's pipeline (load_pipeline / load_profile('tiny')) or a "
                            f"text-to-image pipeline (load_profile('sd21'|'sd15')), got {type(pipeline).__name__}."
                            ) from None
        self.pipeline = pipeline
        self.radius, self.channel, self.centred_on_dc, self.key_scale = radius, channel, centred_on_dc, key_scale
        self.steps, self.prompt, self.guidance_scale = self.ldm.steps, prompt, guidance_scale
        self._keys: dict = {}

    def settings(self) -> dict:
        return {"readout": "tree-ring", "pipeline": self.ldm.description, "diffusion_steps": self.steps,
                "radius": self.radius, "channel": self.channel, "centred_on_dc": self.centred_on_dc,
                "key_scale": self.key_scale, "prompt": self.prompt if self.ldm.conditional else None,
                "guidance_scale": self.guidance_scale}

    def keys(self, side: int):
        """(keys (3, s, s) complex64, mask (s, s) bool) for an s×s latent, built once per side."""

        if side not in self._keys:
            keys, mask = wm.make_keys(side, self.radius, centred_on_dc=self.centred_on_dc)
            self._keys[side] = (keys * (side / 64 if self.key_scale is None else float(self.key_scale)), mask)
        return self._keys[side]

    @torch.no_grad()
    def __call__(self, z0: torch.Tensor):

        if z0.ndim != 4 or z0.shape[-1] != z0.shape[-2]:
            raise ValueError(f"tree-ring keys need square latents (B, C, s, s), got {tuple(z0.shape)}; invert square "
                             "images (--size).")
        z_T = self.ldm.invert_diffusion(z0, [self.prompt] * len(z0))
        z_T = z_T.float().cpu()
        keys, mask = self.keys(z_T.shape[-1])
        d = wm.distances(z_T, keys, mask, self.channel)
        found = d.argmin(dim=1)
        return z_T, [{"key": int(k), "distance": float(d[i, k]), "distances": [float(v) for v in d[i]]}
                     for i, k in enumerate(found)]


# --------------------------------------------------------------------------------------------------------- run


@dataclass
class JobSummary:
    """What `run_job` did (the same on every rank). Counts are over this run's inputs, including those skipped
    because the manifest already held them: ``ok`` + ``errors`` + ``failed`` = ``inputs``. ``inverted_now``:
    images that went through the model in this run (all ranks); ``seconds``: wall time of `run_job` on rank 0,
    model loading excluded; ``images_per_second`` = inverted_now / seconds. ``problems``: (source, status, error)
    of every input that is not ok. ``watermark``: {key: {images, mean distance, ...}} for a watermark job."""

    out: str
    inputs: int
    ok: int
    errors: int
    failed: int
    skipped: int
    inverted_now: int
    seconds: float
    images_per_second: float
    world_size: int
    problems: list = field(default_factory=list)
    watermark: dict | None = None

    @property
    def exit_status(self) -> int:
        """The number of inputs that were not inverted (errors + failed), capped at `MAX_EXIT_STATUS`; 0 if none."""
        return min(self.errors + self.failed, MAX_EXIT_STATUS)


def _settings(model, method: str, steps: int, options: dict, size, readout) -> dict:

    return jsonable({"format": FORMAT, "model": model.name, "model_class": type(model.vae).__name__,
                      "dtype": model.dtype, "method": method, "steps": steps,
                      "options": {**method_options(method), **options}, "size": size,
                      "readout": readout.settings() if readout is not None else None})


def _check_settings(method: str, steps, options: dict, batch_size: int, size) -> int:

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    unknown = set(options) - set(method_options(method))
    if unknown:
        raise TypeError(f"method {method!r} has no option(s) {', '.join(sorted(unknown))}; "
                        f"its options are {method_options(method)}.")
    steps = (0 if method == "encoder" else 100) if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive integer or None, got {size!r}.")
    return steps


def _prepare_folder(out: Path, settings: dict, resume: bool, retry_failed: bool) -> set[str]:
    """Rank 0: create or check the output folder and return the sources already done. Clears ``.tmp`` (what a
    killed run was writing) and, with ``retry_failed``, removes the not-ok rows from their parts."""
    job = out / "job.json"
    tmp = out / ".tmp"
    if out.is_dir() and any(out.iterdir()) and not (job.exists() or (out / "parts").is_dir()):
        raise JobError(f"{out} is not empty and holds no job; the job writes job.json, shards/ and parts/ there: "
                       "choose a new or empty output folder.")
    if job.exists() or (out / "parts").is_dir():
        if not resume:
            raise JobError(f"{out} already holds a job; pass --resume (resume=True) to continue it, or choose a new "
                           "output folder.")
        old = json.loads(job.read_text())["settings"] if job.exists() else settings
        differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if differ:
            said = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in differ)
            raise JobError(f"{out} was made with other settings ({said}); resume it with the same ones, or choose a "
                           "new output folder.")
    elif resume:
        warnings.warn(f"--resume (resume=True): {out} holds no job yet; starting a new one there (check the path if "
                      "you meant to continue an earlier job).", stacklevel=3)
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("shards", "parts"):
        (out / sub).mkdir(exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if not job.exists():
        _write_text(job, json.dumps({"settings": settings, "created": _now()}, indent=1) + "\n", tmp)
    done = set()
    for part in sorted((out / "parts").glob("*.jsonl")):
        rows = [json.loads(line) for line in part.read_text().splitlines()]
        keep = [r for r in rows if r["status"] == "ok"] if retry_failed else rows
        if len(keep) < len(rows):
            if keep:
                _write_text(part, _rows_text(keep), tmp)
            else:
                part.unlink()
        done.update(r["source"] for r in keep)
    return done


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _norms(t: torch.Tensor) -> list[float]:
    return t.reshape(len(t), -1).float().norm(dim=1).tolist()


@torch.no_grad()
def _checks(model, x: torch.Tensor, z: torch.Tensor) -> dict:
    """Per image: residual ||E(D(z)) - E(x)|| and PSNR of D(z), at z and at the encoder's E(x) (2 D + 3 E calls)."""

    x = x.to(model.device, model.dtype)
    e = model.encode(x, check=False, finite=False)
    xz, x0 = model.decode(z, check=False), model.decode(e, check=False)
    return {"residual": _norms(model.encode(xz, check=False, finite=False) - e),
            "residual_encoder": _norms(model.encode(x0, check=False, finite=False) - e),
            "psnr_db": psnr(xz.float(), x.float()).tolist(), "psnr_encoder_db": psnr(x0.float(), x.float()).tolist()}


def _row(source: str, info, batch: Batch, base: dict) -> dict:
    image = None if isinstance(info, str) else {"width": info.width, "height": info.height, "mode": info.mode}
    return {"source": source, "status": "error", "error": info if isinstance(info, str) else None, "image": image,
            **base, "batch": batch.id}


def _invert_batch(batch: Batch, model, method: str, steps: int, options: dict, size, readout, base: dict,
                  on_step=None):
    """Load, invert, check and (optionally) read out one batch: (tensors for its shard, its manifest rows)."""

    start = time.perf_counter()
    rows, good, xs = [], [], []
    for source, info in zip(batch.sources, batch.infos):
        row = _row(source, info, batch, base)
        rows.append(row)
        if isinstance(info, str):
            continue
        try:
            x = load_image(source, size, model.downsample)
            if tuple(x.shape[-2:]) != tuple(batch.shape):
                raise BadImageError(f"{source} is {x.shape[-1]}x{x.shape[-2]} now, {batch.shape[1]}x{batch.shape[0]} "
                                    "when the job was planned: the file changed during the run; resume to redo it")
        except BadImageError as error:
            row["error"] = str(error)
            continue
        good.append(row)
        xs.append(x)
    tensors = {}
    if not good:
        return tensors, rows
    x = torch.cat(xs)
    for row in good:
        row["status"], row["shape"] = "failed", list(x.shape[1:])
    try:
        with warnings.catch_warnings():  # load_image mapped the files to [-1, 1]: bright ones are not a mistake
            warnings.simplefilter("ignore", ImageRangeWarning)
            result = invert(x, model, method, steps, progress=False, callback=on_step, **options)
        checks = _checks(model, x, result.z)
        z_T, readouts = readout(result.z) if readout is not None else (None, None)
    except torch.OutOfMemoryError:
        raise JobError(f"out of memory inverting a batch of {len(x)} images of {x.shape[-1]}x{x.shape[-2]} on "
                       f"{model.device}: use a smaller --batch-size, or set the model's chunk_size.") from None
    except (ValueError, RuntimeError) as error:
        for row in good:
            row["error"] = f"the batch's inversion raised {type(error).__name__}: {error}"
        return tensors, rows
    seconds = (time.perf_counter() - start) / len(good)
    z = result.z.float().cpu()
    for i, row in enumerate(good):
        values = {k: v[i] for k, v in checks.items()}
        row.update(latent_shape=list(z.shape[1:]), steps_run=result.steps_run, solver_status=result.status,
                   seconds=seconds, batch_size=len(good), **values)
        finite = all(math.isfinite(v) or (k.startswith("psnr") and v == math.inf) for k, v in values.items())
        finite = finite and bool(torch.isfinite(z[i]).all())
        if readouts is not None:
            row["watermark"] = {**readouts[i], "z_T_key": f"{row['source']}#z_T"}
            finite = finite and all(math.isfinite(d) for d in readouts[i]["distances"])
        if result.failed:
            row["error"] = result.status
        elif not finite:
            row["error"] = "a non-finite residual, PSNR, latent or key distance (overflow?); try float32"
        else:
            row.update(status="ok", error=None, shard=f"shards/{batch.id}.safetensors", key=row["source"])
            tensors[row["source"]] = z[i].contiguous()
            if z_T is not None:
                tensors[row["watermark"]["z_T_key"]] = z_T[i].contiguous()
    return tensors, rows


def run_job(inputs, out: str | Path, model, *, method: str = "gradfree-adam", steps: int | None = None,
            options: dict | None = None, size: int | None = None, batch_size: int = 16, resume: bool = False,
            retry_failed: bool = False, readout=None, progress: bool = True) -> JobSummary:
    """Invert every image named by ``inputs`` (see `collect_inputs`) with ``model`` (a `decinv.LatentModel`), in
    batches of ``batch_size``, writing shards and manifest rows to the folder ``out`` as each batch finishes.

    ``method``/``steps``/``options``: as for `decinv.invert` (steps default 100, 0 for the encoder). ``size``: resize
    each image's shorter side to ``size`` and centre-crop a square (None: keep its size, cropped to a multiple of the
    autoencoder's factor). ``resume``: continue the job already in ``out`` (same settings; what its manifest holds is
    skipped); without it a folder that holds a job is refused. ``retry_failed``: with ``resume``, also redo the rows
    whose status is not "ok". ``readout``: e.g. `TreeRing`, applied to each batch's latents, its result stored per
    row. ``progress``: a tqdm bar (images, rate, ETA) on rank 0.

    Under torchrun every rank calls this with the same arguments (and its own model, see `rank_device`); see the
    module's docstring for what each rank does. Raises `JobError` before any work for a name that matches nothing or
    a folder made with other settings, and `ValueError`/`TypeError` for bad settings. Returns a `JobSummary`
    (use ``summary.exit_status`` as a command's exit status).
    """
    options = dict(options or {})
    steps = _check_settings(method, steps, options, batch_size, size)
    out = Path(out)
    start = time.perf_counter()
    settings = _settings(model, method, steps, options, size, readout)
    base = {"shape": None, "latent_shape": None, "method": method, "steps": steps, "options": settings["options"],
            "steps_run": None, "solver_status": None, "residual": None, "residual_encoder": None, "psnr_db": None,
            "psnr_encoder_db": None, "seconds": None, "batch_size": None, "shard": None, "key": None}
    group = _Group()
    try:
        shared = None
        if group.rank == 0:
            try:
                sources = collect_inputs(inputs)
                done = _prepare_folder(out, settings, resume, retry_failed)
                pending = [s for s in sources if s not in done]
                shared = {"sources": sources, "batches": plan(pending, size, model.downsample, batch_size)}
            except (JobError, ValueError, OSError) as error:
                said = str(error) if isinstance(error, JobError) else f"{type(error).__name__}: {error}"
                shared = {"error": said}
        shared = group.broadcast(shared)
        if "error" in shared:
            raise JobError(shared["error"])
        mine = shared["batches"][group.rank::group.world]
        _run_batches(mine, out, model, method, steps, options, size, readout, base, settings,
                     progress and group.rank == 0, group)
        group.barrier()
        summary = None
        if group.rank == 0:
            summary = _finish(out, shared["sources"], shared["batches"], time.perf_counter() - start, group.world)
        return group.broadcast(summary)
    finally:
        group.close()


def _run_batches(batches, out: Path, model, method, steps, options, size, readout, base, settings, progress, group):
    from safetensors.torch import save_file

    tmp = out / ".tmp"
    metadata = {"format": FORMAT, "settings": json.dumps(settings)}
    total = sum(len(b.sources) for b in batches)
    desc = "invert" if group.world == 1 else f"invert (rank 0 of {group.world})"
    bar = progress_bar(total=total, desc=desc, unit="img", enabled=progress, dynamic_ncols=True)
    bad = 0
    last = [0.0]

    def on_step(info):  # inner progress: the iteration of the batch in flight, at most twice a second
        now = time.monotonic()
        if now - last[0] > 0.5:
            last[0] = now
            bar.set_postfix_str(f"not ok {bad}, step {info.k + 1}/{steps}", refresh=True)

    try:
        for batch in batches:
            tensors, rows = _invert_batch(batch, model, method, steps, options, size, readout, base,
                                          on_step if progress else None)
            if tensors:
                _atomic(out / "shards" / f"{batch.id}.safetensors",
                        lambda p, t=tensors: save_file(t, str(p), metadata=metadata), tmp)
            _write_text(out / "parts" / f"{batch.id}.jsonl", _rows_text([jsonable(r) for r in rows]), tmp)
            bad += sum(r["status"] != "ok" for r in rows)
            bar.set_postfix_str(f"not ok {bad}", refresh=False)
            bar.update(len(rows))
    finally:
        bar.close()


def _finish(out: Path, sources: list[str], batches: list[Batch], seconds: float, world: int) -> JobSummary:
    """Rank 0, after every rank is done: merge the parts into manifest.jsonl, drop shards no row names (left by a
    kill between a shard and its part), write summary.json."""
    tmp = out / ".tmp"
    rows = read_manifest(out)
    _write_text(out / "manifest.jsonl", _rows_text(rows), tmp)
    named = {row["shard"] for row in rows if row.get("shard")}
    for shard in (out / "shards").glob("*.safetensors"):
        if f"shards/{shard.name}" not in named:
            shard.unlink()
    by_source = {row["source"]: row for row in rows}
    mine = [by_source[s] for s in sources if s in by_source]
    missing = [s for s in sources if s not in by_source]
    if missing:  # cannot happen unless files were deleted while the job ran
        raise JobError(f"{len(missing)} input(s) have no manifest row after the run (e.g. {missing[0]}); resume the "
                       "job to redo them.")
    now = {s for b in batches for s, i in zip(b.sources, b.infos) if not isinstance(i, str)}
    inverted_now = sum(1 for r in mine if r["source"] in now and r["status"] != "error")
    count = lambda status: sum(r["status"] == status for r in mine)
    summary = JobSummary(out=str(out), inputs=len(sources), ok=count("ok"), errors=count("error"),
                         failed=count("failed"), skipped=len(sources) - sum(len(b.sources) for b in batches),
                         inverted_now=inverted_now, seconds=seconds,
                         images_per_second=inverted_now / seconds if seconds > 0 else math.nan, world_size=world,
                         problems=[(r["source"], r["status"], r["error"]) for r in mine if r["status"] != "ok"],
                         watermark=_watermark_table(mine))
    _write_text(out / "summary.json", json.dumps(jsonable({**summary.__dict__, "date": _now()}), indent=1) + "\n",
                tmp)
    return summary


def _watermark_table(rows: list[dict]) -> dict | None:
    """{key: {"images", "mean_distance", "min_distance", "max_distance"}} over the ok rows that hold a key."""
    found = [r["watermark"] for r in rows if r["status"] == "ok" and r.get("watermark")]
    if not found:
        return None
    table = {}
    for key in sorted({w["key"] for w in found}):
        d = [w["distance"] for w in found if w["key"] == key]
        table[key] = {"images": len(d), "mean_distance": sum(d) / len(d), "min_distance": min(d),
                      "max_distance": max(d)}
    return table


def format_summary(summary: JobSummary, *, max_problems: int = 20) -> str:
    """The lines a command prints at the end of a job: counts, rate, the problems, the watermark table."""
    lines = [f"{summary.inputs} input(s): {summary.ok} ok, {summary.errors} refused (error), {summary.failed} failed; "
             f"{summary.inverted_now} inverted in this run by {summary.world_size} process(es) in "
             f"{summary.seconds:.1f} s ({summary.images_per_second:.3g} images/s), {summary.skipped} already in the "
             f"manifest",
             f"manifest: {Path(summary.out) / 'manifest.jsonl'}; latents: decinv.applications.jobs.load_latents({summary.out!r})"]
    for source, status, error in summary.problems[:max_problems]:
        lines.append(f"  {status}: {error}" if source in (error or "") else f"  {status}: {source}: {error}")
    if len(summary.problems) > max_problems:
        lines.append(f"  ... and {len(summary.problems) - max_problems} more (status != \"ok\" in the manifest)")
    if summary.watermark:
        lines.append("tree-ring key | images | mean distance | min | max")
        for key, row in summary.watermark.items():
            lines.append(f"{int(key) + 1:>13} | {row['images']:>6} | {row['mean_distance']:>13.4g} | "
                         f"{row['min_distance']:.4g} | {row['max_distance']:.4g}")
        lines.append("(keys numbered as the paper's watermarks 1, 2, 3; the manifest's 'key' counts from 0)")
    return "\n".join(lines)
