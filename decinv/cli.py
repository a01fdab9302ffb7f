"""Command line: ``decinv invert``, ``decinv watermark``, ``decinv methods`` and ``decinv bench``.

    decinv invert photo.png photos/ --model tiny --method gradfree-adam --steps 50 --out runs/a
    decinv invert photos/ --out runs/a --resume                               # after a crash or a kill
    torchrun --nproc_per_node 2 -m decinv invert photos/ --out runs/a         # two processes
    decinv watermark generated/ --profile tiny --out runs/wm                  # tree-ring keys per image
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from decinv.bench import add_parser as add_bench_parser

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def load_image(path: Path, size: int | None, multiple: int):
    """`decinv.core.images.load_image` for one file on the command line: a refused file ends the command with its reason
    (``SystemExit``) instead of raising `decinv.core.images.BadImageError`."""
    from decinv.core.images import BadImageError, load_image as load

    try:
        return load(path, size, multiple)
    except BadImageError as error:
        raise SystemExit(f"error: {error}") from None


def _parse_value(value: str):
    """A number (int, then float), None ("none"), a bool ("true"/"false"), a tuple ("0.9,0.999"), else the text."""
    if "," in value:
        return tuple(_parse_value(part.strip()) for part in value.split(","))
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    words = {"none": None, "true": True, "false": False}
    return words[value.lower()] if value.lower() in words else value


def _parse_option(text: str):
    key, _, value = text.partition("=")
    if not _:
        raise argparse.ArgumentTypeError(f"--option expects KEY=VALUE, got {text!r}")
    return key.replace("-", "_"), _parse_value(value)


def _check_method(args) -> None:
    """Refuse an unknown method, a bad option value or step count before any model is loaded
    (`decinv.core.solvers.check_options`, `check_steps`); e.g. ``-o safeguard=false`` is the bool False,
    ``-o betas=0.9,0.99`` a tuple."""
    from decinv.core.solvers import check_options, check_steps

    check_options(args.method, dict(args.option))
    check_steps(args.method, args.steps)


def _job_model(args, model_source):
    """(LatentModel, pipeline or None) for a job, on this rank's device (`decinv.applications.jobs.rank_device`)."""
    import torch

    from decinv.applications.jobs import rank_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = rank_device(args.device), getattr(torch, DTYPES[args.dtype])
    if getattr(args, "profile", None):
        from decinv.generation.experiments import load_profile

        model, pipeline, _ = load_profile(args.profile, device, dtype, source=args.source)
        return model, pipeline
    import decinv

    return decinv.load_model(model_source, device=device, dtype=dtype), None


def _run_job(args, model, readout) -> int:
    from decinv.applications.jobs import dist_env, format_summary, run_job

    if args.out.suffix == ".safetensors":
        raise ValueError(f"--out is a folder since the job writes shards and a manifest (got {args.out}); pass a "
                         "folder, e.g. --out runs/a, and read the latents with decinv.applications.jobs.load_latents('runs/a').")
    rank = dist_env()[0]
    if rank == 0 and not args.quiet:
        print(f"{model}\nmethod {args.method}, {args.steps if args.steps is not None else 'default'} steps, options "
              f"{dict(args.option) or 'defaults'}, batches of {args.batch_size}, output {args.out}", flush=True)
    try:
        summary = run_job(args.inputs, args.out, model, method=args.method, steps=args.steps,
                          options=dict(args.option), size=args.size, batch_size=args.batch_size, resume=args.resume,
                          retry_failed=args.retry_failed, readout=readout, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"interrupted: every finished batch is saved in {args.out}; add --resume to continue", file=sys.stderr)
        return 130
    if rank == 0:
        print(format_summary(summary))
    return summary.exit_status if rank == 0 else 0


def cmd_invert(args) -> int:
    _check_method(args)
    model, _ = _job_model(args, args.model)
    return _run_job(args, model, None)


def cmd_watermark(args) -> int:
    from decinv.applications.jobs import TreeRing

    _check_method(args)
    model, pipeline = _job_model(args, None)
    if pipeline is None:
        raise ValueError(f"profile {args.profile!r} has no diffusion model to invert; use tiny, tiny-v1, sd21 or sd15.")
    readout = TreeRing(pipeline, radius=args.radius, channel=args.channel, centred_on_dc=args.centred_on_dc,
                       key_scale=args.key_scale, steps=args.diffusion_steps, prompt=args.prompt)
    return _run_job(args, model, readout)


def _job_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every job command shares (inputs, output, batching, resume, method, device)."""
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively), glob patterns "
                        "(quoted: 'imgs/**/*.png') or @list.txt files (one of those per line)")
    parser.add_argument("--out", type=Path, required=True, help="output folder: job.json, shards/, parts/, "
                        "manifest.jsonl, summary.json")
    parser.add_argument("--batch-size", "-b", type=int, default=16, help="images inverted together (default 16)")
    parser.add_argument("--resume", action="store_true", help="continue the job in --out: skip what its manifest "
                        "holds (same settings required)")
    parser.add_argument("--retry-failed", action="store_true", help="with --resume, also redo the inputs whose "
                        "status is not ok")
    parser.add_argument("--method", default="gradfree-adam", help="see `decinv methods` (default: gradfree-adam)")
    parser.add_argument("--steps", type=int, default=None, help="iterations (default 100; 0 for the encoder)")
    parser.add_argument("--option", "-o", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                        help="a method option, e.g. -o lr=0.02 -o schedule=none -o safeguard=false "
                        "-o betas=0.9,0.99 (repeatable)")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help="precision (fp16/bf16 are slow on CPU)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default; under torchrun: "
                        "cuda:LOCAL_RANK)")
    parser.add_argument("--size", type=int, help="resize the shorter side to SIZE and centre-crop a square")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's; "
                        "torchrun sets 1)")
    parser.add_argument("--quiet", action="store_true", help="no model line, no progress bar")


def cmd_methods(args) -> int:
    import decinv

    for name in decinv.METHODS:
        doc = " ".join((decinv.METHODS[name].__doc__ or "").strip().split("\n\n")[0].split())  # first paragraph
        print(f"{name:14s} {doc}\n{'':14s} options: {decinv.method_options(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decinv", description="Gradient-free decoder inversion in latent "
                                     "diffusion models (Hong et al., NeurIPS 2024): find z with D(z) ~ x.")
    sub = parser.add_subparsers(dest="command", required=True)
    inv = sub.add_parser("invert", help="invert the decoder at image files, folders, patterns or lists: a "
                         "batched, resumable job (torchrun for several processes)",
                         description="Find latents z with D(z) ~ image for every input, in batches; each finished "
                         "batch is saved at once (safetensors shards and JSONL manifest rows with residual, PSNR and "
                         "time per image). A file that cannot be inverted is a manifest row with its error; the exit "
                         "status is the number of such inputs (capped at 100). Under torchrun --nproc_per_node N the "
                         "inputs are shared among N processes. See decinv.applications.jobs.")
    _job_arguments(inv)
    inv.add_argument("--model", default="tiny", help="'tiny' (bundled v2, 128x128; also 'tiny-v2') or 'tiny-v1' "
                     "(64x64), sd21, sd15, sd14, a hub id or a local save_pretrained folder (default: tiny)")
    inv.set_defaults(run=cmd_invert)
    wm = sub.add_parser("watermark", help="read tree-ring keys from images: decoder inversion, diffusion "
                        "inversion and the nearest of the three keys per image, as a job",
                        description="The paper's tree-ring application (Sec. 5.1) over a folder: per image the "
                        "decoder inversion, the diffusion inversion of its latent, the detected key and its "
                        "distance, in the manifest; a table per key at the end. Same job options as invert.")
    _job_arguments(wm)
    wm.add_argument("--profile", default="tiny", help="tiny / tiny-v1 (bundled LDM, DDIM inversion), sd21 or sd15 "
                    "(the cached pipeline; GPU) (default: tiny)")
    wm.add_argument("--source", default=None, help="sd21/sd15: a save_pretrained folder of the pipeline instead of "
                    "the hub cache")
    wm.add_argument("--diffusion-steps", type=int, default=None, help="diffusion-inversion steps (default: 50 for "
                    "the tiny LDM, the protocol's for sd21/sd15)")
    wm.add_argument("--prompt", default="", help="sd21/sd15: the prompt the inversion assumes (default: empty, "
                    "an unknown prompt)")
    wm.add_argument("--radius", type=int, default=6, help="key disc radius in Fourier coefficients (default 6)")
    wm.add_argument("--channel", type=int, default=0, help="latent channel holding the key (default 0)")
    wm.add_argument("--key-scale", type=float, default=None, help="multiplies the ring values (default: latent "
                    "side / 64)")
    wm.add_argument("--centred-on-dc", action="store_true", help="the point-symmetric disc centred on DC instead "
                    "of the official off-DC one")
    wm.set_defaults(run=cmd_watermark)
    methods = sub.add_parser("methods", help="list the inversion methods and their options")
    methods.set_defaults(run=cmd_methods)
    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, RuntimeError) as error:
        print(f"error: {error}{_command_line_fix(error)}", file=sys.stderr)
        return 2


def _command_line_fix(error: Exception) -> str:
    """The command-line spelling of a fix the library's message gives in Python (a missing model names
    ``load_model('tiny')``); "" for other errors. The library is only imported once a command runs, so its
    error class is looked up where it was loaded."""
    models = sys.modules.get("decinv.core.models")
    if models is None or not isinstance(error, models.ModelNotAvailableError):
        return ""
    return ("\nOn the command line: --model tiny (invert) or --profile tiny (watermark) runs the bundled model; "
            "a local save_pretrained folder goes to --model (invert) or --source (watermark).")


if __name__ == "__main__":
    sys.exit(main())
