"""The tiny-model training script: resumable bit for bit, and its output loads as a model."""

import json
import math

import pytest
import torch

import decinv
from decinv.tiny import train


def _train_vae(work, adv_weight=0.0):
    work.mkdir(exist_ok=True)
    # adversarial term (when on) from step 1 of 4, so the resumed half trains the discriminator too
    train.train_vae(work, steps=4, batch=2, lr=1e-3, kl_weight=1e-4, device="cpu", every=2, recipe="v2",
                    adv_weight=adv_weight, adv_start=0.25, probe=False)
    return torch.load(work / "vae.pt", weights_only=False)


@pytest.mark.parametrize("adv_weight", [0.0, 0.5])
def test_interrupted_vae_training_resumes_to_the_same_weights(tmp_path, monkeypatch, adv_weight):
    _train = lambda work: _train_vae(work, adv_weight)
    straight = _train(tmp_path / "straight")

    save = train._save_checkpoint

    def save_then_stop(path, step, *rest):
        save(path, step, *rest)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "resumed")
    monkeypatch.undo()
    resumed = _train(tmp_path / "resumed")

    assert resumed["step"] == straight["step"] == 4
    assert [p for p, _ in resumed["log"]["heldout_psnr"]] == [2, 4]
    for name, tensor in straight["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert ("disc" in straight) == (adv_weight > 0)
    for name, tensor in straight.get("disc", {}).items():
        assert torch.equal(resumed["disc"][name], tensor), name


def test_learning_rate_schedules_warm_up_then_decay_or_hold():
    rates = {}
    for kind in train.SCHEDULES:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = train._lr_schedule(opt, steps=1000, kind=kind)
        seen = []
        for _ in range(1000):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        rates[kind] = seen
    for seen in rates.values():
        assert seen[0] == pytest.approx(0.01) and seen[99] == pytest.approx(1.0)  # the same 100-step warm-up
    assert rates["constant"][-1] == 1.0 and rates["cosine"][-1] == pytest.approx(0.05, abs=1e-3)
    tail = train.decay_start(1000)  # constant-decay: the constant run up to its tail, then a cosine down to 5 %
    assert tail == 750 and rates["constant-decay"][:tail + 1] == rates["constant"][:tail + 1]
    assert rates["constant-decay"][-1] == pytest.approx(0.05, abs=1e-3) and rates["constant-decay"][tail + 1] < 1.0
    with pytest.raises(ValueError, match="constant"):
        train._lr_schedule(opt, 10, "linear")


def test_snapshots_keep_the_checkpoint_of_every_probe_step(tmp_path):
    train.train_vae(tmp_path, steps=4, batch=2, lr=1e-3, kl_weight=1e-4, device="cpu", every=2, recipe="v2",
                    probe=False, schedule="constant", snapshots=True)
    last = torch.load(tmp_path / "vae.pt", weights_only=False)
    two, four = (torch.load(tmp_path / f"vae-step{n}.pt", weights_only=False) for n in (2, 4))
    assert two["step"] == 2 and four["step"] == 4 and last["log"]["lr_schedule"] == "constant"
    assert all(torch.equal(four["model"][k], v) for k, v in last["model"].items())
    assert not all(torch.equal(two["model"][k], v) for k, v in last["model"].items())
    threads = torch.get_num_threads()
    try:  # a finished run called again (as the 'all' stage does) keeps the thread count it trained with
        torch.set_num_threads(threads + 1)
        train.train_vae(tmp_path, steps=4, batch=2, lr=1e-3, kl_weight=1e-4, device="cpu", every=2, recipe="v2",
                        probe=False, schedule="constant")
    finally:
        torch.set_num_threads(threads)
    assert torch.load(tmp_path / "vae.pt", weights_only=False)["log"]["threads"] == last["log"]["threads"]
    with pytest.raises(ValueError, match="--vae-schedule constant"):  # resuming under the other schedule
        train.train_vae(tmp_path, steps=6, batch=2, lr=1e-3, kl_weight=1e-4, device="cpu", every=2, recipe="v2",
                        probe=False)
    with pytest.raises(ValueError, match="--vae-schedule constant"):  # the constant run is past this tail's start
        train.train_vae(tmp_path, steps=4, batch=2, lr=1e-3, kl_weight=1e-4, device="cpu", every=2, recipe="v2",
                        probe=False, schedule="constant-decay")
    train.train_vae(tmp_path, steps=6, batch=2, lr=1e-3, kl_weight=1e-4, device="cpu", every=2, recipe="v2",
                    probe=False, schedule="constant-decay")  # resumed at step 4 into a tail starting at step 5
    assert torch.load(tmp_path / "vae.pt", weights_only=False)["log"]["lr_schedule"] == "constant-decay"
    with pytest.raises(ValueError, match="different autoencoder"):  # v2 and v2-silu share parameter shapes
        train.train_vae(tmp_path, steps=6, batch=2, lr=1e-3, kl_weight=1e-4, device="cpu", every=2,
                        recipe="v2-silu", probe=False, schedule="constant")


def test_adaptive_adversarial_weight_balances_the_two_gradients():
    w = torch.ones(3, requires_grad=True)
    rec, gen = (2 * w).sum(), (0.5 * w).sum()  # gradients 2 and 0.5 per entry: ratio 4
    assert float(train.adaptive_adversarial_weight(rec, gen, w)) == pytest.approx(4.0, rel=1e-3)


def test_regime_probe_reports_encoder_and_adam_nmse():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    out = train.regime_probe(AutoencoderKL(**train.VAE_CONFIG_V2), 128, n=2, horizons=(3, 5))
    assert set(out) == {"encoder_nmse_db", "gradfree_adam_3_nmse_db", "gradfree_adam_5_nmse_db"}
    assert out["gradfree_adam_3_nmse_db"] != out["gradfree_adam_5_nmse_db"]  # one run per horizon
    spectrum = train.regime_probe(AutoencoderKL(**train.VAE_CONFIG_V2), 128, n=2, horizons=(), jacobian=True)
    assert len(spectrum["jacobian_leftmost"]) == len(spectrum["jacobian_top"]) == 2
    assert all(lo <= hi for lo, hi in zip(spectrum["jacobian_leftmost"], spectrum["jacobian_top"]))
    assert all(v == v and abs(v) < 100 for v in out.values())


def test_all_stages_write_a_loadable_model_and_a_log(tmp_path):
    out = tmp_path / "weights"
    threads = torch.get_num_threads()
    train.main(["all", "--recipe", "v2", "--work", str(tmp_path / "work"), "--out", str(out), "--device", "cpu",
                "--threads", str(threads), "--vae-steps", "2", "--vae-batch", "2", "--unet-steps", "2",
                "--unet-batch", "4", "--unet-latents", "8", "--every", "2",
                "--scale-crops", "64", "--probe-jacobian"])
    model = decinv.load_model(str(out))
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    assert model.encode(x).shape == (1, 4, 16, 16) and model.downsample == 8
    assert model.vae.config.scaling_factor > 0
    log = json.loads((out / "training_log.json").read_text())
    assert log["settings"]["vae_steps"] == 2 and log["vae"]["loss"] == [] and len(log["vae"]["heldout_psnr"]) == 1
    assert log["settings"]["vae_schedule"] == "constant-decay" == log["vae"]["lr_schedule"]  # v2's recipe default
    # the regime probe (VAE) and the sample probe (UNet) ran once each, with finite numbers
    (step, regime), = log["vae"]["regime"]
    (ustep, samples), = log["unet"]["samples"]
    assert len(regime.pop("jacobian_leftmost")) == len(regime.pop("jacobian_top")) == 8  # --probe-jacobian
    assert step == ustep == 2 and all(math.isfinite(v) for v in [*regime.values(), *samples.values()])
    assert (out / "unet" / "config.json").exists() and (out / "scheduler" / "scheduler_config.json").exists()
    # the finished UNet stage called again with another thread count keeps the count it trained with
    try:
        train.main(["unet", "--recipe", "v2", "--work", str(tmp_path / "work"), "--out", str(out), "--device", "cpu",
                    "--threads", str(threads + 1), "--unet-steps", "2", "--unet-batch", "4", "--every", "2"])
    finally:
        torch.set_num_threads(threads)
    assert torch.load(tmp_path / "work" / "unet.pt", weights_only=False)["log"]["threads"] == threads


def test_unet_stage_without_an_exported_vae_names_the_missing_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="export-vae"):
        train.train_unet(tmp_path, tmp_path / "weights", steps=1, batch=1, lr=1e-3, n_latents=1, device="cpu", every=1)


def test_adversarial_run_branches_from_the_plain_run_at_adv_start(tmp_path):
    """Up to adv_start the run with the adversarial term is the run without it, bit for bit (the discriminator is
    seeded apart from torch's global generator), so the ablation can continue the plain run's checkpoint."""
    kw = dict(steps=4, batch=2, lr=1e-3, kl_weight=1e-4, device="cpu", recipe="v2", probe=False)
    plain, adv, branched = tmp_path / "plain", tmp_path / "adv", tmp_path / "branched"
    for work in (plain, adv, branched):
        work.mkdir()
    train.train_vae(plain, every=2, **kw)
    train.train_vae(adv, every=2, adv_weight=0.5, adv_start=0.5, **kw)
    first = torch.load(plain / "vae.pt", weights_only=False)
    # a 2-step plain run saved at step 2 (same schedule: steps=4), then continued with the term from step 2
    save = train._save_checkpoint
    try:
        def stop_at_2(path, step, *rest):
            save(path, step, *rest)
            if step == 2:
                raise KeyboardInterrupt
        train._save_checkpoint = stop_at_2
        with pytest.raises(KeyboardInterrupt):
            train.train_vae(branched, every=2, **kw)
    finally:
        train._save_checkpoint = save
    train.train_vae(branched, every=2, adv_weight=0.5, adv_start=0.5, **kw)
    a, b = torch.load(adv / "vae.pt", weights_only=False), torch.load(branched / "vae.pt", weights_only=False)
    for name, tensor in a["model"].items():
        assert torch.equal(b["model"][name], tensor), name
    assert not all(torch.equal(first["model"][n], t) for n, t in a["model"].items())  # the term did change it


def test_unet_with_ema_resumes_bit_for_bit_and_exports_the_averaged_weights(tmp_path, monkeypatch):
    """The EMA state lives in the checkpoint (a resumed run equals a straight one), and the exported UNet is the
    average, not the last iterate."""
    from diffusers import AutoencoderKL, UNet2DModel

    torch.manual_seed(0)
    vae = AutoencoderKL(**train.VAE_CONFIG_V2)
    vae.register_to_config(scaling_factor=1.0)

    def run(name):
        work, out = tmp_path / name / "work", tmp_path / name / "weights"
        work.mkdir(parents=True, exist_ok=True)
        vae.save_pretrained(out / "vae")
        train.train_unet(work, out, steps=4, batch=2, lr=1e-3, n_latents=4, device="cpu", every=2, probe=False,
                         ema_decay=0.5)
        return torch.load(work / "unet.pt", weights_only=False), out

    straight, out = run("straight")
    save = train._save_checkpoint

    def save_then_stop(path, step, *rest, **kw):
        save(path, step, *rest, **kw)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run("resumed")
    monkeypatch.undo()
    resumed, _ = run("resumed")
    for key in ("model", "ema"):
        for name, value in straight[key].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(resumed[key][name], value), (key, name)
            elif name == "shadow_params":
                assert all(torch.equal(a, b) for a, b in zip(resumed[key][name], value)), (key, name)
    exported = UNet2DModel.from_pretrained(out / "unet", local_files_only=True).state_dict()
    shadow = straight["ema"]["shadow_params"]
    names = [n for n, _ in UNet2DModel(**train.UNET_CONFIG).named_parameters()]
    assert all(torch.equal(exported[n], s) for n, s in zip(names, shadow))
    assert any(not torch.equal(exported[n], straight["model"][n]) for n in names)


def test_unet_channels_widen_the_exported_denoiser_and_bad_widths_are_refused(tmp_path):
    from diffusers import AutoencoderKL, UNet2DModel

    torch.manual_seed(0)
    vae = AutoencoderKL(**train.VAE_CONFIG_V2)
    vae.register_to_config(scaling_factor=1.0)
    work, out = tmp_path / "work", tmp_path / "weights"
    work.mkdir()
    vae.save_pretrained(out / "vae")
    with pytest.raises(ValueError, match="multiples of 16"):
        train.train_unet(work, out, steps=1, batch=2, lr=1e-3, n_latents=4, device="cpu", every=1, probe=False,
                         channels=(64, 100, 128))
    train.train_unet(work, out, steps=1, batch=2, lr=1e-3, n_latents=4, device="cpu", every=1, probe=False,
                     channels=(32, 64, 64))
    exported = UNet2DModel.from_pretrained(out / "unet", local_files_only=True)
    assert tuple(exported.config.block_out_channels) == (32, 64, 64)
    assert torch.load(work / "unet.pt", weights_only=False)["log"]["block_out_channels"] == [32, 64, 64]


def test_jacobian_probes_script_records_each_checkpoint_and_keeps_earlier_entries(tmp_path):
    script = _load_script("jacobian_probes")
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(**train.VAE_CONFIG).save_pretrained(tmp_path / "vae")  # a random v1-shaped autoencoder
    out = tmp_path / "probes.json"
    out.write_text(json.dumps({"measurements": {"earlier": {"kept": True}}}))
    script.main([f"random={tmp_path / 'vae'}", "--out", str(out), "--threads", str(torch.get_num_threads())])
    doc = json.loads(out.read_text())
    assert doc["measurements"]["earlier"] == {"kept": True} and doc["commit"] is not None
    r = doc["measurements"]["random"]
    assert len(r["jacobian_leftmost"]) == 8 and all(math.isfinite(v) for v in r["jacobian_top"])
    with pytest.raises(SystemExit):
        script.main([f"missing={tmp_path / 'nope'}", "--out", str(out)])


def _load_script(name):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_{name}", path)
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)
    return script


def test_record_probe_summarises_the_logs_it_stores(tmp_path):
    script = _load_script("record_probe")
    regime = lambda enc, a20, a200, left: {"encoder_nmse_db": enc, "gradfree_adam_20_nmse_db": a20,
                                           "gradfree_adam_200_nmse_db": a200, "jacobian_leftmost": left}
    log = {"loss": [[50, 0.5]], "heldout_psnr": [[500, 18.0], [1000, 19.5]], "seconds": 600.0, "threads": 1,
           "device": "cpu", "regime": [[500, regime(-10.0, -12.0, -9.0, [0.1, -0.2])],
                                       [1000, regime(-11.0, -13.0, -14.0, [0.1, 0.2])]]}
    torch.save({"step": 1000, "log": log}, tmp_path / "vae.pt")
    out = tmp_path / "probe.json"
    script.main(["vae", str(tmp_path), "--out", str(out), "--what", "A test.", "--command", "train it"])
    doc = json.loads(out.read_text())
    assert doc["vae"] == log and doc["settings"] == {"command": "train it"} and doc["commit"] is not None
    assert "step 1,000 (10 min on 1 CPU thread(s))" in doc["what"] and "PSNR 19.50 dB" in doc["what"]
    assert "every horizon (20, 200 iterations) at 1 of 2 probes; at the last, by +2.00/+3.00 dB" in doc["what"]
    assert "500: 1/2, 1,000: 0/2" in doc["what"]
    weights = tmp_path / "weights"
    weights.mkdir()
    passes = {"encoder_nmse_db": True, "latent_std": True, "gradient_gain_db": False}
    (weights / "properties.json").write_text(json.dumps({"n_images": 16, "passes": passes}))
    torch.save({"log": {"threads": 2, "samples": []}}, tmp_path / "unet.pt")
    script.main(["candidate", str(tmp_path), "--weights", str(weights), "--out", str(out), "--what", "C.",
                 "--command", "c"])
    doc = json.loads(out.read_text())
    assert doc["what"] == "C. Measured on 16 generated images: 2 of 8 targets met (encoder_nmse_db, latent_std)."
    assert doc["hardware"]["threads"] == 2 and doc["vae_settings"] is None
    with pytest.raises(SystemExit):
        script.main(["candidate", str(tmp_path), "--out", str(out), "--what", "C.", "--command", "c"])


def test_v2_recipe_is_relu_and_reloads_identically(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**train.RECIPES["v2"]["vae"]).eval()
    acts = [type(m).__name__ for m in vae.modules() if isinstance(m, (torch.nn.SiLU, torch.nn.ReLU))]
    assert acts.count("ReLU") > acts.count("SiLU") == 2  # every ResNet block; diffusers' two conv_act stay SiLU
    vae.save_pretrained(tmp_path / "vae")
    again = AutoencoderKL.from_pretrained(tmp_path / "vae", local_files_only=True).eval()
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(vae(x).sample, again(x).sample)


def test_jacobian_ablation_holds_one_mechanism_and_its_linear_check_agrees_with_live():
    script = _load_script("jacobian_ablation")
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**train.VAE_CONFIG).eval()  # untrained and v1-sized (fast): any spectrum will do
    out = script.ablate(vae, size=64, n=2, variants=("live", "silu_linear", "silu_gate", "attention"),
                        iters=20)
    assert all(len(v) == 2 for v in out.values())
    # the exact linearisation of every SiLU at z* is the network itself to first order
    assert out["silu_linear"] == pytest.approx(out["live"], rel=0.05, abs=0.02)
    assert out["silu_gate"] != pytest.approx(out["live"], rel=0.05, abs=0.02)  # the gate's slope is another map
    freezer = script.Freezer(AutoencoderKL(**train.VAE_CONFIG))
    with pytest.raises(ValueError, match="unknown variant"):
        with freezer.variant("relu", lambda: None):
            pass
