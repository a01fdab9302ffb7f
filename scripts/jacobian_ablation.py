"""Which part of the autoencoder makes E(D(.)) non-monotone at z*? Freeze one mechanism at z* and measure again.

    python scripts/jacobian_ablation.py --out decinv/tiny/weights/v2/jacobian-ablation.json \
        constant-1e-3@4000=tiny-training/v2-constB/vae-step4000.pt  v2=decinv/tiny/weights/v2/vae

For each NAME=PATH (as in ``scripts/jacobian_probes.py``), on the 8 held-out crops of the regime probe (z* = E(x)),
the leftmost Rayleigh quotient of J = d E(D(z))/dz per crop (`decinv.jacobian_extremes`; < 0 means z* repels
the forward step along some direction), under each variant below. A variant replaces a mechanism by its value at
the base point z*, recorded in one pass E(D(z*)), so only the rest of the network responds to a perturbation:

- ``live``: the network as it is.
- ``groupnorm``: every GroupNorm uses the mean and variance it had at z* (the statistics no longer move).
- ``attention``: every attention layer uses its softmax map from z*.
- ``silu_gate``: every SiLU(x) = x sigmoid(x) uses its gate sigmoid(x*) from z*, so its slope is sigmoid(x*) in
  (0, 1) instead of SiLU'(x*) = sigmoid(x*) (1 + x* (1 - sigmoid(x*))), which exceeds 1 for x* > 0 and is
  negative for x* < -1.28.
- ``silu_clipped``: every SiLU replaced by its linearisation at x* with negative slopes set to 0.
- ``silu_linear``: its exact linearisation at x* (a check: agrees with ``live`` up to finite-difference error).

Which variant removes the negative values says which mechanism creates them. Cost per checkpoint: 6 x 123 passes
of E(D(.)) on 8 crops. Writes ``--out`` as results come (an existing file keeps its other entries).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import torch

VARIANTS = ("live", "groupnorm", "attention", "silu_gate", "silu_clipped", "silu_linear")


class Freezer:
    """Patches a diffusers autoencoder in place so that GroupNorm statistics, attention maps and SiLU activations
    can be recorded at a base point and then held (see the module docstring). ``mode(name)`` sets what each
    mechanism does; calls are matched by their order within one forward pass (`reset` before each pass)."""

    def __init__(self, vae):
        from diffusers.models.attention_processor import Attention, AttnProcessor

        self.frozen: set[str] = set()
        self.recording = False
        self.cache: dict = {}
        self.count = 0
        for _, module in vae.named_modules():
            if isinstance(module, Attention):
                module.set_processor(AttnProcessor())  # the processor that calls get_attention_scores
                module.get_attention_scores = types.MethodType(self._attention(module.get_attention_scores), module)
            elif isinstance(module, torch.nn.GroupNorm):
                module.forward = self._groupnorm(module)
            elif isinstance(module, torch.nn.SiLU):
                module.forward = self._silu

    def _key(self, kind: str):
        self.count += 1
        return kind, self.count

    def _attention(self, original):
        def scores(module, query, key, mask=None):
            k = self._key("attention")
            if "attention" in self.frozen and not self.recording:
                return self.cache[k]
            probs = original(query, key, mask)
            if self.recording:
                self.cache[k] = probs
            return probs
        return scores

    def _groupnorm(self, module):
        def forward(x):
            k = self._key("groupnorm")
            g = x.reshape(x.shape[0], module.num_groups, -1)
            if "groupnorm" in self.frozen and not self.recording:
                mean, var = self.cache[k]
            else:
                mean, var = g.mean(-1, keepdim=True), g.var(-1, unbiased=False, keepdim=True)
                if self.recording:
                    self.cache[k] = (mean, var)
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = ((g - mean) / torch.sqrt(var + module.eps)).reshape_as(x)
            return y * module.weight.view(shape) + module.bias.view(shape)
        return forward

    def _silu(self, x):
        k = self._key("silu")
        mode = next((m for m in ("silu_gate", "silu_clipped", "silu_linear") if m in self.frozen), None)
        if mode is None or self.recording:
            gate = torch.sigmoid(x)
            if self.recording:
                self.cache[k] = (x, gate)
            return x * gate
        x0, gate = self.cache[k]
        if mode == "silu_gate":
            return x * gate
        slope = gate * (1 + x0 * (1 - gate))
        if mode == "silu_clipped":
            slope = slope.clamp_min(0)
        return x0 * gate + slope * (x - x0)

    def reset(self):
        self.count = 0

    @contextmanager
    def variant(self, name: str, base_pass):
        """Within the block, ``name``'s mechanism is held at the values ``base_pass()`` records."""
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; choose one of {VARIANTS}.")
        self.frozen = set() if name == "live" else {name}
        self.recording, self.cache = True, {}
        self.reset()
        base_pass()
        self.recording = False
        try:
            yield
        finally:
            self.frozen, self.cache = set(), {}


def ablate(vae, size: int = 128, n: int = 8, variants=VARIANTS, iters: int = 60) -> dict:
    """Leftmost Jacobian quotient per crop (list of n floats) under each variant, plus the encoder's NMSE."""
    import decinv
    from decinv.core.models import LatentModel
    from decinv import pictures as data

    freezer = Freezer(vae)
    x = data.heldout_crops(n, seed=77, size=size)
    with torch.no_grad():
        freezer.reset()
        vae.register_to_config(scaling_factor=float(1.0 / vae.encode(x).latent_dist.mode().std()))
        model = LatentModel(vae)
        freezer.reset()
        z = model.encode(x)

        def ed(q):
            freezer.reset()
            return model.encode(model.decode(q), check=False)

        out = {}
        for name in variants:
            with freezer.variant(name, lambda: ed(z)):
                out[name] = decinv.jacobian_extremes(ed, z, iters=iters)[1].tolist()
    return out


def main(argv: list[str] | None = None) -> None:
    from decinv.core.measure import git_info

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from jacobian_probes import load_vae  # same NAME=PATH convention

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="NAME=PATH")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recipe", default=None, help="architecture of .pt checkpoints that do not record it "
                        "(decinv.tiny.train.RECIPES; v2-silu for v2 runs before 2026-11-30)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs = [m.split("=", 1) for m in args.models]
    for pair in pairs:
        if len(pair) != 2 or not Path(pair[1]).exists():
            parser.error(f"expected NAME=PATH with an existing PATH, got {'='.join(pair)!r}")
    doc = json.loads(args.out.read_text()) if args.out.exists() else {}
    doc.setdefault("measurements", {})
    for name, path in pairs:
        vae = load_vae(Path(path), args.recipe).eval()
        result = ablate(vae, size=int(vae.config.sample_size))
        result["source"] = path
        doc["measurements"][name] = result
        doc.update(how=("leftmost Rayleigh quotient of d E(D(z))/dz per held-out crop (8, seed 77, z* = E(x)), "
                        "decinv.jacobian_extremes (60 power iterations, finite-difference step 0.01), with one "
                        "mechanism held at its value at z*: " + ", ".join(VARIANTS)),
                   device="cpu", threads=args.threads, cpu=platform.processor() or platform.machine(),
                   date=datetime.date.today().isoformat(), **git_info())
        args.out.write_text(json.dumps(doc, indent=1))
        print(name, {v: f"{sum(q < 0 for q in result[v])}/{len(result[v])} negative" for v in VARIANTS})


if __name__ == "__main__":
    main()
