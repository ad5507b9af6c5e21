"""Sharded training and evaluation of hrnet-jax models (``hrnet-train``, ``hrnet-eval``).

Modules, one job each: ``configs/`` (ml_collections recipes), ``input_pipeline`` (the input
interface and the in-memory digits input), ``digits`` (the embedded dataset), ``tf_input``
(tf.data over TFDS and image folders), ``mesh`` (device mesh and shardings), ``train_state``
(model + optimizer state as one pytree, schedules), ``step`` (jitted train and eval steps),
``evaluate`` (exact top-1/top-5 over a split), ``checkpointing`` (Orbax manager; unreadable
checkpoints moved aside), ``workdir`` (the run's lock, atomic small files), ``distributed`` (multi-host start-up), ``observe`` (progress bar, TensorBoard, metrics.jsonl),
``trainer`` (the loop), ``main`` / ``eval_main`` / ``cli`` (the command lines).
See docs/training.md.
"""
