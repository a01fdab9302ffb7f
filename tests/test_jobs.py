"""The dataset job (decinv.applications.jobs, `decinv invert` / `decinv watermark`): inputs, batching, bad files, atomic files,
resume after SIGKILL, two gloo processes under torchrun, the tree-ring readout."""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import decinv
from decinv.applications import jobs
from decinv.cli import main
from tests.conftest import small_vae

ROOT = Path(__file__).resolve().parent.parent
STEPS = 150  # enough E+D calls per batch (~0.5 s) that a kill lands mid-run
N_GOOD, BATCH = 16, 2


@contextmanager
def one_thread():
    """Bit-identity across processes holds for equal thread counts: torchrun gives each rank one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _png(path, seed, size=(16, 16)):
    rgb = (np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A x4 and a x8 random autoencoder saved to disk, and a folder of 16 good 16x16 PNGs."""
    root = tmp_path_factory.mktemp("jobs")
    small_vae().save_pretrained(root / "vae4")
    small_vae("sd").save_pretrained(root / "vae8")
    (root / "good").mkdir()
    for i in range(N_GOOD):
        _png(root / "good" / f"img{i:02d}.png", i)
    return root


def _args(setup, out, *extra, model="vae4", steps=STEPS):
    return ["invert", str(setup / "good"), "--model", str(setup / model), "--device", "cpu", "--steps", str(steps),
            "-b", str(BATCH), "--quiet", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(setup):
    """One uninterrupted single-process run, one thread."""
    out = setup / "reference"
    with one_thread():
        assert main(_args(setup, out)) == 0
    return out


def _comparable(out):
    """Manifest rows without their timings, sorted: what two runs of the same job must share."""
    rows = [json.loads(line) for line in (Path(out) / "manifest.jsonl").read_text().splitlines()]
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in rows), key=lambda r: r["source"])


def _assert_same_job(a, b):
    assert _comparable(a) == _comparable(b)
    za, zb = jobs.load_latents(a), jobs.load_latents(b)
    assert za.keys() == zb.keys() and len(za) == N_GOOD
    for source in za:
        assert torch.equal(za[source], zb[source]), source  # bit for bit


def _assert_complete(out):
    """Every file under its final name is whole: shards load, parts and manifests parse, nothing else is there."""
    for shard in (out / "shards").glob("*"):
        assert shard.suffix == ".safetensors", shard
        with safe_open(str(shard), framework="pt") as f:
            assert all(f.get_tensor(k).numel() for k in f.keys())
    for part in (out / "parts").glob("*"):
        assert part.suffix == ".jsonl", part
        assert all(json.loads(line)["status"] in ("ok", "error", "failed") for line in part.read_text().splitlines())
    for name in ("job.json", "manifest.jsonl", "summary.json"):
        if (out / name).exists():
            text = (out / name).read_text()
            for line in text.splitlines() if name.endswith(".jsonl") else [text]:
                json.loads(line)


# ---------------------------------------------------------------------------------------------- inputs, plan


def test_inputs_from_files_folders_patterns_and_lists(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    for name in ("a/2.png", "a/1.jpg", "a/sub/3.png", "a/.hidden/4.png", "a/.5.png", "b.png", "c.tif"):
        _png(tmp_path / name, 0, (8, 8))
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "list.txt").write_text("# a comment\n\nb.png\n*.tif\na/1.jpg\n")
    found = jobs.collect_inputs(["a", "@list.txt", "a/notes.txt", "a/2.png"], base=tmp_path)
    rel = [str(Path(p).relative_to(tmp_path)) for p in found]
    # folders: recursive, sorted, images only, hidden skipped; lists: relative to the list; each file once
    assert rel == ["a/1.jpg", "a/2.png", "a/sub/3.png", "b.png", "c.tif", "a/notes.txt"]
    with pytest.raises(jobs.JobError, match="no such file or folder"):
        jobs.collect_inputs(["missing.png"], base=tmp_path)
    with pytest.raises(jobs.JobError, match="matches no file"):
        jobs.collect_inputs(["*.jpeg"], base=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(jobs.JobError, match="no image files"):
        jobs.collect_inputs(["empty"], base=tmp_path)


def test_plan_groups_by_size_and_survives_removing_batches(tmp_path):
    sizes = [(16, 16), (24, 16), (16, 16), (16, 16), (24, 16), (16, 16), (16, 16), (24, 16), (16, 16)]
    paths = []
    for i, size in enumerate(sizes):
        _png(tmp_path / f"{i}.png", i, size)
        paths.append(str(tmp_path / f"{i}.png"))
    (tmp_path / "bad.png").write_text("no")
    paths.insert(3, str(tmp_path / "bad.png"))
    batches = jobs.plan(paths, None, 4, 2)
    # (H, W) groups in input order, cut into 2s; batches ordered by their first file; the refused file alone
    assert [b.shape for b in batches] == [(16, 16), (24, 16), None, (16, 16), (16, 16), (24, 16)]
    assert sum(len(b.sources) for b in batches) == len(paths) and all(len(b.sources) <= 2 for b in batches)
    assert isinstance(batches[2].infos[0], str) and "not an image format" in batches[2].infos[0]
    for drop in ([0], [1, 2], [0, 3, 5], [4]):  # a resumed job removes whole saved batches: the rest is unchanged
        done = {s for i in drop for s in batches[i].sources}
        again = jobs.plan([p for p in paths if p not in done], None, 4, 2)
        assert [(b.id, b.sources) for b in again] == [(b.id, b.sources) for i, b in enumerate(batches)
                                                      if i not in drop]


# ------------------------------------------------------------------------------------------------- bad inputs


def test_bad_files_are_rows_with_their_errors_and_every_good_image_is_inverted(setup, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(5):
        _png(folder / f"good{i}.png", 100 + i)
    _png(folder / "corrupt.png", 99)
    data = bytearray((folder / "corrupt.png").read_bytes())
    data[60:] = bytes(range(256)) * (len(data[60:]) // 256) + bytes(len(data[60:]) % 256)  # pixels overwritten
    (folder / "corrupt.png").write_bytes(bytes(data))
    _png(folder / "small.png", 0, (4, 4))  # smaller than the x8 autoencoder's factor
    Image.fromarray(np.linspace(-0.5, 1.7, 256, dtype=np.float32).reshape(16, 16)).save(folder / "float.tif")
    out = tmp_path / "out"
    code = main(["invert", str(folder), "--model", str(setup / "vae8"), "--device", "cpu", "--steps", "3",
                 "-b", "4", "--quiet", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 3 and "5 ok, 3 refused (error), 0 failed" in printed
    rows = {Path(r["source"]).name: r for r in jobs.read_manifest(out)}
    assert len(rows) == 8
    errors = {name: r["error"] for name, r in rows.items() if r["status"] != "ok"}
    assert errors.keys() == {"corrupt.png", "small.png", "float.tif"}
    assert "corrupt.png: damaged image data" in errors["corrupt.png"]
    assert "4x4, smaller than the autoencoder's downsampling factor 8" in errors["small.png"]
    assert "values in [-0.5, 1.7], outside 0..1" in errors["float.tif"]
    assert all(r["status"] == "error" and r["shard"] is None for r in map(rows.get, errors))
    latents = jobs.load_latents(out)
    good = sorted(p for p in latents)
    assert [Path(p).name for p in good] == [f"good{i}.png" for i in range(5)]
    # the stored latents are decinv.invert's on the same batches (the good images of each, in input order)
    model = decinv.load_model(str(setup / "vae8"), device="cpu")
    from decinv.core.images import load_image

    batches = {}
    for source in good:
        batches.setdefault(rows[Path(source).name]["batch"], []).append(source)
    assert sorted(map(len, batches.values())) == [2, 3]  # [corrupt, float, good0, good1], [good2, good3, good4]
    for sources in batches.values():
        x = torch.cat([load_image(p, None, 8) for p in sources])
        expected = decinv.invert(x, model, "gradfree-adam", 3, progress=False).z
        assert torch.equal(torch.stack([latents[p] for p in sources]), expected)
    for name in (f"good{i}.png" for i in range(5)):
        r = rows[name]
        assert r["status"] == "ok" and r["shape"] == [3, 16, 16] and r["latent_shape"] == [4, 2, 2]
        assert r["residual"] > 0 and r["residual_encoder"] > 0 and np.isfinite(r["psnr_db"]) and r["seconds"] > 0
        assert r["options"]["lr"] == 0.01 and r["steps_run"] == 3


def test_a_non_finite_inversion_is_failed_never_ok(setup, tmp_path):
    out = tmp_path / "out"
    code = main(["invert", str(setup / "good" / "img00.png"), str(setup / "good" / "img01.png"), "--model",
                 str(setup / "vae4"), "--device", "cpu", "--steps", "4", "-o", "lr=1e30", "-o", "schedule=none",
                 "--quiet", "--out", str(out)])
    rows = jobs.read_manifest(out)
    assert code == 2 and [r["status"] for r in rows] == ["failed", "failed"]
    assert all("non-finite" in r["error"] and r["shard"] is None for r in rows)
    assert jobs.load_latents(out) == {} and not list((out / "shards").iterdir())


def test_output_folder_rules(setup, tmp_path, capsys):
    args = _args(setup, tmp_path / "out", steps=1)
    assert main(args) == 0
    assert main(args) == 2 and "already holds a job; pass --resume" in capsys.readouterr().err
    assert main(args[:-2] + ["--out", str(tmp_path / "out"), "--resume", "--steps", "2"]) == 2
    assert "steps: 1 there, 2 now" in capsys.readouterr().err
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "x.jpg").write_text("")
    assert main(args[:-1] + [str(tmp_path / "photos")]) == 2 and "not empty and holds no job" in capsys.readouterr().err
    assert main(args[:-1] + [str(tmp_path / "z.safetensors")]) == 2 and "--out is a folder" in capsys.readouterr().err
    # resuming a finished job inverts nothing and keeps its rows
    assert main(args + ["--resume"]) == 0 and "0 inverted in this run" in capsys.readouterr().out
    # --resume where there is no job yet (a mistyped --out) says so, then starts one
    with pytest.warns(UserWarning, match="holds no job yet"):
        assert main(args[:-2] + ["--out", str(tmp_path / "fresh"), "--resume"]) == 0
    assert jobs.read_manifest(tmp_path / "fresh")


# ------------------------------------------------------------------------------------ kill -9, then --resume


def test_sigkill_mid_run_then_resume_ends_as_an_uninterrupted_run(setup, reference, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "decinv", *_args(setup, out), "--threads", "1"], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if out.is_dir():
            _assert_complete(out)  # polled throughout the run: never a partial file under a final name
            if len(list((out / "parts").glob("*.jsonl"))) >= 2:
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the job ended before the kill: {proc.stderr.read().decode()[-2000:]}"
    _assert_complete(out)
    saved = len(list((out / "parts").glob("*.jsonl")))
    assert 2 <= saved < N_GOOD // BATCH and not (out / "manifest.jsonl").exists()
    with one_thread():
        summary = jobs.run_job([str(setup / "good")], out, decinv.load_model(str(setup / "vae4"), device="cpu"),
                               steps=STEPS, batch_size=BATCH, resume=True, progress=False)
    assert summary.skipped == saved * BATCH and summary.inverted_now == N_GOOD - saved * BATCH
    _assert_complete(out)
    assert not any((out / ".tmp").glob("*"))
    _assert_same_job(out, reference)


# ------------------------------------------------------------------------------------ torchrun, two processes


def test_two_gloo_processes_give_the_same_latents_and_manifest_as_one(setup, reference, tmp_path):
    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "decinv", *_args(setup, out)], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "16 ok" in run.stdout and "by 2 process(es)" in run.stdout
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
    _assert_same_job(out, reference)


# ------------------------------------------------------------------------------------------ tree-ring readout


def test_watermark_job_detects_the_keys_it_was_given(tmp_path, capsys):
    from decinv.applications import watermark as wm
    from decinv.generation.diffusion import ddim_invert, ddim_sample
    from decinv.generation.experiments import quantize_8bit
    from decinv.core.models import load_pipeline

    pipe = load_pipeline("tiny", device="cpu")
    keys, mask = wm.make_keys(16, 6, centred_on_dc=True)
    labels = torch.arange(3).repeat(2)
    z_T = wm.inject(torch.randn(6, 4, 16, 16, generator=torch.Generator().manual_seed(0)), keys[labels] / 4, mask)
    x = quantize_8bit(pipe.vae.decode(ddim_sample(pipe.unet, pipe.scheduler, z_T, 10)))
    (tmp_path / "imgs").mkdir()
    for i, image in enumerate(x):
        rgb = ((image.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / "imgs" / f"{i}_key{labels[i]}.png")
    out = tmp_path / "out"
    assert main(["watermark", str(tmp_path / "imgs"), "--profile", "tiny", "--device", "cpu", "--steps", "10",
                 "--diffusion-steps", "10", "--centred-on-dc", "--quiet", "--out", str(out), "-b", "4"]) == 0
    printed = capsys.readouterr().out
    assert "tree-ring key | images" in printed
    rows = jobs.read_manifest(out)
    assert [r["watermark"]["key"] for r in rows] == labels.tolist()  # every key read back
    # the stored z_T and distances are the diffusion inversion of the stored z_0, read with decinv.applications.watermark
    z0, zT = jobs.load_latents(out), jobs.load_latents(out, which="z_T")
    for r in rows:
        expected = ddim_invert(pipe.unet, pipe.scheduler, z0[r["source"]][None], 10)
        assert torch.allclose(zT[r["source"]], expected[0], atol=1e-5)
        d = wm.distances(expected, keys / 4, mask)[0]
        assert r["watermark"]["distances"] == pytest.approx(d.tolist(), rel=1e-4)
        assert r["watermark"]["distance"] == min(r["watermark"]["distances"])
    summary = json.loads((out / "summary.json").read_text())
    assert sum(v["images"] for v in summary["watermark"].values()) == 6


def test_watermark_job_on_a_text_to_image_pipeline_uses_its_diffusion_inversion(tmp_path):
    """The real-pipeline branch (sd21/sd15 profiles), on a tiny random pipeline of the same classes."""
    from decinv.applications import watermark as wm
    from decinv.generation.experiments import load_profile
    from decinv.applications.watermark_pipelines import invert_diffusion
    from tests import tiny_pipelines

    source = tiny_pipelines.build(tmp_path / "t2i") / "pipe"
    model, pipe, _ = load_profile("sd21", "cpu", source=str(source), generation={"steps": 2, "height": 16,
                                                                                  "width": 16})
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        _png(tmp_path / "imgs" / f"{i}.png", 200 + i)
    readout = jobs.TreeRing(pipe, radius=2, prompt="a red cat")
    summary = jobs.run_job([str(tmp_path / "imgs")], tmp_path / "out", model, steps=2, readout=readout,
                           progress=False)
    assert summary.ok == 3 and sum(v["images"] for v in summary.watermark.values()) == 3
    settings = json.loads((tmp_path / "out" / "job.json").read_text())["settings"]["readout"]
    assert settings["prompt"] == "a red cat" and settings["diffusion_steps"] == 2 and "sd21" in settings["pipeline"]
    z0, zT = jobs.load_latents(tmp_path / "out"), jobs.load_latents(tmp_path / "out", which="z_T")
    keys, mask = wm.make_keys(8, 2)
    rows = jobs.read_manifest(tmp_path / "out")  # one batch of 3, in this order
    expected = invert_diffusion(pipe, torch.stack([z0[r["source"]] for r in rows]), ["a red cat"] * 3, steps=2)
    unprompted = invert_diffusion(pipe, torch.stack([z0[r["source"]] for r in rows]), [""] * 3, steps=2)
    assert (unprompted - expected).abs().max() > 1e-2  # so the comparison below can tell the prompt was used
    distances = wm.distances(expected.float(), keys * 8 / 64, mask)
    for i, row in enumerate(rows):
        assert torch.allclose(zT[row["source"]], expected[i].float(), atol=1e-4)  # 2e-5 seen: UNet round-off
        assert row["watermark"]["distances"] == pytest.approx(distances[i].tolist(), rel=1e-3)


def test_tree_ring_readout_is_the_watermark_protocols_ldm():
    """The readout inverts the diffusion through `watermark_ldm`, the LDM chapter 5's protocol drives: the same
    object type for the same pipeline, its description in the job's settings, and a clear error for anything else."""
    from decinv.applications.watermark_pipelines import watermark_ldm
    from decinv.core.models import load_pipeline

    pipe = load_pipeline("tiny", device="cpu")
    readout = jobs.TreeRing(pipe, steps=7, prompt="ignored")
    assert type(readout.ldm) is type(watermark_ldm(pipe)) and readout.ldm.steps == readout.steps == 7
    settings = readout.settings()
    assert settings["pipeline"] == readout.ldm.description and "naive DDIM" in settings["pipeline"]
    assert settings["prompt"] is None  # the tiny UNet takes none, so none is recorded
    with pytest.raises(TypeError, match="TreeRing needs"):
        jobs.TreeRing(object())
