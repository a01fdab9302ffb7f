"""Anderson acceleration (beyond the paper) on linear maps with a known spectrum, T(z) = M (z - z*), M SPD."""

import numpy as np
import pytest
import torch

import decinv
from tests.conftest import LinearCodec


def residual(codec, x, z):
    """||T(z)|| per sample, evaluated afresh (the forward step returns an iterate it never evaluated)."""
    t = codec.encode(codec.decode(z.to(codec.dtype))) - codec.encode(x)
    return t.reshape(len(t), -1).double().norm(dim=1)


def test_full_memory_solves_an_n_dimensional_problem_within_n_plus_one_iterations():
    """The (n+1)-th Anderson iterate z_{n+1} = G(GMRES_n) is exact (and, as for every method, returned unevaluated)."""
    codec = LinearCodec(eigenvalues=(0.05, 2.0), dtype=torch.float64)
    x, z_true = codec.problem()
    n = z_true[0].numel()  # 16
    result = decinv.invert(x, codec, "anderson", n + 1, z_true=z_true, memory=n, step_size=0.75, reg=1e-14,
                           progress=False)
    start = residual(codec, x, codec.encode(x))
    assert (residual(codec, x, result.z) < 1e-9 * start).all()
    assert result.trace.nmse_db[-1].max() < -150
    # the forward step on the same budget is nowhere near (its slowest mode contracts by (1 - 0.75 * 0.05)^17 = 0.52)
    plain = decinv.invert(x, codec, "forward-step", n + 1, step_size=0.75, progress=False)
    assert (residual(codec, x, plain.z) > 1e-3 * start).all()


@pytest.mark.parametrize("memory", [1, 2, 3, 5, 10])
@pytest.mark.parametrize("eigenvalues, nonlinearity", [((0.5, 2.0), 0.0), ((0.01, 2.0), 0.0), ((0.05, 1.9), 0.05)])
@pytest.mark.parametrize("steps", [5, 30])
def test_safeguarded_anderson_never_ends_above_the_forward_step(memory, eigenvalues, nonlinearity, steps):
    codec = LinearCodec(eigenvalues=eigenvalues, nonlinearity=nonlinearity, seed=memory)
    x, _ = codec.problem(batch=4, seed=steps)
    for rho in (0.5, 0.9):
        aa = decinv.invert(x, codec, "anderson", steps, memory=memory, step_size=rho, progress=False)
        fs = decinv.invert(x, codec, "forward-step", steps, step_size=rho, progress=False)
        assert (residual(codec, x, aa.z) <= residual(codec, x, fs.z) * (1 + 1e-6) + 1e-7).all(), (rho, memory)


def test_per_sample_batching_equals_running_each_sample_alone():
    codec = LinearCodec(eigenvalues=(0.02, 2.0), nonlinearity=0.05, dtype=torch.float64)
    x, z_true = codec.problem(batch=3)
    batched = decinv.invert(x, codec, "anderson", 25, memory=4, step_size=1.5, progress=False)
    assert sum(batched.info["rejected_steps"]) > 0  # the samples' histories were cleared at different times
    for i in range(3):
        alone = decinv.invert(x[i:i + 1], codec, "anderson", 25, memory=4, step_size=1.5, progress=False)
        assert torch.allclose(alone.z[0], batched.z[i], rtol=0, atol=1e-12)
        assert alone.info["rejected_steps"] == [batched.info["rejected_steps"][i]]


def test_memory_zero_without_safeguard_is_the_forward_step(linear):
    x, z = linear.problem()
    aa = decinv.invert(x, linear, "anderson", 20, memory=0, step_size=0.7, safeguard=False, progress=False)
    fs = decinv.invert(x, linear, "forward-step", 20, step_size=0.7, progress=False)
    assert torch.allclose(aa.z, fs.z, rtol=0, atol=1e-6)
    assert np.allclose(aa.trace.residual, fs.trace.residual, rtol=1e-5)


def test_safeguard_halves_a_diverging_step_and_unguarded_failure_is_reported(linear):
    x, z = linear.problem()
    guarded = decinv.invert(x, linear, "anderson", 40, z_true=z, memory=3, step_size=50.0, progress=False)
    assert not guarded.failed and torch.isfinite(guarded.z).all()
    assert max(guarded.info["final_step_size"]) < 50 and min(guarded.info["rejected_steps"]) > 0
    assert (residual(linear, x, guarded.z) < 0.1 * residual(linear, x, linear.encode(x))).all()
    wild = decinv.invert(x, linear, "anderson", 400, memory=0, step_size=50.0, safeguard=False, progress=False)
    assert wild.failed and torch.isfinite(wild.z).all()


def test_fp16_inputs_keep_an_fp32_state():
    codec16, codec32 = LinearCodec((0.5, 2.0), dtype=torch.float16), LinearCodec((0.5, 2.0))
    x, z = codec32.problem()
    r16 = decinv.invert(x.half(), codec16, "anderson", 30, z_true=z.half(), memory=5, step_size=0.75,
                        progress=False)
    assert r16.info["state_dtype"] == "float32" and r16.z.dtype == torch.float16 and not r16.failed
    assert r16.info["state_bytes"] == (2 * 5 + 4) * 16 * 3 * 4
    enc = decinv.nmse_db(codec16.encode(x.half()).float(), z.float()).mean()
    assert float(r16.trace.nmse_db[-1].mean()) < float(enc) - 20


def test_bad_memory_and_step_size(linear):
    x, _ = linear.problem()
    with pytest.raises(ValueError, match="memory"):
        decinv.invert(x, linear, "anderson", 3, memory=-1, progress=False)
    with pytest.raises(ValueError, match="step_size"):
        decinv.invert(x, linear, "anderson", 3, step_size=0.0, progress=False)
