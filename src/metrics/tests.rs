//! Tests of the recorder: help text, buckets, bounded SQLSTATE labels.

use super::*;

#[test]
fn renders_help_buckets_and_bounded_sqlstates() {
    let metrics = Metrics::new(&["53300"]);
    let f = metrics.function("acme", "orders");
    f.transactions.increment(3);
    f.borrow_wait.record(0.0002);
    metrics.reaped(Reaped::ServerIdle, 2);
    for i in 0..MAX_SQLSTATES + 10 {
        metrics.error(&format!("{:05}", i));
    }
    metrics.error("not a code");
    let text = metrics.render();
    assert!(text.contains("# HELP pgbroker_transactions_total Transactions"));
    assert!(text.contains("pgbroker_transactions_total{account=\"acme\",function=\"orders\"} 3"));
    assert!(text.contains(
        "pgbroker_borrow_wait_seconds_bucket{account=\"acme\",function=\"orders\",le=\"0.00025\"} 1"
    ));
    assert!(text.contains("pgbroker_reaped_total{reason=\"server_idle\"} 2"));
    metrics.error("53300");
    assert!(text.contains("pgbroker_errors_total{sqlstate=\"00005\"} 1"));
    let codes = text
        .lines()
        .filter(|l| l.starts_with("pgbroker_errors_total{"))
        .count();
    assert_eq!(codes, MAX_SQLSTATES + 1);
    let text = metrics.render();
    assert!(
        text.contains("pgbroker_errors_total{sqlstate=\"53300\"} 1"),
        "the broker's own codes keep their label past the bound"
    );
}
