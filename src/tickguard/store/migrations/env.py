"""Alembic environment: always run with a connection handed in by ``tickguard.store.journal``."""

from alembic import context

from tickguard.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
