//! A serverless function handler that reaches Postgres through pgbroker.
//!
//! The container opens one connection outside the handler (kept while the container is warm,
//! frozen between invocations) and runs one short transaction per invocation. Through
//! pgbroker that connection costs Postgres nothing while it is idle or frozen: a server
//! connection is borrowed only for the transaction.
//!
//! Run pgbroker (`cargo run --release -- demo` in another terminal), then:
//! `cargo run --release --example handler -- "host=127.0.0.1 port=6432 user=app password=app dbname=app application_name=orders"`

use tokio_postgres::{Client, NoTls};

/// What one invocation receives.
struct Event {
    order_id: i64,
}

/// The handler: one short transaction per invocation. `batch_execute` and `query_typed` use
/// no named prepared statements, so the session is never pinned to a server connection.
async fn handle(client: &Client, event: &Event) -> Result<String, tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    let rows = client
        .query_typed(
            "INSERT INTO orders (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET seen = orders.seen + 1 RETURNING seen",
            &[(&event.order_id, tokio_postgres::types::Type::INT8)],
        )
        .await?;
    let seen: i32 = rows[0].get(0);
    client.batch_execute("COMMIT").await?;
    Ok(format!("order {} seen {seen} time(s)", event.order_id))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| {
        "host=127.0.0.1 port=6432 user=app password=app dbname=app application_name=orders".into()
    });
    // Container start: connect once, outside the handler.
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection ended: {e}");
        }
    });
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, seen int NOT NULL DEFAULT 1)")
        .await?;
    // A few invocations of the warm container.
    for order_id in [1, 2, 1] {
        println!("{}", handle(&client, &Event { order_id }).await?);
    }
    Ok(())
}
