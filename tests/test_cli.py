import numpy as np
import pytest
from PIL import Image

from decinv.applications import jobs
from decinv.cli import load_image, main
from tests.conftest import small_vae


@pytest.fixture
def saved_model(tmp_path):
    small_vae().save_pretrained(tmp_path / "vae")
    return tmp_path / "vae"


def test_invert_png_with_local_model(tmp_path, saved_model, capsys):
    rgba = (np.random.default_rng(0).random((21, 19, 4)) * 255).astype(np.uint8)  # odd size, alpha channel
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgba[..., 0], "L").save(tmp_path / "b.png")
    out = tmp_path / "run"
    code = main(["invert", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(saved_model),
                 "--steps", "3", "--device", "cpu", "--out", str(out), "--quiet", "-o", "lr=0.02"])
    printed = capsys.readouterr().out
    assert code == 0 and "2 input(s): 2 ok" in printed
    rows = jobs.read_manifest(out)
    assert [r["image"] for r in rows] == [{"width": 19, "height": 21, "mode": "RGBA"},
                                          {"width": 19, "height": 21, "mode": "L"}]
    assert all(r["shape"] == [3, 20, 16] and r["options"]["lr"] == 0.02 and r["psnr_db"] > 0 for r in rows)
    latents = jobs.load_latents(out)
    assert set(latents) == {str(tmp_path / "a.png"), str(tmp_path / "b.png")}
    assert latents[str(tmp_path / "a.png")].shape == (4, 5, 4)


def test_size_option_resizes_and_crops(tmp_path, saved_model):
    Image.new("RGB", (50, 30), "red").save(tmp_path / "c.jpg")
    assert main(["invert", str(tmp_path / "c.jpg"), "--model", str(saved_model), "--steps", "1", "--size", "16",
                 "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert jobs.read_manifest(tmp_path / "run")[0]["shape"] == [3, 16, 16]


def test_unreadable_image_is_a_row_and_a_missing_one_an_error(tmp_path, saved_model, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["invert", str(tmp_path / "notes.txt"), "--model", str(saved_model), "--device", "cpu",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 1
    assert "not an image format" in jobs.read_manifest(tmp_path / "run")[0]["error"]
    assert main(["invert", str(tmp_path / "missing.png"), "--model", str(saved_model), "--device", "cpu",
                 "--out", str(tmp_path / "run2")]) == 2
    assert "missing.png: no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not an image format"):  # the one-file loader of the command line
        load_image(tmp_path / "notes.txt", None, 4)


def test_bad_method_option_is_reported(tmp_path, saved_model, capsys):
    Image.new("RGB", (16, 16)).save(tmp_path / "d.png")
    code = main(["invert", str(tmp_path / "d.png"), "--model", str(saved_model), "--device", "cpu",
                 "-o", "alpha=0.5", "--out", str(tmp_path / "run")])
    assert code == 2 and "has no option" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_methods_lists_every_method(capsys):
    assert main(["methods"]) == 0
    printed = capsys.readouterr().out
    for name in ("encoder", "forward-step", "inertial-km", "gradfree-adam", "gradient-adam"):
        assert name in printed


def test_option_values_are_typed_and_checked_before_the_model_loads(tmp_path, saved_model, capsys):
    """-o safeguard=false used to pass the string "false", which is true: Anderson ran with its safeguard on."""
    from decinv.cli import _parse_option

    assert _parse_option("safeguard=false") == ("safeguard", False)
    assert _parse_option("betas=0.9,0.99") == ("betas", (0.9, 0.99))
    assert _parse_option("schedule=None") == ("schedule", None) and _parse_option("lr=1e-2") == ("lr", 0.01)
    assert _parse_option("master-dtype=float16") == ("master_dtype", "float16")
    Image.new("RGB", (16, 16)).save(tmp_path / "e.png")
    assert main(["invert", str(tmp_path / "e.png"), "--model", str(saved_model), "--device", "cpu", "--quiet",
                 "--method", "anderson", "--steps", "1", "-o", "safeguard=false", "--out", str(tmp_path / "a")]) == 0
    assert jobs.read_manifest(tmp_path / "a")[0]["options"]["safeguard"] is False
    code = main(["invert", str(tmp_path / "e.png"), "--model", str(tmp_path / "no-such-model"), "--device", "cpu",
                 "-o", "lr=abc", "--out", str(tmp_path / "b")])
    assert code == 2 and "gradfree-adam option lr must be a finite number > 0, got 'abc'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_missing_model_names_the_command_line_fix(tmp_path, capsys, monkeypatch):
    """The library's message says load_model('tiny'); on the command line the fix is --model tiny."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    code = main(["invert", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--model",
                 "no-such-org/no-such-vae", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Cannot load the autoencoder" in err and "--model tiny" in err
    assert main(["invert", str(tmp_path / "nothing.png"), "--out", str(tmp_path / "o2")]) != 0
    assert "--model tiny" not in capsys.readouterr().err  # other errors get no such hint
