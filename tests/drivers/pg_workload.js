// node-postgres through pgbroker: named queries (prepared once per connection by name),
// several clients, sessions longer than the borrow timeout.
const { Client } = require("pg");

const CLIENTS = Number(process.env.CLIENTS || 6);
const ROUNDS = Number(process.env.ROUNDS || 25);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function client(n) {
  const c = new Client({
    host: process.env.PGB_HOST, port: Number(process.env.PGB_PORT),
    user: "app", password: "app", database: "app",
  });
  await c.connect();
  let done = 0;
  for (let i = 0; i < ROUNDS; i++) {
    const r = await c.query({
      name: "sum-and-label",
      text: "SELECT $1::int4 + 1 AS a, $2::text || '!' AS b, $3::bool AS c",
      values: [n * 1000 + i, `n${n}`, i % 2 === 0],
    });
    const row = r.rows[0];
    if (row.a !== n * 1000 + i + 1 || row.b !== `n${n}!` || row.c !== (i % 2 === 0)) {
      throw new Error(`wrong row ${JSON.stringify(row)}`);
    }
    await c.query("BEGIN");
    await c.query({ name: "log", text: "INSERT INTO driver_log (driver, n) VALUES ($1, $2)", values: ["pg", i] });
    await c.query("COMMIT");
    done++;
    await sleep(60);
  }
  await c.end();
  return done;
}

Promise.all([...Array(CLIENTS).keys()].map(client)).then(
  (r) => console.log(`ok ${r.reduce((a, b) => a + b, 0)}`),
  (e) => { console.error(e); process.exit(1); },
);
