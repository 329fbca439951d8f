"""psycopg 3 through pgbroker: server-side prepared statements from the first execution
(prepare_threshold=0), several clients, sessions longer than the borrow timeout."""
import asyncio
import datetime
import os
import sys

import psycopg

CLIENTS = int(os.environ.get("CLIENTS", "6"))
ROUNDS = int(os.environ.get("ROUNDS", "25"))
DSN = os.environ["PGB_DSN"]


async def client(n: int) -> int:
    conn = await psycopg.AsyncConnection.connect(DSN, prepare_threshold=0, autocommit=True)
    done = 0
    day = datetime.date(2024, 2, 29)
    for i in range(ROUNDS):
        cur = await conn.execute(
            "SELECT %s::int4 + 1, %s::text || '!', %s::float8 * 2, NOT %s::bool, %s::date + 1",
            (n * 1000 + i, f"c{n}", 1.25, True, day),
        )
        row = await cur.fetchone()
        assert row == (n * 1000 + i + 1, f"c{n}!", 2.5, False, datetime.date(2024, 3, 1)), row
        async with conn.transaction():
            await conn.execute("INSERT INTO driver_log (driver, n) VALUES (%s, %s)", ("psycopg", i))
            cur = await conn.execute("SELECT count(*) FROM driver_log WHERE driver = %s", ("psycopg",))
            assert (await cur.fetchone())[0] >= 1
        done += 1
        await asyncio.sleep(0.06)
    await conn.close()
    return done


async def main() -> None:
    results = await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    print(f"ok {sum(results)}")


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
