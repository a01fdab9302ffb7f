"""Tiny random instances of every autoencoder class decinv supports (a few thousand parameters each), for tests
and the video benchmark. Each builder takes a seed and returns an untrained diffusers model."""

from __future__ import annotations

import torch


def tiny_kl(seed: int = 0, **config):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                         sample_size=16, **config)


def tiny_taesd(seed: int = 0, **config):
    """The issue's case 1: encoder/decoder block channels (16, 16), one block each (x2)."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(encoder_block_out_channels=(16, 16), decoder_block_out_channels=(16, 16),
                           num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4, **config)


def tiny_dc(seed: int = 0, **config):
    from diffusers import AutoencoderDC

    torch.manual_seed(seed)
    return AutoencoderDC(latent_channels=4, attention_head_dim=4,
                         encoder_block_types=("ResBlock", "EfficientViTBlock"),
                         decoder_block_types=("ResBlock", "EfficientViTBlock"),
                         encoder_block_out_channels=(8, 16), decoder_block_out_channels=(8, 16),
                         encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
                         encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
                         scaling_factor=0.41, **config)


def tiny_flux2(seed: int = 0, **config):
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                             block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                             sample_size=16, **config)
    g = torch.Generator().manual_seed(seed + 1)  # non-trivial batch-norm statistics (a fresh bn has mean 0, var 1)
    vae.bn.running_mean.copy_(torch.randn(vae.bn.running_mean.shape, generator=g) * 0.3)
    vae.bn.running_var.copy_(torch.rand(vae.bn.running_var.shape, generator=g) + 0.5)
    return vae


def tiny_wan(seed: int = 0, **config):
    """x4 in space, x4 in time (F = 4k + 1 -> k + 1 latent frames), 4 latent channels."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    config = {"base_dim": 8, "z_dim": 4, "dim_mult": [1, 1, 1], "num_res_blocks": 1,
              "temperal_downsample": [True, True], "latents_mean": [0.1, -0.2, 0.3, 0.0],
              "latents_std": [1.5, 0.5, 2.0, 1.0], "scale_factor_spatial": 4, **config}
    return AutoencoderKLWan(**config)


def tiny_ltx(seed: int = 0, **config):
    """x4 in space, x4 in time, 4 latent channels; statistics set in its buffers, as LTX checkpoints carry them."""
    from diffusers import AutoencoderKLLTXVideo

    torch.manual_seed(seed)
    config = {"latent_channels": 4, "block_out_channels": (8, 8, 8), "decoder_block_out_channels": (8, 8, 8),
              "layers_per_block": (1, 1, 1, 1), "decoder_layers_per_block": (1, 1, 1, 1),
              "spatio_temporal_scaling": (True, True, False), "decoder_spatio_temporal_scaling": (True, True, False),
              "decoder_inject_noise": (False,) * 4, "upsample_residual": (False,) * 3, "upsample_factor": (1,) * 3,
              "down_block_types": ("LTXVideoDownBlock3D",) * 3, "downsample_type": ("conv",) * 3,
              "patch_size": 1, "patch_size_t": 1, "scaling_factor": 0.8, **config}
    vae = AutoencoderKLLTXVideo(**config)
    vae.latents_mean.copy_(torch.tensor([0.2, -0.1, 0.0, 0.4]))
    vae.latents_std.copy_(torch.tensor([0.5, 2.0, 1.0, 1.5]))
    return vae


IMAGE = {"AutoencoderKL": tiny_kl, "AutoencoderTiny": tiny_taesd, "AutoencoderDC": tiny_dc,
         "AutoencoderKLFlux2": tiny_flux2}
VIDEO = {"AutoencoderKLWan": tiny_wan, "AutoencoderKLLTXVideo": tiny_ltx}
