"""The input contract of `decinv.invert` and ``decinv invert``, checked by a property-based campaign (Hypothesis).

For generated arguments (shapes, batch sizes, odd sizes, dtypes, value ranges with NaN/Inf and out-of-range images,
chunk sizes, every method with valid and invalid options, steps 0/1/huge, tol, ground truths, callbacks, model
precisions) every call must end in one of two ways:

* a result: ``z`` finite, of the model's dtype, one latent per image; its status true ("completed": every step ran;
  "converged": every sample's residual fell below tol; "failed: ...": a non-finite value stopped it early);
* an error of a documented class (`ValueError`, `TypeError`, and their subclasses `UnsupportedConfigError`,
  `BadImageError`; `RuntimeError` subclasses `NonFiniteLatentError`, `ModelNotAvailableError`), raised by decinv
  itself, never from deep inside torch or diffusers, with a message that names what to change;

and never changes its input tensors or the model. The command line must never print a traceback: it exits 0 with
every manifest row "ok", or with the number of failed inputs, each row saying why, or with 2 and one "error:" line.

Profiles: ``make test`` runs a bounded campaign (profile "decinv-fast", derandomised, about 10 s on 2 cores);
``DECINV_HYPOTHESIS=long pytest tests/test_contract.py`` runs the long one (randomised, many more examples, failing
examples kept in .hypothesis/ and replayed first). Cases the campaign found, once fixed, stay as ``@example``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="the contract campaign needs hypothesis (pip install -e .[test])")
from hypothesis import HealthCheck, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import decinv  # noqa: E402
from decinv.core.models import NonFiniteLatentError  # noqa: E402
from tests.autoencoder_zoo import tiny_dc, tiny_flux2, tiny_kl, tiny_taesd  # noqa: E402

settings.register_profile("decinv-fast", max_examples=60, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("decinv-long", max_examples=1500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = "decinv-long" if os.environ.get("DECINV_HYPOTHESIS", "").lower() == "long" else "decinv-fast"
settings.load_profile(PROFILE)
FAST = PROFILE == "decinv-fast"

DECINV = str(Path(decinv.__file__).parent)
DOCUMENTED = (ValueError, TypeError, NonFiniteLatentError)


# --- the models: tiny random autoencoders, built once ------------------------------------------------------------

_MODELS: dict = {}


def model_for(kind: str, dtype: torch.dtype) -> decinv.LatentModel:
    """A cached tiny random LatentModel (x2 for KL/TAESD, x4 for DC-AE, x4 with 16 channels for FLUX.2)."""
    key = (kind, dtype)
    if key not in _MODELS:
        build = {"kl": tiny_kl, "taesd": tiny_taesd, "dc": tiny_dc, "flux2": tiny_flux2}[kind]
        _MODELS[key] = decinv.load_model(build(), device="cpu", dtype=dtype)
    return _MODELS[key]


def fingerprint(model) -> tuple:
    vae = model.vae
    return ([p.detach().clone() for p in vae.parameters()], [b.detach().clone() for b in vae.buffers()],
            [m.training for m in vae.modules()], [p.requires_grad for p in vae.parameters()],
            model.dtype, model.device, model.chunk_size)


def same_fingerprint(a, b) -> bool:
    tensors_a, buffers_a, *rest_a = a
    tensors_b, buffers_b, *rest_b = b
    return (all(torch.equal(x, y) for x, y in zip(tensors_a, tensors_b))
            and all(torch.equal(x, y) for x, y in zip(buffers_a, buffers_b)) and rest_a == rest_b)


def same_tensor(a, b) -> bool:
    """Equal values, NaN where NaN was, same dtype/shape, no gradient attached afterwards."""
    if not isinstance(a, torch.Tensor):
        return True
    if a.dtype != b.dtype or a.shape != b.shape or a.grad is not None:
        return False
    if a.is_floating_point() or a.is_complex():
        return bool(torch.equal(torch.nan_to_num(a.detach(), 7.0, 8.0, 9.0), torch.nan_to_num(b, 7.0, 8.0, 9.0))
                    and torch.equal(a.detach().isnan(), b.isnan()))
    return bool(torch.equal(a, b))


# --- strategies -------------------------------------------------------------------------------------------------

X_DTYPES = [torch.float32] * 6 + [torch.float16, torch.bfloat16, torch.float64]


@st.composite
def images(draw, side=(4, 8, 12, 16)):
    """Valid images or videos: every layout, batch, size (a multiple of every zoo model's factor), floating dtype and
    value range within [-1, 1] (check_images' tolerance included), contiguous or not, requiring grad or not."""
    video = draw(st.integers(0, 4)) == 0
    batch, h, w = draw(st.integers(1, 3)), draw(st.sampled_from(side)), draw(st.sampled_from(side))
    shape = (batch, draw(st.integers(1, 2)), 3, h, w) if video else (batch, 3, h, w)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["uniform", "uniform", "uniform", "constant", "saturated", "tolerance"]))
    values = torch.rand(shape, generator=g) * 2 - 1
    if kind == "constant":
        values = torch.full(shape, draw(st.sampled_from([-1.0, 0.0, 1.0])))
    elif kind == "saturated":
        values = values.sign()
    elif kind == "tolerance":
        values = values * 1.0009  # up to 1.0009: inside check_images' 1e-3 tolerance
    x = values.to(draw(st.sampled_from(X_DTYPES)))
    if draw(st.booleans()):
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, not contiguous
    if draw(st.integers(0, 5)) == 3:
        x = x.clone().requires_grad_(True)
    return x


OPTIONS = {  # option: (valid values, invalid values)
    "lr": ([0.01, 0.1, 1.0, 1e3], [0, -1.0, math.nan, math.inf, True, "0.1", None]),
    "step_size": ([0.001, 0.1, 0.5, 1.0, 1e3], [0, -1.0, math.nan, math.inf, True, "0.1", None]),
    "alpha": ([0.0, 0.5, 0.9, 0.999], [1.0, -0.1, math.nan, "0.9"]), "beta": ([None, 0.5, 2.0], [0.0, -1.0, "1"]),
    "schedule_cap": ([None, 1, 3, 100], [0, -3, 2.5, True]),
    "betas": ([(0.9, 0.999), (0.0, 0.0), [0.5, 0.9]], [(1.0, 0.5), 0.9, (0.9,), "ab"]),
    "eps": ([None, 1e-8, 1e-4, 0.0], [-1.0, math.nan, "x"]),
    "master_dtype": ([torch.float32, None, torch.float64, "float16", "bf16"], ["bogus", torch.int32, 32]),
    "memory": ([0, 1, 2, 5], [-1, 2.5, True, "2"]), "reg": ([0.0, 1e-8, 1.0], [-1.0, math.nan, math.inf]),
    "safeguard": ([True, False], ["false", 1, None]),
}


@st.composite
def calls(draw):
    """Everything else of one valid `decinv.invert` call: method, options, steps, tol, chunking, ground truth,
    callback and the model (its kind and dtype)."""
    method = draw(st.sampled_from(list(decinv.METHODS)))
    names = list(decinv.method_options(method))
    options = {}
    for name in draw(st.lists(st.sampled_from(names), unique=True, max_size=3)) if names else []:
        default = decinv.method_options(method)[name]
        options[name] = draw(st.sampled_from([default, None] if name == "schedule" else OPTIONS[name][0]))
    if options.get("eps") == 1e-8 and options.get("master_dtype") == "float16":
        options["eps"] = 1e-4  # 1e-8 is 0 in a float16 state: refused (test_adam_eps_follows_a_16_bit_state)
    tol = draw(st.sampled_from([None, None, None, 0.0, 1e-3, 1.0, 1e9, math.inf]))
    if method == "encoder":
        steps = draw(st.sampled_from([None, 0]))
    elif tol is not None and tol >= 1e9:
        steps = draw(st.sampled_from([1, 10**9]))  # every residual is below tol at step 0: a huge count ends at once
    else:
        steps = draw(st.sampled_from([0, 1, 2, 3, 3, 3, 3, None]))  # None: the default 100 (cheap on these models)
    dtype = draw(st.sampled_from([torch.float32] * 4 + [torch.float64, torch.bfloat16]))
    if dtype == torch.bfloat16 and method != "encoder" and (steps is None or steps > 2) and \
            not (tol is not None and tol >= 1e9):
        steps = 2  # 16-bit convolutions are slow on a CPU
    return dict(method=method, options=options, tol=tol, steps=steps,
                chunk_size=draw(st.sampled_from([None, None, 1, 2, 1000])),
                truth=draw(st.sampled_from(["none", "none", "exact", "noisy"])),
                callback=draw(st.sampled_from([None, "record"])),
                model=(draw(st.sampled_from(["kl", "kl", "taesd", "dc", "flux2"])), dtype))


def spoil(draw, x, call):
    """Make exactly one argument invalid; return (x, call, words one of which the error message must contain)."""
    what = draw(st.sampled_from(["method", "steps", "tol", "chunk_size", "option", "unknown option", "x dtype",
                                 "x range", "x nan", "x shape", "x size", "x type", "z_true", "callback", "model",
                                 "encoder steps"]))
    call = dict(call, options=dict(call["options"]))
    if what == "method":
        call["method"], call["options"] = "newton", {}
        return x, call, ["method"]
    if what == "steps":
        call["steps"] = draw(st.sampled_from([-1, True, 2.0, "3"] + ([2] if call["method"] == "encoder" else [])))
        return x, call, ["steps"]
    if what == "tol":
        call["tol"] = draw(st.sampled_from([-1.0, math.nan, "1e-3", True]))
        return x, call, ["tol"]
    if what == "chunk_size":
        call["chunk_size"] = draw(st.sampled_from([0, -1, 1.5, "2"]))
        return x, call, ["chunk_size"]
    if what == "option" and call["method"] != "encoder":
        name = draw(st.sampled_from(sorted(decinv.method_options(call["method"]))))
        bad = ["linear", "none", 1] if name == "schedule" else OPTIONS[name][1]
        call["options"][name] = draw(st.sampled_from(bad))
        return x, call, [name]
    if what in ("option", "unknown option"):
        call["options"]["momentum"] = 0.5
        return x, call, ["momentum"]
    if what == "x dtype":
        return x.detach().to(draw(st.sampled_from([torch.uint8, torch.int64, torch.bool, torch.complex64]))), call, \
            ["dtype"]
    if what == "x range":  # 0-255 pixel values, or just past the tolerance, never inside [-1, 1] everywhere
        return x.detach().float().abs() * draw(st.sampled_from([127.5, 0.5])) + draw(st.sampled_from([2.0, 1.01])), \
            call, ["[-1, 1]"]
    if what == "x nan":
        x = x.detach().clone().contiguous()
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return x, call, ["NaN"]
    if what == "x shape":
        x = x.detach()
        image = x.reshape(-1, *x.shape[-3:])[0]
        bad = {"one image without a batch axis": (image, "x[None]"), "no images": (x[:0], "empty"),
               "one channel": (x[..., :1, :, :], "channels"), "six axes": (x[None, None] if x.dim() == 4 else x[None],
                                                                         "shape")}
        shaped, word = bad[draw(st.sampled_from(sorted(bad)))]
        return shaped, call, [word]
    if what == "x size":
        return x.detach()[..., :draw(st.sampled_from([1, 3, 5])), :], call, ["divisible"]
    if what == "x type":
        return draw(st.sampled_from([x.detach().float().numpy(), x.detach().tolist()])), call, ["torch.Tensor"]
    if what == "z_true":
        call["truth"] = draw(st.sampled_from(["wrong shape", "nan", "int", "list", "wrong batch"]))
        return x, call, ["z_true"]
    if what == "callback":
        call["callback"] = "not callable"
        return x, call, ["callback"]
    if what == "model":
        call["model"] = ("raw", call["model"][1])
        return x, call, ["load_model"]
    call["method"], call["steps"], call["options"] = "encoder", draw(st.integers(1, 3)), {}
    return x, call, ["steps=0"]


# --- the property -----------------------------------------------------------------------------------------------

def raised_in_decinv(error: BaseException) -> bool:
    """Whether the innermost frame of the traceback is decinv's own code (a check), not torch's or diffusers'."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(DECINV)


def truth_for(kind: str, model, x):
    """The ground truth passed as z_true: None, E(x) (exact), E(x) + 0.01, or a broken one."""
    if kind == "none":
        return None
    if kind == "list":
        return [0.0]
    try:
        if not x.is_floating_point():
            raise TypeError("x is the bad argument")
        z = model.encode(x.detach().to(model.dtype)).float()
    except (ValueError, TypeError, AttributeError):  # x itself is the bad argument: any latent will do
        z = torch.zeros(1, model.latent_channels, 2, 2)
    return {"exact": z, "noisy": z + 0.01, "wrong shape": z[..., :1, :], "nan": torch.full_like(z, math.nan),
            "int": z.long(), "wrong batch": torch.cat([z, z])}[kind]


def run_invert(x, call):
    """One `decinv.invert` call; returns (result or the error raised, the model, the recorded callback steps),
    after checking that neither x, z_true nor the model were changed."""
    if call["model"][0] == "raw":
        model = model_for("kl", call["model"][1])
        target, z_true = model.vae, None
    else:
        model = target = model_for(*call["model"])
        z_true = truth_for(call["truth"], model, x)
    seen = []
    callback = {"record": seen.append, "not callable": 1}.get(call["callback"])
    x_before = x.detach().clone() if isinstance(x, torch.Tensor) else None
    z_before = z_true.detach().clone() if isinstance(z_true, torch.Tensor) else None
    state = fingerprint(model)
    try:
        outcome = decinv.invert(x, target, call["method"], call["steps"], z_true=z_true, tol=call["tol"],
                                chunk_size=call["chunk_size"], progress=False, callback=callback, **call["options"])
    except DOCUMENTED as error:
        outcome = error
    assert x_before is None or same_tensor(x, x_before), "invert changed its input x"
    assert z_before is None or same_tensor(z_true, z_before), "invert changed z_true"
    assert same_fingerprint(fingerprint(model), state), "invert changed the model"
    return outcome, model, seen


def check_result(x, call, result, model, seen) -> None:
    """A finite latent per image in the model's dtype, and a status that tells the truth."""
    steps = call["steps"] if call["steps"] is not None else (0 if call["method"] == "encoder" else 100)
    event(f"result: {result.status.split(':')[0]} ({call['method']})")
    assert torch.isfinite(result.z.float()).all(), f"non-finite z under status {result.status!r}"
    assert result.z.dtype == result.dtype == model.dtype and result.precision.startswith(str(model.dtype)[6:])
    assert result.z.shape[:-3] == x.shape[:-3] and result.z.shape[-3] == model.latent_channels
    assert result.z.shape[-2:] == (x.shape[-2] // model.downsample, x.shape[-1] // model.downsample)
    assert len(result.trace) == result.steps_run and (call["callback"] is None or len(seen) == result.steps_run)
    if result.status == "completed":
        assert result.steps_run == steps
    elif result.status.startswith("converged"):
        assert result.steps_run <= steps and (result.trace.residual < call["tol"]).any(axis=0).all()
    else:
        assert result.failed and "non-finite" in result.status and result.steps_run < steps, result.status


def check_invert(x, call):
    """A valid call: it must give a result (every documented refusal here would be a fault)."""
    outcome, model, seen = run_invert(x, call)
    if isinstance(outcome, BaseException):
        raise AssertionError(f"a valid call was refused: {type(outcome).__name__}: {outcome}") from outcome
    check_result(x, call, outcome, model, seen)


@settings(max_examples=40 if FAST else 1000)
@given(x=images(), call=calls())
@example(x=torch.full((1, 3, 8, 8), 0.5), call=dict(method="anderson", options={"safeguard": False}, tol=None,
                                                    steps=2, chunk_size=None, truth="none", callback=None,
                                                    model=("kl", torch.float32)))
@example(x=torch.full((2, 3, 8, 8), 0.5), call=dict(method="gradfree-adam", options={"master_dtype": "float16"},
                                                    tol=math.inf, steps=10**9, chunk_size=1, truth="exact",
                                                    callback="record", model=("kl", torch.float32)))
@example(x=torch.full((1, 3, 8, 8), 0.5).requires_grad_(True),
         call=dict(method="gradient-adam", options={}, tol=None, steps=1, chunk_size=None, truth="exact",
                   callback=None, model=("kl", torch.float32)))
@example(x=torch.full((1, 3, 8, 8), 0.5), call=dict(method="forward-step", options={"step_size": 1e3}, tol=None,
                                                    steps=3, chunk_size=None, truth="none", callback=None,
                                                    model=("kl", torch.float32)))
@example(x=torch.full((1, 3, 8, 8), 0.5), call=dict(method="gradfree-adam", options={}, tol=None, steps=0,
                                                    chunk_size=None, truth="none", callback=None,
                                                    model=("kl", torch.float32)))  # found: ZeroDivisionError
def test_valid_calls_give_a_finite_result_whose_status_is_true(x, call):
    check_invert(x, call)


@settings(max_examples=40 if FAST else 1000)
@given(data=st.data(), x=images(side=(8, 16)), call=calls())
def test_one_bad_argument_is_refused_by_decinv_naming_it(data, x, call):
    x, call, words = spoil(data.draw, x, call)
    outcome, model, seen = run_invert(x, call)
    if not isinstance(outcome, BaseException):
        raise AssertionError(f"an invalid call was accepted (expected an error naming {words}): {call}")
    event(f"refused: {type(outcome).__name__}: {str(outcome)[:40]}")
    assert raised_in_decinv(outcome), f"{type(outcome).__name__} from outside decinv: {outcome}"
    assert any(word in str(outcome) for word in words), f"the message does not name {words}: {outcome}"


# --- the command line -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract_model") / "vae"
    tiny_kl().save_pretrained(folder)
    return folder


MODES = ["RGB", "RGB", "RGBA", "L", "P", "1", "I;16", "I", "F", "LA", "CMYK"]


def write_input(folder: Path, i: int, kind: str, mode: str, w: int, h: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(i)
    if kind == "tiny":
        w = h = 1
    if kind == "text":
        path = folder / f"in{i}.png"
        path.write_text("not an image")
        return path
    if kind == "empty":
        path = folder / f"in{i}.png"
        path.write_bytes(b"")
        return path
    image = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8), "RGB")
    if mode in ("I;16", "I"):
        image = Image.fromarray((rng.random((h, w)) * 65535).astype(np.uint16 if mode == "I;16" else np.int32))
    elif mode == "F" or kind.startswith("float"):
        image = Image.fromarray((rng.random((h, w)) * (3 if kind == "float out of range" else 1)).astype(np.float32))
        mode = "F"
    else:
        image = image.convert(mode)
    suffix = ".tif" if mode in ("F", "CMYK", "I") else ".png"
    path = folder / f"in{i}{suffix}"
    image.save(path)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: max(8, path.stat().st_size // 2)])
    return path


CLI_OPTIONS = {  # -o values per option: (valid, invalid)
    "lr": (["0.05", "1"], ["abc", "-1", "nan"]), "step_size": (["0.1", "0.5"], ["0", "inf"]),
    "alpha": (["0.5"], ["1.5"]), "beta": (["0.5", "none"], ["-2"]), "schedule_cap": (["3", "none"], ["0"]),
    "betas": (["0.9,0.99"], ["0.9", "1,2"]), "eps": (["1e-4"], ["-1"]),
    "master_dtype": (["float16", "float32", "none"], ["int8"]), "memory": (["2", "0"], ["-1", "1.5"]),
    "reg": (["1e-6"], ["-1"]), "safeguard": (["false", "true"], ["maybe"]),
}


@st.composite
def cli_calls(draw):
    """``decinv invert`` command lines: valid ones (files of every mode and size, every method with valid -o
    options, steps, --size, --batch-size, --dtype), and, one time in three, the same with one thing spoiled (an
    unreadable, tiny or out-of-range input file, a bad option value or name, a bad --steps/--size/--batch-size/
    --device, an unknown method)."""
    inputs = [(draw(st.sampled_from(["image"] * 4 + ["float in range"])), draw(st.sampled_from(MODES)),
               draw(st.sampled_from([8, 16, 19, 12])), draw(st.sampled_from([8, 16, 10])))
              for _ in range(draw(st.integers(1, 3)))]
    method = draw(st.sampled_from(list(decinv.METHODS)))
    steps = "0" if method == "encoder" else draw(st.sampled_from(["0", "1", "2"]))
    names = sorted(set(decinv.method_options(method)) - {"schedule"})
    options = [f"{name}={draw(st.sampled_from(CLI_OPTIONS[name][0]))}" for name in
               (draw(st.lists(st.sampled_from(names), unique=True, max_size=2)) if names else [])]
    args = {"--method": method, "--steps": steps, "--batch-size": draw(st.sampled_from(["1", "2", "16"])),
            "--dtype": draw(st.sampled_from(["fp32"] * 5 + ["bf16"])), "--device": "cpu"}
    if draw(st.booleans()):
        args["--size"] = draw(st.sampled_from(["8", "16"]))
    if draw(st.integers(0, 2)) == 1:
        what = draw(st.sampled_from(["file", "option", "option name", "steps", "size", "batch", "device",
                                     "method"]))
        if what == "file":
            inputs[0] = (draw(st.sampled_from(["text", "empty", "truncated", "float out of range", "tiny"])),
                         inputs[0][1], inputs[0][2], inputs[0][3])
        elif what == "option" and method != "encoder":
            name = draw(st.sampled_from(sorted(set(decinv.method_options(method)) - {"schedule"})))
            options = [f"{name}={draw(st.sampled_from(CLI_OPTIONS[name][1]))}"]
        elif what in ("option", "option name"):
            options = [draw(st.sampled_from(["momentum=0.5", "novalue"]))]
        elif what == "steps":
            args["--steps"] = draw(st.sampled_from(["-1", "x", "1.5"] + (["3"] if method == "encoder" else [])))
        elif what == "size":
            args["--size"] = draw(st.sampled_from(["0", "-4", "1", "x"]))
        elif what == "batch":
            args["--batch-size"] = draw(st.sampled_from(["0", "-2"]))
        elif what == "device":
            args["--device"] = draw(st.sampled_from(["bogus", "cuda:7"]))
        else:
            args["--method"] = "nope"
    argv = [item for pair in args.items() for item in pair]
    for option in options:
        argv += ["-o", option]
    return inputs, argv


def check_cli(saved_model, inputs, args, capsys):
    from decinv.applications import jobs
    from decinv.cli import main

    root = Path(tempfile.mkdtemp(prefix="decinv-contract-"))
    try:
        paths = [str(write_input(root, i, *spec)) for i, spec in enumerate(inputs)]
        out = root / "out"
        argv = ["invert", *paths, "--model", str(saved_model), "--out", str(out), "--quiet", *args]
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse: a malformed command line, usage printed, status 2
            event("cli: argparse usage error")
            assert stop.code == 2, stop.code
            assert "Traceback" not in capsys.readouterr().err
            return
        printed = capsys.readouterr()
        assert "Traceback" not in printed.err and "Traceback" not in printed.out
        errors = [line for line in printed.err.splitlines() if line.startswith("error:")]
        if errors:
            event(f"cli refused: {errors[0][:50]}")
            assert code == 2 and len(printed.err.strip().splitlines()) == 1, printed.err
            return
        rows = jobs.read_manifest(out)
        assert sorted(r["source"] for r in rows) == sorted(paths)
        bad = [r for r in rows if r["status"] != "ok"]
        event(f"cli job: {len(rows) - len(bad)} ok, {len(bad)} not")
        for r in bad:
            event(f"cli row: {str(r['error'])[:50]}")
        assert code == min(len(bad), 100), (code, bad)
        assert all(r["error"] for r in bad)
        latents = jobs.load_latents(out) if len(bad) < len(rows) else {}
        assert set(latents) == {r["source"] for r in rows if r["status"] == "ok"}
        assert all(torch.isfinite(z).all() for z in latents.values())
    finally:
        shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=10 if FAST else 300, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(spec=cli_calls())
@example(spec=([("image", "RGB", 8, 8)], ["--method", "anderson", "--steps", "1", "-o", "safeguard=false"]))
@example(spec=([("image", "RGB", 8, 8)], ["--method", "gradfree-adam", "--steps", "1", "-o", "lr=abc"]))
@example(spec=([("image", "RGB", 8, 8)], ["--method", "gradfree-adam", "--steps", "1", "-o", "betas=0.9,0.99",
                                          "-o", "master_dtype=float16"]))
def test_cli_keeps_its_contract(saved_model, capsys, spec):
    inputs, args = spec
    check_cli(saved_model, inputs, args, capsys)


# --- cases the campaign found, beyond its @examples --------------------------------------------------------------

def test_adam_eps_follows_a_16_bit_state():
    """Found by the CLI campaign (-o master_dtype=float16 on an fp32 model): eps defaulted to the networks' 1e-8, which
    is 0 in a float16 state, so every component whose g^2 underflowed divided by 0 and the run 'failed' at step 0.
    Now the default is 1e-4 when the state is 16-bit, and an eps that is 0 in the state's dtype is refused."""
    model = model_for("kl", torch.float32)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    result = decinv.invert(x, model, "gradfree-adam", 5, master_dtype="float16", progress=False)
    assert result.status == "completed" and torch.isfinite(result.z).all()
    with pytest.raises(ValueError, match="eps=1e-08 is 0 in torch.float16"):
        decinv.invert(x, model, "gradfree-adam", 5, master_dtype="float16", eps=1e-8, progress=False)
    fp32 = decinv.invert(x, model, "gradfree-adam", 5, progress=False)  # the fp32 state keeps eps 1e-8
    assert fp32.status == "completed"


def test_an_error_inside_a_run_closes_its_progress_bar(monkeypatch):
    """An error raised after the progress bar opened (the solver's own checks, or Ctrl-C) used to leave it open."""
    from decinv.core.solvers import tracking

    bars = []
    original = tracking.progress_bar

    def recording(*args, **kwargs):
        bars.append(original(*args, **kwargs))
        return bars[-1]

    monkeypatch.setattr(tracking, "progress_bar", recording)
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="eps"):
        decinv.invert(x, model_for("kl", torch.float32), "gradfree-adam", 2, master_dtype="float16", eps=1e-8,
                      progress=True)
    assert bars and all(bar.disable for bar in bars)  # tqdm.close() sets disable


def test_the_command_line_refuses_encoder_iterations_before_loading(saved_model, capsys, tmp_path):
    """Found by the CLI campaign: ``--method encoder --steps 3`` was accepted and every input's row failed with
    the same error; a setting wrong for every input is refused up front (exit 2, one 'error:' line)."""
    from decinv.cli import main

    path = write_input(tmp_path, 0, "image", "RGB", 8, 8)
    code = main(["invert", str(path), "--model", str(saved_model), "--out", str(tmp_path / "out"), "--quiet",
                 "--method", "encoder", "--steps", "3"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: the encoder baseline takes no iterations") and \
        not (tmp_path / "out").exists()


def test_images_in_zero_one_warn_and_a_job_of_bright_files_does_not(tmp_path):
    """[0, 1] images are in range but almost always a missed 2x - 1: invert, operator and encode warn (naming the
    fix); images with any value below 0 do not; a dataset job, which maps files to [-1, 1] itself, does not."""
    import warnings

    from PIL import Image

    from decinv.applications import jobs
    from decinv.core.validation import ImageRangeWarning

    model = decinv.load_model("tiny")
    x01 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for call in (lambda x: decinv.invert(x, model, "forward-step", 1, progress=False),
                 lambda x: decinv.operator(model, x), model.encode):
        with pytest.warns(ImageRangeWarning, match=r"2 \* x - 1"):
            call(x01)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ImageRangeWarning)
            call(2 * x01 - 1)
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.full((16, 16, 3), 230, np.uint8)).save(tmp_path / "imgs" / "white.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageRangeWarning)
        summary = jobs.run_job([str(tmp_path / "imgs")], tmp_path / "out", model, steps=1, progress=False)
    assert summary.ok == 1
