"""Console scripts, thin modules over library functions: ``policy`` (the error policy and signal
handling every command shares), ``predict`` (``hrnet-predict``), ``export`` (``hrnet-export``).
``convert_official_weights`` is ``hrnet_jax.convert.cli``; ``hrnet-train`` / ``hrnet-eval`` are
``hrnet_jax.train.main`` / ``eval_main``."""
