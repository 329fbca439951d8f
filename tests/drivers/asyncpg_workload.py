"""asyncpg through pgbroker: every query is a named prepared statement (Parse, Describe,
Flush, then Bind/Execute/Sync), several clients, sessions longer than the borrow timeout."""
import asyncio
import datetime
import os

import asyncpg

CLIENTS = int(os.environ.get("CLIENTS", "6"))
ROUNDS = int(os.environ.get("ROUNDS", "25"))


async def client(n: int) -> int:
    conn = await asyncpg.connect(
        host=os.environ["PGB_HOST"], port=int(os.environ["PGB_PORT"]),
        user="app", password="app", database="app",
    )
    stmt = await conn.prepare("SELECT $1::int4 * 2 AS twice, $2::text AS label, $3::timestamptz AS at")
    at = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    done = 0
    for i in range(ROUNDS):
        row = await stmt.fetchrow(n * 1000 + i, f"a{n}", at)
        assert (row["twice"], row["label"], row["at"]) == (2 * (n * 1000 + i), f"a{n}", at), row
        value = await conn.fetchval("SELECT $1::numeric + 0.5", i)
        assert str(value) == f"{i}.5", value
        async with conn.transaction():
            await conn.execute("INSERT INTO driver_log (driver, n) VALUES ($1, $2)", "asyncpg", i)
        done += 1
        await asyncio.sleep(0.06)
    await conn.close()
    return done


async def main() -> None:
    results = await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    print(f"ok {sum(results)}")


asyncio.run(main())
