"""Alembic environment, async. Two ways in:

- the server (services/storage/database.py) hands over an open connection in
  `config.attributes["connection"]` and migrates inside its own transaction;
- `alembic upgrade head` on the command line connects to DATABASE_URL (from the environment or
  .env, like the server) unless alembic.ini sets sqlalchemy.url.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from services.storage.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True,  # SQLite alters tables by copying them
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from services.settings import Settings

    return Settings().database_url


async def _run_online() -> None:
    from services.storage.database import Database

    database = Database(_url())  # the same engine set-up as the server (SQLite pragmas, folder)
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(_configure)
    finally:
        await database.close()


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"}, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _configure(connection)
elif context.is_offline_mode():
    run_offline()
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    asyncio.run(_run_online())
