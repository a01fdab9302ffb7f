"""The method and what it runs on: autoencoders as `LatentModel`s (models, autoencoders, taesd), the solvers
and the operator T, metrics, measurement, input checks (validation) and the caller's torch state (ambient).
Imports nothing else from decinv."""
