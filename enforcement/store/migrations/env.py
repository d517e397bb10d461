"""Alembic environment: the store hands over its open connection, so the
same code migrates SQLite files and PostgreSQL databases."""
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
