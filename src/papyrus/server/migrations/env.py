"""Alembic environment: runs migrations over the synchronous psycopg driver."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from papyrus.server.db import Base
from papyrus.server.models import import_all_models

import_all_models()
config = context.config
url = config.get_main_option("sqlalchemy.url")


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    if url is None:
        raise RuntimeError("sqlalchemy.url is not set in the Alembic config")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
