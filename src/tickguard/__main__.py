"""``python -m tickguard`` is the ``tickguard`` command."""

from tickguard.cli import app

app()
