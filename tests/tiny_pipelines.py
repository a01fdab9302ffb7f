"""Tiny *random* pipelines of the real models' classes, saved as the hub repos are laid out (offline, seconds).

``build(root)`` writes ``root/pipe`` (a ``StableDiffusionPipeline.save_pretrained`` folder: unet/, vae/,
text_encoder/, tokenizer/ and scheduler/, plus motion_adapter/ for the AnimateDiff stand-in) and
``root/prompts.txt``. Geometry: 16x16 images, 4x8x8 latents (a x2 VAE), CLIP width 32, a tokenizer over single
letters. Used by the tests and, as ``python -m tests.tiny_pipelines DIR``, to run a chapter end to end on the CPU
through the same code path as the real models::

    python -m tests.tiny_pipelines /tmp/tiny
    python scripts/build_book.py --only 01 --no-build -p profile sd14-video -p smoke True \\
        -r source /tmp/tiny/pipe -y "generation: {steps: 2, frames: 2, height: 16, width: 16}"
"""

import json
import sys
from pathlib import Path

import torch

PROMPTS = ["a red cat", "a blue dog on a hill", "moon"]
SMALL = {"height": 16, "width": 16}  # the tiny pipeline's native size (the protocols' 320x512 video would be slow)


def write_clip_tokenizer(folder):
    """A CLIP BPE vocabulary of single letters (with and without the end-of-word mark) and no merges."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in "abcdefghijklmnopqrstuvwxyz":
            vocab[c + suffix] = len(vocab)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return len(vocab)


def build(root, prompts=PROMPTS):
    """Write the random pipeline to ``root/pipe`` and the prompts to ``root/prompts.txt``; returns ``root``."""
    from diffusers import AutoencoderKL, MotionAdapter, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from decinv.generation.pipelines import paper_scheduler

    root = Path(root)
    n_vocab = write_clip_tokenizer(root / "vocab")
    tokenizer = CLIPTokenizer(str(root / "vocab" / "vocab.json"), str(root / "vocab" / "merges.txt"),
                              model_max_length=77)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=n_vocab, hidden_size=32, intermediate_size=37,
                                                num_hidden_layers=2, num_attention_heads=4,
                                                max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                                pad_token_id=1, projection_dim=32))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                        sample_size=16)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=paper_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root / "pipe")
    torch.manual_seed(1)  # the video stand-in: a random motion adapter matching the UNet's blocks
    MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                  motion_norm_num_groups=8, motion_max_seq_length=32).save_pretrained(root / "pipe" / "motion_adapter")
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n\n")
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.tiny_pipelines OUTPUT_DIR")
    print(build(sys.argv[1]) / "pipe")
