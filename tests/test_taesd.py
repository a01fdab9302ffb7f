"""Original TAESD-family checkpoints load as decinv models (decinv.core.taesd).

The reference here is independent of decinv.core.taesd: each variant's published layout is written down as a list of
layers (`LAYERS`), random checkpoints are generated from it in the published format (float16 state dicts of an
nn.Sequential, saved with torch.save), and a from-scratch forward pass with torch.nn.functional over the raw state
dict is compared with decinv's encoder and decoder. With DECINV_TAESD_DIR set (CI sets it to ../shared/models/taesd),
the same comparison runs on the real TAEF2 weights and their layout is checked against the list.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import decinv
from decinv.core.taesd import TAESDCheckpointError, VARIANTS, load_taesd, pipeline_convention, variant_of

CHANNELS = {"taesd": 4, "taesdxl": 4, "taesd3": 16, "taef1": 16, "taef2": 32, "taesana": 32}


def _layers(variant: str, part: str) -> list:
    """The published nn.Sequential, one entry per index: ("conv", c_in, c_out, stride, bias), ("block", c, norm),
    ("relu",), ("clamp",) or ("up",)."""
    c = CHANNELS[variant]
    norm = variant == "taef2"
    if part == "encoder":
        if variant == "taesana":
            head = [("conv", 3, 32, 2, True), ("relu",), ("conv", 32, 64, 2, True), ("relu",), ("block", 64, False)]
        else:
            head = [("conv", 3, 64, 1, True), ("block", 64, False)]
        stages = []
        for s in range(3):
            stages += [("conv", 64, 64, 2, False)] + [("block", 64, norm and s == 2)] * 3
        return head + stages + [("conv", 64, c, 1, True)]
    widths = [256, 128, 64, 64, 64, 64] if variant == "taesana" else [64] * 4
    out = [("clamp",), ("conv", c, widths[0], 1, True), ("relu",)]
    for s in range(len(widths) - 1):
        out += [("block", widths[s], norm and s == 0)] * 3 + [("up",), ("conv", widths[s], widths[s + 1], 1, False)]
    return out + [("block", widths[-1], False), ("conv", widths[-1], 3, 1, True)]


def _random_state(variant: str, part: str, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, scale: (torch.randn(*shape, generator=g) * scale).half()
    state = {}
    for i, layer in enumerate(_layers(variant, part)):
        if layer[0] == "conv":
            _, cin, cout, _, bias = layer
            state[f"{i}.weight"] = rand(cout, cin, 3, 3, scale=(2 / (9 * cin)) ** 0.5)
            if bias:
                state[f"{i}.bias"] = rand(cout, scale=0.05)
        elif layer[0] == "block":
            _, ch, norm = layer
            for j in (0, 2, 4):  # small last conv: the residual stack stays bounded through ~20 blocks
                state[f"{i}.conv.{j}.weight"] = rand(ch, ch, 3, 3, scale=(2 / (9 * ch)) ** 0.5 * (0.2 if j == 4 else 1))
                state[f"{i}.conv.{j}.bias"] = rand(ch, scale=0.05)
            if norm:
                state[f"{i}.pool.0.weight"] = rand(4 * ch, ch, 1, 1, scale=(1 / ch) ** 0.5)
                state[f"{i}.pool.1.weight"] = (1 + rand(4 * ch, scale=0.1).float()).half()
                state[f"{i}.pool.1.bias"] = rand(4 * ch, scale=0.1)
                state[f"{i}.pool.3.weight"] = rand(ch, 4 * ch, 1, 1, scale=0.2 * (1 / (4 * ch)) ** 0.5)
    return state


def _reference(state: dict, variant: str, part: str, t: torch.Tensor) -> torch.Tensor:
    """The published network's forward pass written directly with torch.nn.functional (float32)."""
    w = {k: v.float() for k, v in state.items()}
    h = (t + 1) / 2 if part == "encoder" else t  # TAESD's images are in [0, 1]
    for i, layer in enumerate(_layers(variant, part)):
        kind = layer[0]
        if kind == "conv":
            h = F.conv2d(h, w[f"{i}.weight"], w.get(f"{i}.bias"), stride=layer[3], padding=1)
        elif kind == "relu":
            h = h.clamp_min(0)
        elif kind == "clamp":
            h = 3 * torch.tanh(h / 3)
        elif kind == "up":
            h = h.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        else:
            if layer[2]:
                g = F.conv2d(h, w[f"{i}.pool.0.weight"])
                g = F.group_norm(g, 4, w[f"{i}.pool.1.weight"], w[f"{i}.pool.1.bias"], eps=1e-5).clamp_min(0)
                h = h + F.conv2d(g, w[f"{i}.pool.3.weight"])
            r = h
            for j in (0, 2, 4):
                r = F.conv2d(r, w[f"{i}.conv.{j}.weight"], w[f"{i}.conv.{j}.bias"], padding=1)
                r = r.clamp_min(0) if j < 4 else r
            h = (r + h).clamp_min(0)
    return h if part == "encoder" else h * 2 - 1


def _write_pair(folder: Path, variant: str, seed: int = 0, suffix: str = ".pth", name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = name or variant
    for k, part in enumerate(("encoder", "decoder")):
        state = _random_state(variant, part, seed + k)
        path = folder / f"{name}_{part}{suffix}"
        if suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(path))
        else:
            torch.save(state, path)
    return folder


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("taesd")
    return {v: _write_pair(root / v, v, seed=i * 2) for i, v in enumerate(CHANNELS)}


def _images(side: int, n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("variant", list(CHANNELS))
def test_every_variant_loads_and_matches_the_from_scratch_forward(zoo, variant):
    model = decinv.load_model(zoo[variant])  # variant inferred from the file names
    f = 32 if variant == "taesana" else 8
    assert (model.latent_channels, model.downsample) == (CHANNELS[variant], f)
    assert model.vae.config.variant == variant and model.dtype == torch.float32
    x = _images(2 * f)
    z = model.encode(x)
    assert z.shape == (2, CHANNELS[variant], 2, 2)
    enc = torch.load(zoo[variant] / f"{variant}_encoder.pth", weights_only=True)
    dec = torch.load(zoo[variant] / f"{variant}_decoder.pth", weights_only=True)
    torch.testing.assert_close(z, _reference(enc, variant, "encoder", x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.decode(z), _reference(dec, variant, "decoder", z), rtol=1e-4, atol=1e-5)
    assert variant in repr(model) and "TAESD" in repr(model)


def test_the_normalisation_branch_and_the_clamp_matter(zoo):
    """The reference would not notice a layer decinv dropped if the layer did nothing: check that the FLUX.2 branch
    and the soft clamp change the output on these random weights."""
    model = decinv.load_model(zoo["taef2"])
    x = _images(16)
    enc = torch.load(zoo["taef2"] / "taef2_encoder.pth", weights_only=True)
    no_branch = {k: (torch.zeros_like(v) if ".pool.3." in k else v) for k, v in enc.items()}
    assert (model.encode(x) - _reference(no_branch, "taef2", "encoder", x)).abs().max() > 1e-3
    big = torch.full((1, 32, 2, 2), 20.0)
    assert torch.allclose(model.decode(big), model.decode(big * 10), atol=1e-3)  # 3 tanh(z/3) saturates


def test_one_file_a_pair_and_an_explicit_variant(zoo, tmp_path):
    folder = zoo["taesd3"]
    by_file = decinv.load_model(folder / "taesd3_decoder.pth")
    by_pair = decinv.load_model((folder / "taesd3_encoder.pth", folder / "taesd3_decoder.pth"))
    x = _images(16)
    torch.testing.assert_close(by_file.encode(x), by_pair.encode(x))
    # renamed files: the name tells nothing, the variant is given
    for part in ("encoder", "decoder"):
        (tmp_path / f"mine_{part}.pth").write_bytes((folder / f"taesd3_{part}.pth").read_bytes())
    pair = (tmp_path / "mine_encoder.pth", tmp_path / "mine_decoder.pth")
    with pytest.raises(TAESDCheckpointError, match="cannot infer the TAESD variant"):
        decinv.load_model(pair)
    with pytest.raises(TAESDCheckpointError, match="mine_decoder.pth, mine_encoder.pth.*load_model\\(\\(encoder_path"):
        decinv.load_model(tmp_path, variant="taef1")  # a folder of renamed files: the fix is the pair form
    model = decinv.load_model(pair, variant="taef1")  # same layout as taesd3, FLUX.1's latent space
    assert model.vae.config.variant == "taef1" and "FLUX.1" in repr(model)
    torch.testing.assert_close(model.encode(x), by_pair.encode(x))


def test_safetensors_and_a_comfyui_folder_with_several_variants(tmp_path):
    folder = tmp_path / "vae_approx"
    _write_pair(folder, "taesd", seed=3, suffix=".safetensors")
    _write_pair(folder, "taef2", seed=5)
    with pytest.raises(TAESDCheckpointError, match="several TAESD variants.*variant="):
        decinv.load_model(folder)
    assert decinv.load_model(folder, variant="taesd").latent_channels == 4
    assert decinv.load_model(folder, variant="taef2").latent_channels == 32


def test_files_that_do_not_match_the_variant_are_refused_with_the_fix(zoo, tmp_path):
    with pytest.raises(TAESDCheckpointError, match=r"does not match the encoder of TAESD variant 'taef2'.*"
                                                   r"layout of 'taesd' / 'taesdxl': pass variant='taesd'"):
        decinv.load_model((zoo["taesd"] / "taesd_encoder.pth", zoo["taesd"] / "taesd_decoder.pth"), variant="taef2")
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "taef2_encoder.pth").write_bytes((zoo["taef2"] / "taef2_decoder.pth").read_bytes())
    (swapped / "taef2_decoder.pth").write_bytes((zoo["taef2"] / "taef2_encoder.pth").read_bytes())
    with pytest.raises(TAESDCheckpointError, match="It is a decoder.*look swapped"):
        decinv.load_model(swapped)
    half = tmp_path / "half"
    half.mkdir()
    (half / "taef2_encoder.pth").write_bytes((zoo["taef2"] / "taef2_encoder.pth").read_bytes())
    with pytest.raises(TAESDCheckpointError, match="has taef2_encoder.pth but no taef2_decoder.pth"):
        decinv.load_model(half)
    (half / "taef2_decoder.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(TAESDCheckpointError, match="could not be read as a TAESD checkpoint"):
        decinv.load_model(half)
    with pytest.raises(TAESDCheckpointError, match="unknown TAESD variant 'taexl'"):
        decinv.load_model(zoo["taesd"], variant="taexl")
    with pytest.raises(TAESDCheckpointError, match="did you mean 'taef2'"):
        decinv.load_model(zoo["taef2"], variant="TAEF2")
    with pytest.raises(TAESDCheckpointError, match="no taesd_encoder.pth or taesd_decoder.pth.*pair.*'taef2'"):
        decinv.load_model(zoo["taef2"], variant="taesd")
    with pytest.raises(TAESDCheckpointError, match="does not exist"):
        decinv.load_model(tmp_path / "nowhere" / "taef2_encoder.pth")
    with pytest.raises(TypeError, match="variant='taesd' applies to original TAESD checkpoints only"):
        decinv.load_model("tiny", variant="taesd")


def test_variant_names_and_the_pipelines_latents():
    assert variant_of("x/taesdxl_decoder.safetensors") == "taesdxl" and variant_of("vae.pth") is None
    assert set(VARIANTS) == set(CHANNELS)
    raw = torch.randn(1, 16, 2, 2)
    z = pipeline_convention("taef1").normalize(raw)
    torch.testing.assert_close(z, (raw - 0.1159) * 0.3611)
    torch.testing.assert_close(pipeline_convention("taef1").denormalize(z), raw)
    with pytest.raises(NotImplementedError, match="AutoencoderKLFlux2"):
        pipeline_convention("taef2")


def test_inversion_runs_on_a_taesd_model(zoo):
    model = decinv.load_model(zoo["taef2"])
    z_true = model.encode(_images(16, n=3))
    x = model.decode(z_true).clamp(-1, 1)
    result = decinv.invert(x, model, "gradfree-adam", 5, z_true=z_true, progress=False)
    assert result.status == "completed" and result.z.shape == z_true.shape
    assert torch.isfinite(result.z).all()


def test_a_diffusers_autoencoder_tiny_folder_still_loads_as_autoencoder_tiny(tmp_path):
    from diffusers import AutoencoderTiny

    AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                    num_decoder_blocks=(1, 1), latent_channels=4).save_pretrained(tmp_path / "taesd")
    model = decinv.load_model(tmp_path / "taesd")
    assert type(model.vae).__name__ == "AutoencoderTiny"


TAESD_DIR = os.environ.get("DECINV_TAESD_DIR")


@pytest.mark.skipif(not TAESD_DIR, reason="DECINV_TAESD_DIR is not set (the real TAEF2 checkpoints)")
def test_real_taef2_has_the_published_layout_and_matches_the_from_scratch_forward():
    folder = Path(TAESD_DIR)
    model = decinv.load_model(folder, variant="taef2")
    assert len(model.vae.config.encoder_sha256) == 64
    enc = torch.load(folder / "taef2_encoder.pth", weights_only=True)
    dec = torch.load(folder / "taef2_decoder.pth", weights_only=True)
    for part, state in (("encoder", enc), ("decoder", dec)):
        assert state.keys() == _random_state("taef2", part, 0).keys()
    x = _images(32)
    z = model.encode(x)
    torch.testing.assert_close(z, _reference(enc, "taef2", "encoder", x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.decode(z), _reference(dec, "taef2", "decoder", z), rtol=1e-4, atol=1e-4)
