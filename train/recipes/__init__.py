"""Training recipes as ``ml_collections`` config files; each defines ``get_config()``.

``base.py`` documents every field; the others override it. Pass a file to ``hrnet-train
--config train/recipes/NAME.py`` and change any field with ``--config.FIELD=value``.
"""
