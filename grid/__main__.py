"""``python -m grid`` is ``ssl-st``."""

from .cli import app

app(prog_name="ssl-st")
