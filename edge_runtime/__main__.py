"""``python -m edge_runtime``: the ``agiqa-score`` command."""

from .cli import app

app()
