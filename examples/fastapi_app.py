"""A FastAPI app whose async SQLAlchemy engine follows credflip rotations.

* The engine is made at import (the one store read that blocks), with the
  driver of your choice: psycopg (default) or asyncpg; aiomysql for MySQL.
* Each new connection takes the active color's credentials; the store is
  read again in a worker thread once the TTL expired, never on the loop.
* Pooled connections of the old color are replaced at checkout, returned ones
  are closed, idle ones are closed on the loop: one TTL after a switch the
  app holds no session of the old user, without a redeploy.

    pip install 'credflip[asyncio]' fastapi uvicorn
    DB_ENV=prod CREDFLIP_STORE=ssm:// uvicorn fastapi_app:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy
from fastapi import FastAPI

from credflip.sqlalchemy import create_async_engine

DB_ENV = os.environ.get("DB_ENV", "prod")
engine = create_async_engine(
    DB_ENV, driver=os.environ.get("DB_DRIVER", "psycopg"), pool_size=5, max_overflow=5
)


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/order")
async def order(worker: int) -> dict[str, object]:
    """Write an order and say which login user (color) served it."""
    async with engine.begin() as conn:
        await conn.execute(
            sqlalchemy.text("INSERT INTO orders (worker) VALUES (:w)"), {"w": worker}
        )
        user = (await conn.execute(sqlalchemy.text("SELECT session_user"))).scalar_one()
    return {"writer": user}
