"""Command line: ``decinv invert``, ``decinv methods`` and ``decinv bench``.

    decinv invert photo.png --model tiny --method gradfree-adam --steps 50 --out latents.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from decinv.bench import add_parser as add_bench_parser

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


# PIL modes that hold more than 8 bits per pixel, with the value that maps to white. ``convert("RGB")`` would clip
# them to 255 (a 16-bit ramp 0..65535 would load as almost all white), so they are rescaled instead.
HIGH_BIT_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def load_image(path: Path, size: int | None, multiple: int):
    """Any image file PIL reads -> (1, 3, H, W) in [-1, 1]; optionally resized so its shorter side is ``size`` and
    centre-cropped square, then cropped to a multiple of the autoencoder's downsampling factor.

    8-bit modes (palette, grey, RGB, RGBA, CMYK) are converted to RGB and mapped by x / 127.5 - 1. High-bit grey modes
    are rescaled by their full range: 16-bit (PIL's ``I;16*``, and ``I``, which PIL uses for 16-bit PNGs and must
    then hold values in 0..65535) by x / 65535, float ``F`` images must already lie in [0, 1]; the grey channel is
    repeated three times. (PIL opens 16-bit-per-channel RGB PNGs as 8-bit RGB itself.)
    """
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (FileNotFoundError, IsADirectoryError):
        raise SystemExit(f"error: {path}: no such image file")
    except UnidentifiedImageError:
        raise SystemExit(f"error: {path}: not an image format PIL can read (try PNG or JPEG)")
    if image.mode in HIGH_BIT_MODES:
        white = HIGH_BIT_MODES[image.mode]
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > white:
            raise SystemExit(f"error: {path}: a {image.mode} image with values in [{low:.6g}, {high:.6g}], outside "
                             f"0..{white:g}; save it as 8- or 16-bit PNG (or scale float images to [0, 1])")
        image = Image.fromarray((values / white).astype(np.float32), mode="F")  # grey in [0, 1]; PIL resizes F
    else:
        image = image.convert("RGB")  # palette, grey, RGBA and CMYK all become 8-bit RGB
    if size:
        scale = size / min(image.size)
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    w, h = (s - s % multiple for s in image.size)
    if w == 0 or h == 0:
        raise SystemExit(f"error: {path} is {image.width}x{image.height}, smaller than the autoencoder's "
                         f"downsampling factor {multiple}; use --size to enlarge it")
    image = image.crop(((image.width - w) // 2, (image.height - h) // 2, (image.width - w) // 2 + w,
                        (image.height - h) // 2 + h))
    if image.mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 2 - 1  # LANCZOS may overshoot [0, 1] slightly
        return torch.from_numpy(grey)[None, None].repeat(1, 3, 1, 1).contiguous()
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def _parse_option(text: str):
    key, _, value = text.partition("=")
    if not _:
        raise argparse.ArgumentTypeError(f"--option expects KEY=VALUE, got {text!r}")
    for cast in (int, float):
        try:
            return key.replace("-", "_"), cast(value)
        except ValueError:
            pass
    return key.replace("-", "_"), None if value.lower() == "none" else value


def cmd_invert(args) -> int:
    import torch
    from safetensors.torch import save_file

    import decinv
    from decinv.solvers.tracking import norms

    model = decinv.load_model(args.model, device=args.device, dtype=getattr(torch, DTYPES[args.dtype]))
    print(f"{model}\nmethod {args.method}, {args.steps} steps, options {dict(args.option) or 'defaults'}")
    latents, names = {}, set()
    for path in args.images:
        x = load_image(path, args.size, model.downsample)
        encoder = decinv.invert(x, model, "encoder", progress=False)
        result = decinv.invert(x, model, args.method, args.steps, progress=not args.quiet, **dict(args.option))
        residual = lambda z: float(norms(model.encode(model.decode(z), check=False) - encoder.z)[0])
        psnr = lambda z: float(decinv.psnr(model.decode(z).float(), x)[0])
        print(f"{path} ({x.shape[-1]}x{x.shape[-2]}): residual ||E(D(z))-E(x)|| encoder {residual(encoder.z):.4g} "
              f"-> {residual(result.z):.4g}; PSNR of D(z) vs input encoder {psnr(encoder.z):.2f} dB -> "
              f"{psnr(result.z):.2f} dB; {result.seconds:.2f} s, {result.status}")
        name = Path(path).stem
        while name in names:
            name += "_"
        names.add(name)
        latents[name] = result.z[0].float().cpu().contiguous()
    if args.out:
        save_file(latents, str(args.out), metadata={"model": str(args.model), "method": args.method,
                                                    "steps": str(args.steps), "dtype": args.dtype})
        print(f"wrote {len(latents)} latent(s) to {args.out} (keys: {', '.join(latents)})")
    return 0


def cmd_methods(args) -> int:
    import decinv

    for name in decinv.METHODS:
        doc = (decinv.METHODS[name].__doc__ or "").strip().splitlines()[0]
        print(f"{name:14s} {doc}\n{'':14s} options: {decinv.method_options(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decinv", description="Gradient-free decoder inversion in latent "
                                     "diffusion models (Hong et al., NeurIPS 2024): find z with D(z) ~ x.")
    sub = parser.add_subparsers(dest="command", required=True)
    inv = sub.add_parser("invert", help="invert the decoder at one or more images",
                         description="Find latents z with D(z) ~ image; print the residual and PSNR of the "
                         "encoder baseline and of the inversion; optionally save the latents.")
    inv.add_argument("images", nargs="+", type=Path, help="image files (any size/mode PIL reads)")
    inv.add_argument("--model", default="tiny", help="'tiny' (bundled v2, 128x128; also 'tiny-v2') or 'tiny-v1' "
                     "(64x64), sd21, sd15, sd14, a hub id or a local save_pretrained folder (default: tiny)")
    inv.add_argument("--method", default="gradfree-adam", help="see `decinv methods` (default: gradfree-adam)")
    inv.add_argument("--steps", type=int, default=100, help="iterations (default 100; 0 for the encoder)")
    inv.add_argument("--dtype", choices=DTYPES, default="fp32", help="precision (fp16/bf16 are slow on CPU)")
    inv.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    inv.add_argument("--size", type=int, help="resize the shorter side to SIZE and centre-crop a square")
    inv.add_argument("--option", "-o", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                     help="a method option, e.g. -o lr=0.02 -o schedule=none (repeatable)")
    inv.add_argument("--out", type=Path, help="save the latents to this .safetensors file")
    inv.add_argument("--quiet", action="store_true", help="no progress bar")
    inv.set_defaults(run=cmd_invert)
    methods = sub.add_parser("methods", help="list the inversion methods and their options")
    methods.set_defaults(run=cmd_methods)
    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
