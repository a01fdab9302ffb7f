"""The tiny-model training script: resumable bit for bit, and its output loads as a model."""

import json

import pytest
import torch

import decinv
from decinv.tiny import train


def _train_vae(work):
    work.mkdir(exist_ok=True)
    train.train_vae(work, steps=4, batch=2, lr=1e-3, kl_weight=1e-4, device="cpu", every=2)
    return torch.load(work / "vae.pt", weights_only=False)


def test_interrupted_vae_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    straight = _train_vae(tmp_path / "straight")

    save = train._save_checkpoint

    def save_then_stop(path, step, *rest):
        save(path, step, *rest)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _train_vae(tmp_path / "resumed")
    monkeypatch.undo()
    resumed = _train_vae(tmp_path / "resumed")

    assert resumed["step"] == straight["step"] == 4
    assert [p for p, _ in resumed["log"]["heldout_psnr"]] == [2, 4]
    for name, tensor in straight["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


def test_all_stages_write_a_loadable_model_and_a_log(tmp_path):
    out = tmp_path / "weights"
    threads = torch.get_num_threads()
    train.main(["all", "--work", str(tmp_path / "work"), "--out", str(out), "--device", "cpu",
                "--threads", str(threads), "--vae-steps", "2", "--vae-batch", "2", "--unet-steps", "2",
                "--unet-batch", "4", "--unet-latents", "8", "--every", "2",
                "--scale-crops", "64"])
    model = decinv.load_model(str(out))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert model.encode(x).shape == (1, 4, 16, 16)
    assert model.vae.config.scaling_factor > 0
    log = json.loads((out / "training_log.json").read_text())
    assert log["settings"]["vae_steps"] == 2 and log["vae"]["loss"] == [] and len(log["vae"]["heldout_psnr"]) == 1
    assert (out / "unet" / "config.json").exists() and (out / "scheduler" / "scheduler_config.json").exists()


def test_unet_stage_without_an_exported_vae_names_the_missing_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="export-vae"):
        train.train_unet(tmp_path, tmp_path / "weights", steps=1, batch=1, lr=1e-3, n_latents=1, device="cpu", every=1)
