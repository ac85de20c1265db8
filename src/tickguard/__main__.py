"""``python -m tickguard`` is the ``tickguard`` command."""

from tickguard.interfaces.cli import app

app()
