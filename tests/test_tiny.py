"""The bundled tiny LDM: loads offline in a fresh process, has the properties its model card states."""

import json
import subprocess
import sys

import pytest
import torch

import decinv
from decinv.models import TINY_DIR
from decinv.tiny import data

PROPERTIES = json.loads((TINY_DIR / "properties.json").read_text())


def test_loads_offline_in_a_fresh_process_without_network():
    code = ("import os, socket\n"
            "def refuse(*a, **k): raise RuntimeError('network access attempted')\n"
            "socket.socket.connect = refuse\n"
            "import decinv\n"
            "p = decinv.load_pipeline('tiny', device='cpu')\n"
            "print(p.vae.latent_channels, p.vae.downsample, type(p.unet).__name__, type(p.scheduler).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "4", "UNet2DModel", "DDIMScheduler"]


@pytest.fixture(scope="module")
def model():
    return decinv.load_model("tiny", device="cpu")


def test_shapes_and_ranges(model):
    x = data.heldout_crops(8)
    z = model.encode(x)
    assert z.shape == (8, 4, 16, 16)
    y = model.decode(z)
    assert y.shape == x.shape and y.min() > -1.5 and y.max() < 1.5


def test_scaled_latents_have_about_unit_std(model):
    assert 0.7 <= float(model.encode(data.train_crops(256, seed=5)).std()) <= 1.4


def test_heldout_psnr_meets_the_model_card(model):
    x = data.heldout_crops()
    psnr = float(decinv.psnr(model.decode(model.encode(x)), x).mean())
    assert psnr == pytest.approx(PROPERTIES["heldout_psnr_db"], abs=0.05)  # the card's number is this measurement
    assert psnr >= 26.0


def test_seeded_generation_is_deterministic():
    from decinv.experiments import generated_instances

    pipe = decinv.load_pipeline("tiny", device="cpu")
    a = generated_instances(pipe.vae, pipe, 2, seed=3, ddim_steps=5)
    b = generated_instances(pipe.vae, pipe, 2, seed=3, ddim_steps=5)
    assert torch.equal(a.z_true, b.z_true) and torch.equal(a.x, b.x)
    assert not torch.equal(a.z_true, generated_instances(pipe.vae, pipe, 2, seed=4, ddim_steps=5).z_true)


def test_weights_are_small():
    total = sum(f.stat().st_size for f in TINY_DIR.rglob("*") if f.is_file())
    assert total <= 20 * 2**20


def test_properties_reject_unknown_instances_before_any_work():
    from decinv.tiny.properties import measure_properties

    with pytest.raises(ValueError, match="'generated' or 'real'"):
        measure_properties(instances="fake")
