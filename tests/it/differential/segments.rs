//! Differential scenarios of named statements across Sync segments (see [`super`]): a
//! batch whose error skips to a Sync, and what the next segments then rely on. Each came
//! from a review of the broker's name translation or from the randomized run, and failed
//! before its fix.

use super::{check, Step, Until};
use crate::raw::{bind, close_statement, execute, parse, query, sync};

use Until::Ready;

/// A later Sync segment relies on a Parse queued in an earlier one that an error skipped.
#[tokio::test]
async fn r1_cross_segment_pending_parse() {
    let steps = [
        Step(
            0,
            vec![parse("a", "SELECT 1/$1::int", &[23]), sync()],
            Ready(1),
        ),
        Step(
            0,
            vec![
                bind("a", &["0"]),
                execute(),
                parse("s1", "SELECT 42", &[]),
                sync(),
                parse("s2", "SELECT 42", &[]),
                bind("s2", &[]),
                execute(),
                sync(),
            ],
            Ready(2),
        ),
        Step(0, vec![bind("s2", &[]), execute(), sync()], Ready(1)),
    ];
    check(250, 1, &steps).await;
}

/// Same with an on-demand Parse (statement known to the client, not yet on this server).
#[tokio::test]
async fn r1b_cross_segment_on_demand() {
    let steps = [
        Step(0, vec![parse("s1", "SELECT 42", &[]), sync()], Ready(1)),
        // Evict it with capacity 1 so the next use prepares on demand.
        Step(0, vec![parse("other", "SELECT 7", &[]), sync()], Ready(1)),
        Step(
            0,
            vec![
                parse("", "SELECT 1/$1::int", &[23]),
                bind("", &["0"]),
                execute(),
                bind("s1", &[]),
                execute(),
                sync(),
                bind("s1", &[]),
                execute(),
                sync(),
            ],
            Ready(2),
        ),
    ];
    check(1, 1, &steps).await;
}

/// An eviction Close skipped by an error, while a later segment prepared the statement
/// again: 42P05, and the LRU loses a statement the server still has.
#[tokio::test]
async fn r2_skipped_eviction_then_persistent_42p05() {
    let steps = [
        Step(0, vec![parse("sx", "SELECT 1", &[]), sync()], Ready(1)),
        Step(
            0,
            vec![
                parse("", "SELECT 1/$1::int", &[23]),
                bind("", &["0"]),
                execute(),
                parse("y", "SELECT 2", &[]),
                sync(),
                bind("sx", &[]),
                execute(),
                sync(),
            ],
            Ready(2),
        ),
        Step(0, vec![bind("sx", &[]), execute(), sync()], Ready(1)),
        Step(
            1,
            vec![
                parse("mine", "SELECT 1", &[]),
                bind("mine", &[]),
                execute(),
                sync(),
            ],
            Ready(1),
        ),
        Step(1, vec![bind("mine", &[]), execute(), sync()], Ready(1)),
    ];
    check(1, 2, &steps).await;
}

/// A Close skipped by an error is undone after a later segment re-Parsed the name.
#[tokio::test]
async fn r3_skipped_close_rebinds_over_a_newer_parse() {
    let steps = [
        Step(0, vec![parse("s1", "SELECT 1", &[]), sync()], Ready(1)),
        Step(
            0,
            vec![
                parse("", "SELECT 1/$1::int", &[23]),
                bind("", &["0"]),
                execute(),
                close_statement("s1"),
                sync(),
                parse("s1", "SELECT 2", &[]),
                bind("s1", &[]),
                execute(),
                sync(),
                bind("s1", &[]),
                execute(),
                sync(),
            ],
            Ready(3),
        ),
    ];
    check(250, 1, &steps).await;
}

/// A Parse that fails, then the same text under another name in a later segment: the
/// broker answers the second one itself.
#[tokio::test]
async fn r11_fake_parse_complete_for_a_failed_text() {
    let steps = [Step(
        0,
        vec![
            parse("s1", "SELEC 1", &[]),
            sync(),
            parse("s2", "SELEC 1", &[]),
            sync(),
        ],
        Ready(2),
    )];
    check(250, 1, &steps).await;
}

/// r3 continued: later, the name the client re-Parsed runs the old statement.
#[tokio::test]
async fn r3b_name_switches_statement_later() {
    let steps = [
        Step(0, vec![parse("s1", "SELECT 1", &[]), sync()], Ready(1)),
        Step(
            0,
            vec![
                parse("", "SELECT 1/$1::int", &[23]),
                bind("", &["0"]),
                execute(),
                close_statement("s1"),
                sync(),
                parse("s1", "SELECT 2", &[]),
                bind("s1", &[]),
                execute(),
                sync(),
            ],
            Ready(2),
        ),
        Step(0, vec![bind("s1", &[]), execute(), sync()], Ready(1)),
    ];
    check(250, 1, &steps).await;
}

/// A simple Query sent while the server skips to Sync: Postgres ignores it.
#[tokio::test]
async fn r12_query_while_ignoring() {
    let steps = [
        Step(
            0,
            vec![bind("nope", &[]), execute(), query("SELECT 1"), sync()],
            Ready(1),
        ),
        Step(0, vec![query("SELECT 3")], Ready(1)),
        Step(1, vec![query("SELECT 2")], Ready(1)),
    ];
    check(250, 2, &steps).await;
}

#[tokio::test]
async fn r13_reparse_after_failed_parse_in_earlier_segment() {
    let steps = [Step(
        0,
        vec![
            parse("s1", "SELEC 1", &[]),
            sync(),
            parse("s1", "SELECT 1", &[]),
            sync(),
        ],
        Ready(2),
    )];
    check(250, 1, &steps).await;
}

/// From the randomized differential run: frames that wait for an earlier batch's answer
/// keep the server (a re-borrow would close the client's unnamed statement).
#[tokio::test]
async fn waiting_frames_keep_their_server() {
    let steps = [Step(
        0,
        vec![
            parse("", "SELECT 1", &[]),
            parse("a", "SELECT 2", &[]),
            sync(),
            bind("", &[]),
            execute(),
            sync(),
        ],
        Ready(2),
    )];
    check(250, 1, &steps).await;
}
