"""``python -m distill`` / ``torchrun --nproc_per_node=N -m distill run ...``."""

from .cli import app

app()
