"""Inversion runs as data: settings keyed by their parameters, tidy traces, and a record that can be replayed.

A chapter that studies one model runs many settings on one set of instances (x = 8-bit D(z*), z* known). `Lab` runs
each `Setting` with `decinv.invert` and keeps, per iteration k and per image, the latent error NMSE(z_k, z*), the
residual the method drives down, the wall time, and at a grid of k the pixel error of D(z_k) against x (PSNR). Runs
are keyed by their settings (method, bits, lr, schedule, steps, ...), never by display strings; labels are derived
from the keys.

`Lab.save` writes everything to one JSON record, with where and when it was measured; `Lab.replay` reads it back, so
that a chapter whose model is not on this machine renders the recorded run through the same calls (`Lab.run` then
returns the recorded `Run` for a setting, and a setting that was never recorded is an error saying how to run live).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from decinv.core.measure import environment
from decinv.generation.experiments import real_instances
from decinv.core.metrics import nmse_db, psnr
from decinv.core.models import load_model
from decinv.core.solvers import Operator, invert

SCHEMA = "decinv-lab/1"
DTYPES = {32: torch.float32, 16: torch.float16}
# k at which D(z_k) is decoded for the pixel error (one decoder pass each; the iterates themselves are free)
PIXEL_GRID = (0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 40, 50, 70, 100, 150, 200, 300)
STEP_METHODS = ("forward-step", "inertial-km", "anderson")  # their "lr" is the step size rho


class NotRecordedError(LookupError):
    """A replayed lab was asked for a setting its record does not hold."""


@dataclass(frozen=True)
class Setting:
    """One inversion setting. ``lr``: Adam's (maximal) learning rate, or the step size rho of the forward step,
    inertial KM and Anderson. ``schedule``: "paper" (gradient-free Adam's warm-up/cosine/constant), "warmup-cosine"
    (gradient-based, [14]) or None (fixed). ``bits``: 32 (float32) or 16 (float16, the paper's 16-bit). ``n``: use
    only the first n instances (None: all). ``alpha``: KM's inertia; ``memory``: Anderson's m. ``schedule_cap``:
    gradient-free Adam's schedule horizon is min(steps, schedule_cap) (None: the solver's default, 100; 0: no cap).
    """

    method: str
    steps: int = 100
    bits: int = 32
    lr: float | None = None
    schedule: str | None = None
    alpha: float | None = None
    memory: int | None = None
    n: int | None = None
    schedule_cap: int | None = None

    def __post_init__(self):
        if self.bits not in DTYPES:
            raise ValueError(f"bits must be 32 or 16, got {self.bits!r}.")
        if self.schedule is not None and self.method not in ("gradfree-adam", "gradient-adam"):
            raise ValueError(f"{self.method} has no learning-rate schedule; leave schedule=None.")
        if self.schedule_cap is not None and self.schedule != "paper":
            raise ValueError("schedule_cap is the horizon cap of schedule='paper' (gradient-free Adam); "
                             f"leave it None for {self.method} with schedule={self.schedule!r}.")

    def options(self) -> dict:
        """The keyword options `decinv.invert` takes for this setting."""
        out = {}
        if self.lr is not None:
            out["step_size" if self.method in STEP_METHODS else "lr"] = self.lr
        if self.method in ("gradfree-adam", "gradient-adam"):
            out["schedule"] = self.schedule
        if self.alpha is not None:
            out["alpha"] = self.alpha
        if self.memory is not None:
            out["memory"] = self.memory
        if self.schedule_cap is not None:
            out["schedule_cap"] = self.schedule_cap
        return out

    @property
    def key(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @property
    def label(self) -> str:
        """A display label derived from the fields, e.g. "gradfree-adam, 32-bit, lr 0.01 paper schedule, 100 it."."""
        parts = [self.method, f"{self.bits}-bit"]
        if self.lr is not None:
            name = "rho" if self.method in STEP_METHODS else "lr"
            sched = {None: "", "paper": " paper schedule", "warmup-cosine": " warm-up + cosine"}[self.schedule]
            fixed = " fixed" if self.method in ("gradfree-adam", "gradient-adam") and self.schedule is None else ""
            parts.append(f"{name} {self.lr:g}{sched}{fixed}")
        if self.schedule_cap is not None:
            parts.append(f"horizon cap {self.schedule_cap}" if self.schedule_cap else "no horizon cap")
        if self.alpha is not None:
            parts.append(f"alpha {self.alpha:g}")
        if self.memory is not None:
            parts.append(f"m {self.memory}")
        return ", ".join(parts) + (f", {self.steps} it." if self.steps else "")


@dataclass
class Run:
    """One setting's run. Arrays are per iteration and image: ``nmse_db`` (K+1, B) with row 0 the start E(x) and
    row k the iterate after k iterations; ``residual`` (K, B) what the method drives down at iteration k (||T(z_k)||,
    or ||D(z_k) - x|| for the gradient-based method); ``seconds`` (K,) wall time to the end of iteration k;
    ``psnr_db`` {k: (B,)} PSNR of D(z_k) against x at the k of `PIXEL_GRID`; ``eq14`` (when asked for) the
    per-image min_k of the Eq. 14 ratio over the window and ||z_window - z_inf||."""

    setting: Setting
    status: str
    total_seconds: float
    nmse_db: np.ndarray
    residual: np.ndarray
    seconds: np.ndarray
    psnr_db: dict
    eq14: dict | None = None
    info: dict = field(default_factory=dict)

    @property
    def steps_run(self) -> int:
        return len(self.seconds)

    def frame(self):
        """Tidy per-iteration rows (means over images): the setting's fields, k, seconds, nmse_db, psnr_db (NaN off
        the pixel grid), residual (NaN at k = 0)."""
        import pandas as pd

        k = np.arange(self.steps_run + 1)
        seconds = np.concatenate([[0.0], self.seconds])
        residual = np.concatenate([[math.nan], self.residual.mean(1)]) if self.steps_run else [math.nan]
        pix = np.array([np.mean(self.psnr_db[i]) if i in self.psnr_db else math.nan for i in k])
        rows = pd.DataFrame({"k": k, "seconds": seconds, "nmse_db": self.nmse_db.mean(1), "psnr_db": pix,
                             "residual": residual})
        for name, value in reversed(list(dataclasses.asdict(self.setting).items())):
            rows.insert(0, name, value)
        return rows

    def to_dict(self) -> dict:
        r = lambda a: np.round(np.asarray(a, dtype=float), 5).tolist()
        return {"setting": dataclasses.asdict(self.setting), "status": self.status,
                "total_seconds": self.total_seconds, "nmse_db": r(self.nmse_db), "residual": r(self.residual),
                "seconds": r(self.seconds), "psnr_db": {str(k): r(v) for k, v in self.psnr_db.items()},
                "eq14": {k: r(v) for k, v in self.eq14.items()} if self.eq14 else None, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> "Run":
        b = len(d["nmse_db"][0])
        return cls(setting=Setting(**d["setting"]), status=d["status"], total_seconds=d["total_seconds"],
                   nmse_db=np.asarray(d["nmse_db"]), residual=np.asarray(d["residual"]).reshape(-1, b),
                   seconds=np.asarray(d["seconds"]), psnr_db={int(k): np.asarray(v) for k, v in d["psnr_db"].items()},
                   eq14={k: np.asarray(v) for k, v in d["eq14"].items()} if d.get("eq14") else None,
                   info=d.get("info", {}))


def eq14_ratio_min(points: torch.Tensor, values: torch.Tensor, z_inf: torch.Tensor, t_inf: torch.Tensor,
                   window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image: min over k in [0, window] of Eq. 14's <T z_inf - T p_k, z_inf - p_k> / ||T z_inf - T p_k||^2
    (T values give the same ratio as E(D(.)) values, since T = ED - E(x)), and ||p_window - z_inf||.
    ``points`` (K, B, ...) where T was evaluated, ``values`` their T, ``z_inf``/``t_inf`` (B, ...)."""
    p, v = points[: window + 1], values[: window + 1]
    k, b = p.shape[:2]
    dz = (z_inf.unsqueeze(0) - p).reshape(k, b, -1).double()
    dt = (t_inf.unsqueeze(0) - v).reshape(k, b, -1).double()
    ratio = (dt * dz).sum(-1) / (dt**2).sum(-1)
    dist = (p[min(window, k - 1)] - z_inf).reshape(b, -1).double().norm(dim=1)
    return ratio.min(0).values.numpy(), dist.numpy()


class Lab:
    """Runs `Setting`\\ s on one instance set with one model (live), or replays a record of such runs.

    Live: ``Lab(model, instances)``; x and z* are `decinv.generation.experiments.Instances`. 16-bit settings run on a float16
    *copy* of the model (the model passed in is never changed). Replay: ``Lab.replay(path)``. ``pixel_grid``: the
    k at which D(z_k) is decoded for the pixel error (default `PIXEL_GRID`; ``()`` skips those decoder passes)."""

    def __init__(self, model, instances, *, meta: dict | None = None, pixel_grid=PIXEL_GRID):
        self.model, self.instances = model, instances
        self.pixel_grid = tuple(pixel_grid)
        self.runs: dict[str, Run] = {}
        self.pictures: dict[str, np.ndarray] = {}
        self.scalars: dict[str, float] = {}
        self.meta = dict(meta or {})
        self._copies = {}

    @property
    def live(self) -> bool:
        return self.model is not None

    def model_at(self, bits: int):
        """The model in ``bits`` (32 or 16): the lab's own model, or a copy cast once and kept (never a cast in
        place, so the 32-bit model's weights are never rounded through float16)."""
        return self._model(bits)

    def _model(self, bits: int):
        if self.model.dtype == DTYPES[bits]:
            return self.model
        if bits not in self._copies:
            self._copies[bits] = copy.deepcopy(self.model).to(dtype=DTYPES[bits])
        return self._copies[bits]

    def run(self, setting: Setting | None = None, *, eq14_window: int | None = None, **fields) -> Run:
        """The run of ``setting`` (or of ``Setting(**fields)``): computed once when live, read from the record when
        replayed. ``eq14_window``: also compute Eq. 14 along the path (gradient-free methods; z_inf = the last
        iterate, one more E+D call)."""
        setting = setting or Setting(**fields)
        cached = self.runs.get(setting.key)
        if cached is not None and (eq14_window is None or cached.eq14 is not None):
            return cached
        if not self.live:
            raise NotRecordedError(
                f"the record holds no run of [{setting.label}]{' with Eq. 14' if eq14_window else ''}; run it live: "
                "set DECINV_TAESD_DIR to the folder with the checkpoints (see the chapter's first section).")
        run = self._execute(setting, eq14_window)
        self.runs[setting.key] = run
        return run

    def _execute(self, setting: Setting, eq14_window: int | None) -> Run:
        model, inst = self._model(setting.bits), self.instances
        n = setting.n or len(inst.x)
        x, z_true = inst.x[:n], inst.z_true[:n]
        keep = {k for k in self.pixel_grid if k <= setting.steps}
        iterates, points, values = {}, [], []

        def callback(info):
            if info.k + 1 in keep:
                iterates[info.k + 1] = info.z.detach().clone()
            if eq14_window is not None:
                points.append(info.point.detach().clone())
                values.append(info.operator.detach().clone())

        result = invert(x, model, setting.method, setting.steps, z_true=z_true, callback=callback, progress=False,
                        **setting.options())
        start = model.encode(x.to(model.device, model.dtype))
        iterates[0] = start
        with torch.no_grad():
            pixel = {k: psnr(model.decode(z, check=False).float(), x.float().to(model.device)).cpu().numpy()
                     for k, z in sorted(iterates.items()) if k in self.pixel_grid}
        first = nmse_db(start.float(), z_true.float().to(start.device)).cpu().numpy()[None]
        trace = result.trace
        nmse = np.concatenate([first, trace.nmse_db]) if len(trace) else first
        eq14 = None
        if eq14_window is not None:
            if not points or values[0] is None:
                raise ValueError(f"Eq. 14 needs the operator T along the path; {setting.method} does not evaluate it.")
            with torch.no_grad():
                t_inf = Operator(model, x, start)(result.z)  # T(z_inf), with the E(x) the run started from
            ratio_min, dist = eq14_ratio_min(torch.stack(points).float(), torch.stack(values).float(),
                                             result.z.float(), t_inf.float(), eq14_window)
            eq14 = {"min_ratio": ratio_min, "dist_to_end": dist, "window": np.asarray([eq14_window])}
        return Run(setting, result.status, result.seconds, nmse, trace.residual, trace.seconds, pixel, eq14,
                   {k: v for k, v in result.info.items() if isinstance(v, (int, float, bool, str))})

    def scalar(self, name: str, compute) -> float:
        """A number derived live by ``compute()`` (a callable) and kept in the record under ``name``; a replay
        returns the recorded value, so that settings built from it (e.g. a step size) find their recorded runs."""
        if name not in self.scalars:
            if not self.live:
                raise NotRecordedError(f"the record holds no value {name!r}; run the chapter live to make it.")
            self.scalars[name] = float(compute())
        return self.scalars[name]

    def picture(self, name: str, images: torch.Tensor | None = None) -> np.ndarray:
        """Images (N, 3, H, W) in [-1, 1] stored as 8-bit (N, H, W, 3) under ``name``; replay returns them."""
        if images is not None and self.live:
            arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu()
            self.pictures[name] = arr.numpy()
        if name not in self.pictures:
            raise NotRecordedError(f"the record holds no picture {name!r}; run the chapter live to make it.")
        return self.pictures[name]

    def frame(self):
        """All runs' tidy rows in one data frame (see `Run.frame`)."""
        import pandas as pd

        return pd.concat([r.frame() for r in self.runs.values()], ignore_index=True)

    def save(self, path: str | os.PathLike, **meta) -> Path:
        """Write the record (runs, pictures, meta + where/when measured) atomically: a temporary file, then rename."""
        env = environment(self.model.device if self.live else torch.device("cpu"))
        measured = {"date": env["date"], "commit": env["git_commit"], "dirty": env["git_dirty"],
                    "device": env["device_name"], "cpu": env["cpu_name"], "cpu_count": env["cpu_count"],
                    "torch_threads": env["torch_threads"], "torch": env["torch"], "diffusers": env["diffusers"],
                    "loadavg_at_save": env["loadavg_start"]}
        record = {"schema": SCHEMA, "meta": {**self.meta, **meta, "measured": measured},
            "runs": [r.to_dict() for r in self.runs.values()], "scalars": self.scalars,
            "pictures": {k: {"shape": list(v.shape), "uint8_base64": base64.b64encode(v.tobytes()).decode()}
                         for k, v in self.pictures.items()}}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=0))
        tmp.replace(path)
        return path

    @classmethod
    def open(cls, record: str | os.PathLike, *, checkpoints: str | os.PathLike | None, n: int, size: int,
             seed: int = 0, variant: str | None = None, settings: dict | None = None) -> "Lab":
        """Live when ``checkpoints`` is given: the model `decinv.load_model` loads from it (``variant`` for TAESD
        checkpoints) on the CPU, and ``n`` instances z* = E(x0) of real ``size``² photo crops (scikit-image's;
        `decinv.generation.experiments.real_instances`), x = 8-bit D(z*). Otherwise the replay of ``record``, which must have
        been measured on the same instances (n, size, seed) and ``settings`` (a chapter's other parameters), or it
        is an error, raised here before any cell runs, naming each difference and the recorded value."""
        wanted = {"n_images": n, "size": size, "seed": seed, **(settings or {})}
        if checkpoints is not None:
            model = load_model(checkpoints, variant=variant, device="cpu")
            inst = real_instances(model, n, size, size, seed=seed)
            config = model.vae.config
            sums = {f: getattr(config, f"{f}_sha256", None) for f in ("encoder", "decoder")}
            return cls(model, inst, meta={**wanted, "model": repr(model).replace(repr(str(checkpoints)), "<dir>"),
                                          "instances": inst.how, "sha256": sums})
        if not Path(record).is_file():
            raise FileNotFoundError(f"no checkpoints given and no record at {record}: set DECINV_TAESD_DIR to the "
                                    "folder with the checkpoints to run live.")
        lab = cls.replay(record)
        same = lambda a, b: a == b or (isinstance(a, (list, tuple)) and list(a) == list(b or ()))
        differ = {k: (lab.meta.get(k), v) for k, v in wanted.items() if not same(lab.meta.get(k), v)}
        if differ:
            said = ", ".join(f"{k}: recorded {r}, asked {a}" for k, (r, a) in differ.items())
            raise ValueError(f"the record {record} was measured with other parameters ({said}); use the recorded "
                             "values, or run live with the checkpoints (DECINV_TAESD_DIR).")
        return lab

    @classmethod
    def replay(cls, path: str | os.PathLike) -> "Lab":
        """A lab that returns the runs recorded in ``path`` (written by `Lab.save`)."""
        record = json.loads(Path(path).read_text())
        if record.get("schema") != SCHEMA:
            raise ValueError(f"{path} is not a decinv lab record (schema {record.get('schema')!r}, "
                             f"expected {SCHEMA!r}).")
        lab = cls(None, None, meta=record["meta"])
        for d in record["runs"]:
            run = Run.from_dict(d)
            lab.runs[run.setting.key] = run
        lab.scalars.update(record.get("scalars", {}))
        for name, p in record["pictures"].items():
            lab.pictures[name] = np.frombuffer(base64.b64decode(p["uint8_base64"]), np.uint8).reshape(p["shape"])
        return lab


def stopping(run: Run, tol: float | None = None, budget: int | None = None):
    """What a stopping rule returns, per image, from a recorded run: the latent NMSE (dB) and the iterate index.

    * ``"tol"``: `decinv.invert`'s ``tol`` (a sample stops at the first iterate z_k whose residual is below ``tol``;
      the full run otherwise);
    * ``"budget"``: a fixed budget of ``budget`` iterations (default: the whole run);
    * ``"smallest residual"``: the iterate with the smallest residual, which a user can pick without knowing z*.
    Returns a tidy frame: rule, image, k, nmse_db."""
    import pandas as pd

    res, nmse = run.residual, run.nmse_db  # residual[k] is measured at iterate k (nmse row k)
    steps, b = res.shape
    rows = []
    for i in range(b):
        picks = {"budget": min(budget, steps) if budget is not None else steps,
                 "smallest residual": int(np.argmin(res[:, i]))}
        if tol is not None:
            below = np.flatnonzero(res[:, i] < tol)
            picks["tol"] = int(below[0]) if below.size else steps
        for rule, k in picks.items():
            rows.append({"rule": rule, "image": i, "k": k, "nmse_db": float(nmse[k, i])})
    return pd.DataFrame(rows)


def at_time(run: Run, seconds: float) -> float:
    """Mean latent NMSE (dB) of the last iterate finished within ``seconds`` (the start E(x) if none)."""
    done = np.flatnonzero(run.seconds <= seconds)
    return float(run.nmse_db[done[-1] + 1 if done.size else 0].mean())


def time_to(run: Run, nmse: float) -> float:
    """Seconds until the mean latent NMSE first reaches ``nmse`` dB (inf if it never does)."""
    mean = run.nmse_db.mean(1)[1:]
    hit = np.flatnonzero(mean <= nmse)
    return float(run.seconds[hit[0]]) if hit.size else math.inf
