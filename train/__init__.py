"""Sharded training and evaluation of hrnet-jax models (``hrnet-train``, ``hrnet-eval``).

Subpackages:

* ``recipes/``: the training recipes (``ml_collections`` configs; ``base`` documents every
  field), found by name (``--config digits``).
* ``data/``: the input; ``create_input`` picks the source. ``data.base``: the batch format, the
  ``Input`` protocol and shard arithmetic; ``data.arrays``: in-memory arrays and the embedded
  digits; ``data.tfdata``: tf.data over TFDS datasets and image folders.

Modules:

* ``mesh``: the device mesh and the shardings of batches and state.
* ``train_state``: model + optimizer state as one pytree; learning-rate schedules.
* ``step``: the jitted train and eval steps.
* ``evaluate``: exact top-1 / top-5 over a split.
* ``checkpointing``: the training checkpoints (Orbax manager; unreadable ones moved aside).
* ``workdir``: the run's lock and its atomic small files.
* ``distributed``: multi-host start-up.
* ``observe``: progress bar, TensorBoard, ``metrics.jsonl``.
* ``trainer``: the loop; writes the release folders ``WORKDIR/best`` (the best step) and
  ``WORKDIR/model`` (the last) at the end.
* ``main`` / ``eval_main``: the ``hrnet-train`` / ``hrnet-eval`` command lines.
* ``cli``: what both share: flag parsing, recipe names, ``--help``.

See docs/training.md.
"""
