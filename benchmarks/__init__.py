"""hrnet-jax vs timm benchmarks: one driver (``python -m benchmarks.run``), one subprocess per
measured configuration, results as timm-style CSV rows and a Markdown table
(``docs/benchmarks.md``).

Modules: ``run`` (driver), ``jax_worker`` / ``torch_worker`` (one timed configuration each),
``parity`` (the gate run before any timing; also writes the shared weights), ``converter`` (time and
peak RSS of ``convert_official_weights``), ``pointwise`` (the 1x1-as-dot experiment), ``profile``
(per-op-category time), ``report`` (CSV -> Markdown), ``common`` (timing, schema, system info).
"""
