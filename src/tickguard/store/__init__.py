"""The durable journal: SQLAlchemy Core on SQLite (default) or PostgreSQL, migrated with Alembic."""
