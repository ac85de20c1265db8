"""Alembic migrations of the journal (run programmatically by ``Journal.open``)."""
