"""Latent diffusion around the autoencoder: DDIM sampling and inversion (diffusion), the real text-to-image/video
pipelines (pipelines), the profiles and their test instances (experiments, instances). Imports core only."""
