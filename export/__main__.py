"""``python -m export``: the ``agiqa-export`` command."""

from .cli import app

app()
