"""`mlx-router models list|download|link|tune`: the model tools, also run as files from helper_tools/.

Nothing here imports mlx at import time; `tune` measures a model through `mlx_router.core.measure`.
"""
