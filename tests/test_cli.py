import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from decinv.cli import main
from tests.conftest import small_vae


@pytest.fixture
def saved_model(tmp_path):
    small_vae().save_pretrained(tmp_path / "vae")
    return tmp_path / "vae"


def test_invert_png_with_local_model(tmp_path, saved_model, capsys):
    rgba = (np.random.default_rng(0).random((21, 19, 4)) * 255).astype(np.uint8)  # odd size, alpha channel
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgba[..., 0], "L").save(tmp_path / "b.png")
    out = tmp_path / "z.safetensors"
    code = main(["invert", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(saved_model),
                 "--steps", "3", "--device", "cpu", "--out", str(out), "--quiet", "-o", "lr=0.02"])
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.count("PSNR of D(z) vs input encoder") == 2 and "(16x20)" in printed
    latents = load_file(out)
    assert set(latents) == {"a", "b"} and latents["a"].shape == (4, 5, 4)


def test_size_option_resizes_and_crops(tmp_path, saved_model, capsys):
    Image.new("RGB", (50, 30), "red").save(tmp_path / "c.jpg")
    assert main(["invert", str(tmp_path / "c.jpg"), "--model", str(saved_model), "--steps", "1", "--size", "16",
                 "--device", "cpu", "--quiet"]) == 0
    assert "(16x16)" in capsys.readouterr().out


def test_unreadable_image_is_a_clear_error(tmp_path, saved_model):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(SystemExit, match="not an image format"):
        main(["invert", str(tmp_path / "notes.txt"), "--model", str(saved_model), "--device", "cpu"])
    with pytest.raises(SystemExit, match="no such image"):
        main(["invert", str(tmp_path / "missing.png"), "--model", str(saved_model), "--device", "cpu"])


def test_bad_method_option_is_reported(tmp_path, saved_model, capsys):
    Image.new("RGB", (16, 16)).save(tmp_path / "d.png")
    code = main(["invert", str(tmp_path / "d.png"), "--model", str(saved_model), "--device", "cpu",
                 "-o", "alpha=0.5"])
    assert code == 2 and "has no option" in capsys.readouterr().err


def test_methods_lists_every_method(capsys):
    assert main(["methods"]) == 0
    printed = capsys.readouterr().out
    for name in ("encoder", "forward-step", "inertial-km", "gradfree-adam", "gradient-adam"):
        assert name in printed
