"""decinv: gradient-free decoder inversion in latent diffusion models (Hong et al., NeurIPS 2024), reproduced.

    >>> import decinv
    >>> model = decinv.load_model("tiny")                 # bundled miniature LDM autoencoder, offline
    >>> result = decinv.invert(x, model, "gradfree-adam", steps=100)
    >>> result.z, result.trace.residual, result.seconds, result.peak_memory_bytes
    >>> T = decinv.operator(model, x)                     # T(z) = E(D(z)) - E(x), the paper's Eq. 6
"""

from decinv.core.autoencoders import UnsupportedAutoencoderError
from decinv.core.metrics import cocoercivity_ratio, jacobian_extremes, mean_ci, nmse, nmse_db, psnr
from decinv.core.models import LatentModel, ModelNotAvailableError, NonFiniteLatentError, PRESETS, load_model, load_pipeline
from decinv.core.solvers import METHODS, InversionResult, Operator, StepInfo, Trace, invert, method_options, operator

__version__ = "0.1.0"
__all__ = ["invert", "operator", "Operator", "load_model", "load_pipeline", "LatentModel", "InversionResult", "Trace", "StepInfo",
           "METHODS", "method_options", "PRESETS", "ModelNotAvailableError", "NonFiniteLatentError",
           "UnsupportedAutoencoderError", "nmse", "nmse_db", "psnr",
           "cocoercivity_ratio", "jacobian_extremes", "mean_ci"]
