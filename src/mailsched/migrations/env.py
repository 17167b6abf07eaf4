"""Alembic environment: runs on the connection that :mod:`mailsched.store.migrate` hands in."""

from __future__ import annotations

from alembic import context

from mailsched.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `mailsched db upgrade`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
