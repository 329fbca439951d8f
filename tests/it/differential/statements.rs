//! Differential scenarios of issue 12 about statements (see [`super`]): the unnamed statement
//! across Syncs (part 1), SQL PREPARE / EXECUTE / DEALLOCATE (part 3), DEALLOCATE ALL and
//! DISCARD ALL, failing ones included, and the other differences of part 4.

use super::{check, q, step, Step, Until};
use crate::raw::{bind, close_statement, describe_statement, execute, message, parse, query, sync};

/// Describe of the unnamed portal.
fn describe_portal() -> Vec<u8> {
    message(b'D', b"P\0")
}

/// lib/pq outside a transaction: Parse(""), Describe(S ""), Sync; then Bind(""), Execute,
/// Sync — the unnamed statement lives until the next unnamed Parse or simple Query.
#[tokio::test]
#[ignore = "issue 12 part 1: in transaction mode the Bind(\"\") after the Sync gets 26000 (unnamed prepared statement does not exist) where Postgres runs the statement"]
async fn unnamed_statement_across_syncs() {
    let steps = [
        step(
            0,
            vec![
                parse("", "SELECT $1::int", &[23]),
                describe_statement(""),
                sync(),
            ],
        ),
        step(0, vec![bind("", &["7"]), execute(), sync()]),
        step(
            0,
            vec![bind("", &["8"]), describe_portal(), execute(), sync()],
        ),
    ];
    check(250, 1, &steps).await;
}

/// libpq's PQprepare(conn, "", …) then PQexecPrepared, with a named statement between
/// (a named Parse leaves the unnamed statement alone).
#[tokio::test]
#[ignore = "issue 12 part 1: in transaction mode the Bind(\"\") after the Sync gets 26000 (unnamed prepared statement does not exist) where Postgres runs the statement"]
async fn unnamed_statement_survives_a_named_parse() {
    let steps = [
        step(0, vec![parse("", "SELECT $1::int + 1", &[23]), sync()]),
        step(0, vec![parse("a", "SELECT 2", &[]), sync()]),
        step(
            0,
            vec![bind("", &["5"]), describe_portal(), execute(), sync()],
        ),
    ];
    check(250, 1, &steps).await;
}

/// A simple Query, or another unnamed Parse, ends the unnamed statement.
#[tokio::test]
async fn what_ends_the_unnamed_statement() {
    let steps = [
        step(0, vec![parse("", "SELECT 1", &[]), sync()]),
        q(0, "SELECT 2"),
        step(0, vec![bind("", &[]), execute(), sync()]),
        step(
            0,
            vec![parse("", "SELECT 3", &[]), bind("", &[]), execute(), sync()],
        ),
        step(0, vec![parse("", "SELEC 4", &[]), sync()]),
        step(0, vec![bind("", &[]), execute(), sync()]),
    ];
    check(250, 1, &steps).await;
}

/// Named statements used from many transactions, so from whichever server serves each;
/// another client uses the same names for other statements.
#[tokio::test]
async fn named_statements_on_any_server() {
    let mut steps = vec![
        step(0, vec![parse("a", "SELECT $1::int", &[23]), sync()]),
        step(1, vec![parse("a", "SELECT 'other'", &[]), sync()]),
    ];
    for i in ["1", "2", "3"] {
        steps.push(step(0, vec![bind("a", &[i]), execute(), sync()]));
        steps.push(step(1, vec![bind("a", &[]), execute(), sync()]));
    }
    steps.extend([
        step(
            0,
            vec![describe_statement("a"), close_statement("a"), sync()],
        ),
        step(0, vec![bind("a", &["4"]), execute(), sync()]),
        step(
            0,
            vec![
                parse("a", "SELECT 5", &[]),
                bind("a", &[]),
                execute(),
                sync(),
            ],
        ),
        step(1, vec![bind("a", &[]), execute(), sync()]),
    ]);
    check(1, 2, &steps).await;
}

/// SQL PREPARE, EXECUTE and DEALLOCATE (PREPARE is not undone by a rollback).
#[tokio::test]
async fn sql_prepare_execute_deallocate() {
    let steps = [
        q(0, "PREPARE p(int) AS SELECT $1 * 2"),
        q(0, "EXECUTE p(21)"),
        q(0, "SELECT 1"),
        q(0, "EXECUTE p(1)"),
        q(0, "DEALLOCATE p"),
        q(0, "EXECUTE p(1)"),
        q(0, "BEGIN"),
        q(0, "PREPARE p AS SELECT 'again'"),
        q(0, "ROLLBACK"),
        q(0, "EXECUTE p"),
        q(0, "PREPARE p AS SELECT 'twice'"),
        q(0, "DEALLOCATE PREPARE ALL"),
        q(0, "EXECUTE p"),
    ];
    check(250, 1, &steps).await;
}

/// SQL PREPARE of one client is not another's; the first keeps it across transactions.
#[tokio::test]
#[ignore = "issue 12 part 3: PREPARE pins, so with one server the other client gets 53300 where Postgres answers it"]
async fn sql_prepared_statements_belong_to_their_client() {
    let steps = [
        q(0, "PREPARE p AS SELECT 'mine'"),
        q(1, "EXECUTE p"),
        q(1, "PREPARE p AS SELECT 'yours'"),
        q(0, "EXECUTE p"),
        q(1, "EXECUTE p"),
    ];
    check(250, 2, &steps).await;
}

/// Protocol-level and SQL prepared statements share one namespace in Postgres.
#[tokio::test]
#[ignore = "issue 12 part 3: in transaction mode EXECUTE of a protocol-level statement gets 26000, and a Parse or PREPARE of a name taken by the other kind succeeds, where Postgres runs it and says 42P05"]
async fn sql_and_protocol_statements_share_names() {
    let steps = [
        step(0, vec![parse("a", "SELECT 10", &[]), sync()]),
        q(0, "EXECUTE a"),
        q(0, "PREPARE b AS SELECT 20"),
        step(0, vec![bind("b", &[]), execute(), sync()]),
        step(0, vec![parse("b", "SELECT 21", &[]), sync()]),
        q(0, "PREPARE a AS SELECT 11"),
        q(0, "DEALLOCATE b"),
        step(0, vec![bind("b", &[]), execute(), sync()]),
    ];
    check(250, 1, &steps).await;
}

/// DEALLOCATE ALL drops every name; the names can be prepared again.
#[tokio::test]
async fn deallocate_all_drops_every_name() {
    let steps = [
        step(
            0,
            vec![
                parse("a", "SELECT 1", &[]),
                parse("b", "SELECT 2", &[]),
                sync(),
            ],
        ),
        q(0, "DEALLOCATE ALL"),
        step(0, vec![bind("a", &[]), execute(), sync()]),
        step(
            0,
            vec![
                parse("a", "SELECT 3", &[]),
                bind("a", &[]),
                execute(),
                sync(),
            ],
        ),
        step(0, vec![bind("b", &[]), execute(), sync()]),
    ];
    check(250, 1, &steps).await;
}

/// DISCARD ALL drops the names and the settings.
#[tokio::test]
async fn discard_all_drops_names_and_settings() {
    let steps = [
        step(0, vec![parse("a", "SELECT 1", &[]), sync()]),
        q(0, "SET TimeZone = 'UTC'"),
        q(0, "SET search_path = pg_catalog"),
        q(0, "DISCARD ALL"),
        step(0, vec![bind("a", &[]), execute(), sync()]),
        q(0, "SHOW TimeZone"),
        q(0, "SHOW search_path"),
    ];
    check(250, 1, &steps).await;
}

/// A DEALLOCATE ALL or DISCARD ALL refused in an aborted block (25P02) drops nothing.
#[tokio::test]
async fn failed_deallocate_all_and_discard_all_keep_names() {
    let mut steps = vec![step(0, vec![parse("a", "SELECT 1", &[]), sync()])];
    for sql in ["DEALLOCATE ALL", "DISCARD ALL"] {
        steps.extend([
            q(0, "BEGIN"),
            q(0, "SELECT 1/0"),
            q(0, sql),
            q(0, "ROLLBACK"),
        ]);
        steps.push(step(0, vec![bind("a", &[]), execute(), sync()]));
    }
    check(250, 1, &steps).await;
}

/// A DEALLOCATE ALL or DISCARD ALL that never runs (after an error in its multi-statement
/// Query or in its extended batch; DISCARD ALL in an implicit block) drops nothing.
#[tokio::test]
#[ignore = "issue 12 part 4: in transaction mode a DEALLOCATE ALL / DISCARD ALL that never ran clears the names (the next Bind gets 26000) where Postgres keeps them"]
async fn skipped_deallocate_all_and_discard_all_keep_names() {
    let use_a = || step(0, vec![bind("a", &[]), execute(), sync()]);
    let unnamed = |sql| vec![parse("", sql, &[]), bind("", &[]), execute()];
    let batch = [
        unnamed("SELECT 1/0"),
        unnamed("DEALLOCATE ALL"),
        vec![sync()],
    ];
    let steps = [
        step(0, vec![parse("a", "SELECT 1", &[]), sync()]),
        q(0, "SELECT 1/0; DEALLOCATE ALL"),
        use_a(),
        q(0, "SELECT 1; DISCARD ALL"),
        use_a(),
        step(0, batch.concat()),
        use_a(),
    ];
    check(250, 1, &steps).await;
}

/// DEALLOCATE of a protocol-level name through the extended protocol.
#[tokio::test]
#[ignore = "issue 12 part 4: in transaction mode DEALLOCATE a through Parse/Bind/Execute reaches the server untranslated and gets 26000 where Postgres deallocates a"]
async fn deallocate_through_the_extended_protocol() {
    let steps = [
        step(0, vec![parse("a", "SELECT 1", &[]), sync()]),
        step(
            0,
            vec![
                parse("", "DEALLOCATE a", &[]),
                bind("", &[]),
                execute(),
                sync(),
            ],
        ),
        step(0, vec![bind("a", &[]), execute(), sync()]),
    ];
    check(250, 1, &steps).await;
}

/// DEALLOCATE sent as a Query inside an unsynced batch that uses the name before and after.
#[tokio::test]
#[ignore = "issue 12 part 4: in transaction mode DEALLOCATE a as a Query inside an unsynced batch reaches the server untranslated and gets 26000 where Postgres deallocates a"]
async fn deallocate_inside_an_unsynced_batch() {
    let batch = vec![
        bind("a", &[]),
        execute(),
        query("DEALLOCATE a"),
        bind("a", &[]),
        execute(),
        sync(),
    ];
    let steps = [
        step(0, vec![parse("a", "SELECT 1", &[]), sync()]),
        Step(0, batch, Until::Ready(2)),
    ];
    check(250, 1, &steps).await;
}

/// A name reused with bad SQL: Postgres reports the syntax error before the duplicate.
#[tokio::test]
#[ignore = "issue 12 part 4: in transaction mode a reused name with bad SQL gets 42P05 where Postgres reports the syntax error (42601)"]
async fn reused_name_with_bad_sql() {
    let steps = [
        step(0, vec![parse("a", "SELECT 1", &[]), sync()]),
        step(0, vec![parse("a", "SELEC 1", &[]), sync()]),
    ];
    check(250, 1, &steps).await;
}

/// A server error about a statement names the client's statement.
#[tokio::test]
#[ignore = "issue 12 part 4: in transaction mode the 08P01 text names the broker's \"pgbroker_…\" statement where Postgres names \"a\""]
async fn error_texts_name_the_clients_statement() {
    let steps = [
        step(0, vec![parse("a", "SELECT 1/$1::int", &[23]), sync()]),
        step(0, vec![bind("a", &[]), execute(), sync()]),
    ];
    check(250, 1, &steps).await;
}
