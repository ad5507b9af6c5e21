"""Sharded training and evaluation of hrnet-jax models (``hrnet-train``, ``hrnet-eval``).

Modules, one job each: ``configs/`` (ml_collections recipes), ``input_pipeline`` (host-local
batches from TFDS, an image folder or the embedded digits set), ``mesh`` (device mesh and
shardings), ``train_state`` (model + optimizer state as one pytree), ``step`` (jitted train and
eval steps), ``evaluate`` (exact top-1/top-5 over a split), ``checkpointing`` (Orbax manager with
fallback), ``distributed`` (multi-host start-up), ``trainer`` (the loop), ``main`` / ``eval_main``
(the CLIs).
"""
