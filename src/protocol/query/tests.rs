//! Tests of the pin scan.

use super::*;

fn tracked(name: &str) -> bool {
    [
        "application_name",
        "TimeZone",
        "DateStyle",
        "client_encoding",
    ]
    .iter()
    .any(|t| t.eq_ignore_ascii_case(name))
}

fn pin(sql: &str) -> Option<PinReason> {
    analyze(sql, false, tracked).pin
}

#[test]
fn plain_statements_do_not_pin() {
    for sql in [
        "select 1",
        "BEGIN; insert into t values (1); COMMIT",
        "",
        ";;",
        "SET LOCAL work_mem = '4MB'",
        "set transaction isolation level serializable",
        "SET application_name = 'x'",
        "set time zone 'UTC'",
        "SET SESSION DateStyle TO ISO",
        "select 'LISTEN x'",
        "select 1 -- ; listen x",
        "/* listen x; */ select 1",
        "select $$; LISTEN a$$",
        "select $f$ ; prepare p as select 1 $f$",
        "select E'\\'; listen x'",
        "select pg_advisory_xact_lock(1)",
        "create table t (x int)",
        "declare c cursor for select 1",
        "reset all",
        "unlisten *",
    ] {
        assert_eq!(pin(sql), None, "{sql}");
    }
}

#[test]
fn session_state_pins() {
    let cases = [
        ("SET work_mem = '8MB'", PinReason::Set),
        ("set session statement_timeout to 5", PinReason::Set),
        ("SET ROLE other", PinReason::Set),
        ("SET search_path TO x", PinReason::Set),
        ("SET myapp.tenant = 7", PinReason::Set),
        ("LISTEN chan", PinReason::Listen),
        ("select 1; listen chan", PinReason::Listen),
        ("SELECT pg_advisory_lock(42)", PinReason::AdvisoryLock),
        (
            "select PG_TRY_ADVISORY_LOCK_SHARED(1,2)",
            PinReason::AdvisoryLock,
        ),
        ("CREATE TEMP TABLE t (x int)", PinReason::TempObject),
        (
            "create global temporary table t (x int)",
            PinReason::TempObject,
        ),
        (
            "create or replace temp view v as select 1",
            PinReason::TempObject,
        ),
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            PinReason::HoldCursor,
        ),
        ("PREPARE p AS SELECT 1", PinReason::Prepare),
        (
            "  /* hi */ -- x\n prepare p as select 1",
            PinReason::Prepare,
        ),
        ("SET \"work_mem\" = 1", PinReason::Set),
    ];
    for (sql, want) in cases {
        assert_eq!(pin(sql), Some(want), "{sql}");
    }
}

#[test]
fn state_set_through_functions_and_temp_schemas_pins() {
    let cases = [
        (
            "SELECT set_config('app.tenant', '42', false)",
            PinReason::Set,
        ),
        ("SET local.tenant = 1", PinReason::Set),
        ("set transaction.x = 1", PinReason::Set),
        ("SET SESSION my.x TO 1", PinReason::Set),
        ("SELECT 1 INTO TEMP t", PinReason::TempObject),
        ("CREATE TABLE pg_temp.t (x int)", PinReason::TempObject),
        ("DO $$BEGIN PERFORM 1; END$$", PinReason::DoBlock),
    ];
    for (sql, want) in cases {
        assert_eq!(pin(sql), Some(want), "{sql}");
    }
    assert_eq!(pin("SET LOCAL my.x = 1"), None);
}

#[test]
fn reset_and_discard_are_reported() {
    for sql in [
        "RESET statement_timeout",
        "reset all",
        "DISCARD ALL",
        "select 1; discard plans",
    ] {
        assert!(analyze(sql, false, tracked).resets, "{sql}");
    }
    assert!(!analyze("select 'reset'", false, tracked).resets);
}

#[test]
fn deallocation_is_reported() {
    let effects = |sql| {
        let e = analyze(sql, false, tracked);
        (e.deallocates, e.deallocates_all)
    };
    assert_eq!(effects("DEALLOCATE ALL"), (true, true));
    assert_eq!(effects("deallocate prepare all"), (true, true));
    assert_eq!(effects("select 1; DISCARD ALL"), (true, true));
    assert_eq!(effects("DEALLOCATE p1"), (true, false));
    assert_eq!(effects("DEALLOCATE PREPARE p1"), (true, false));
    assert_eq!(effects("DISCARD PLANS"), (false, false));
    assert_eq!(effects("SELECT 'deallocate all'"), (false, false));
}

#[test]
fn backslash_quotes_when_standard_strings_are_off() {
    let sql = r"SELECT 'it\'s'; SET work_mem = '1GB'";
    assert_eq!(analyze(sql, true, tracked).pin, Some(PinReason::Set));
    let sql = r"SELECT 'a\'; SET work_mem = '1GB'";
    assert_eq!(analyze(sql, false, tracked).pin, Some(PinReason::Set));
}

#[test]
fn unterminated_input_never_panics() {
    for sql in [
        "'abc",
        "\"abc",
        "/* abc",
        "$a$ abc",
        "$",
        "e'\\",
        "--",
        "select é; set ü = 1",
        "$1",
    ] {
        let _ = pin(sql);
    }
}
