"""Deep linear JEPA vs MAE: the learning-order analysis of Littwin et al. 2024 (methods.md §7).

One concept per file:

- ``features``: the two-view linear data (per-feature λ_i, ρ_i; population covariances and
  finite samples with seeded mini-batches).
- ``deep_linear``: the deep linear encoder + linear predictor/decoder, their closed-form
  objectives (JEPA with a stop-gradient or EMA target, MAE) and exact gradients, one GD step.
- ``simulate``: gradient descent with a fixed learning rate for every (objective, depth) at
  once, recording, checkpoints and resume.
- ``measure``: critical times, final values, the linear probe onto the clean latent z (R²).
- ``theory``: the gradient-flow predictions (fixed points, critical times by quadrature).
- ``figure``: the PNG of weights over time, JEPA beside MAE, one panel per depth.

The recipe and the CLI hooks live in ``jepactl.domains.linear.method``.
"""
