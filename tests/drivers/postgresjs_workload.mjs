// postgres.js through pgbroker: prepared statements by name (its default), several clients,
// sessions longer than the borrow timeout.
import postgres from "postgres";

const CLIENTS = Number(process.env.CLIENTS || 6);
const ROUNDS = Number(process.env.ROUNDS || 25);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function client(n) {
  const sql = postgres({
    host: process.env.PGB_HOST, port: Number(process.env.PGB_PORT),
    user: "app", pass: "app", database: "app", max: 1, prepare: true,
  });
  let done = 0;
  for (let i = 0; i < ROUNDS; i++) {
    const [row] = await sql`SELECT ${n * 1000 + i}::int4 * 3 AS x, ${"p" + n}::text AS y`;
    if (row.x !== 3 * (n * 1000 + i) || row.y !== "p" + n) throw new Error(`wrong row ${JSON.stringify(row)}`);
    await sql.begin(async (tx) => {
      await tx`INSERT INTO driver_log (driver, n) VALUES (${"postgres.js"}, ${i})`;
    });
    done++;
    await sleep(60);
  }
  await sql.end();
  return done;
}

Promise.all([...Array(CLIENTS).keys()].map(client)).then(
  (r) => console.log(`ok ${r.reduce((a, b) => a + b, 0)}`),
  (e) => { console.error(e); process.exit(1); },
);
