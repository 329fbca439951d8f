//! Tests of the counting service.

use super::*;
use crate::config::{Account, Function};

fn limits() -> Limits {
    let mut config = Config::default();
    let mut acme = Account {
        max_concurrency: Some(3),
        ..Account::default()
    };
    acme.functions.insert(
        "orders".into(),
        Function {
            max_concurrency: Some(2),
            max_clients: Some(2),
            max_waiting: Some(1),
        },
    );
    config.accounts.insert("acme".into(), acme);
    config.limits.max_tracked_functions = 2;
    Limits::new(Arc::new(config), Arc::default())
}

#[tokio::test]
async fn function_cap_then_account_cap_and_everything_comes_back() {
    let limits = limits();
    let orders = limits.admit("acme", "orders").unwrap();
    let other = limits.admit("acme", "billing").unwrap();
    let soon = || Instant::now() + Duration::from_millis(50);
    let mut a = Limits::acquire(&orders, soon()).await.unwrap();
    let waiting = |l: &Limits| {
        l.stats()
            .into_iter()
            .find(|s| s.function == "orders")
            .unwrap()
    };
    assert_eq!(
        (waiting(&limits).waiting, waiting(&limits).active),
        (1, 0),
        "waiting until borrowed"
    );
    a.borrowed();
    assert_eq!((waiting(&limits).waiting, waiting(&limits).active), (0, 1));
    let mut b = Limits::acquire(&orders, soon()).await.unwrap();
    b.borrowed();
    let err = Limits::acquire(&orders, soon()).await.unwrap_err();
    assert!(
        matches!(err, CapError::FunctionBusy { cap: 2, .. }),
        "{err:?}"
    );
    let c = Limits::acquire(&other, soon()).await.unwrap();
    let err = Limits::acquire(&other, soon()).await.unwrap_err();
    assert!(
        matches!(err, CapError::AccountBusy { cap: 3, .. }),
        "{err:?}"
    );
    drop((a, b, c));
    let stats = limits.stats();
    let orders_stats = stats.iter().find(|s| s.function == "orders").unwrap();
    assert_eq!(
        (
            orders_stats.active,
            orders_stats.waiting,
            orders_stats.clients
        ),
        (0, 0, 1)
    );
    assert_eq!(orders_stats.rejected.get(CapKind::Function), 1);
    assert_eq!(orders.function.cap.available(), 2);
    assert_eq!(orders.account.cap.available(), 3);
    assert_eq!(orders.function.waiting.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn client_caps_untracked_functions_and_deny() {
    let limits = limits();
    let one = limits.admit("acme", "orders").unwrap();
    let _two = limits.admit("acme", "orders").unwrap();
    assert!(matches!(
        limits.admit("acme", "orders"),
        Err(CapError::FunctionClients { max: 2, .. })
    ));
    drop(one);
    let _three = limits.admit("acme", "orders").unwrap();
    let _x = limits.admit("acme", "x").unwrap();
    let y = limits.admit("acme", "y").unwrap();
    assert_eq!(
        y.function.name, OTHER_FUNCTION,
        "past max_tracked_functions"
    );
    let mut config = Config::default();
    config.limits.unknown_functions = UnknownFunctions::Deny;
    let deny = Limits::new(Arc::new(config), Arc::default());
    assert!(matches!(
        deny.admit("acme", "orders"),
        Err(CapError::UnknownFunction { .. })
    ));
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let limits = limits();
    let orders = limits.admit("acme", "orders").unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut permits = Limits::acquire(&orders, Instant::now()).await.unwrap();
        permits.borrowed();
        held.push(permits);
    }
    let far = Instant::now() + Duration::from_secs(5);
    let waiter = Limits::acquire(&orders, far);
    tokio::pin!(waiter);
    assert!(
        tokio::time::timeout(Duration::from_millis(20), &mut waiter)
            .await
            .is_err(),
        "queued"
    );
    let started = Instant::now();
    assert!(matches!(
        Limits::acquire(&orders, far).await,
        Err(CapError::Queue { max: 1, .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn by_default_no_cap_of_their_own_but_the_slots_are_counted() {
    let limits = Limits::new(Arc::new(Config::default()), Arc::default());
    let slot = limits.admit("acme", "orders").unwrap();
    let mut held = Vec::new();
    for _ in 0..500 {
        let mut permits = Limits::acquire(&slot, Instant::now()).await.unwrap();
        permits.borrowed();
        held.push(permits);
    }
    let account = &limits.snapshot()[0];
    assert_eq!((account.cap, account.in_use), (None, 500));
    let orders = &account.functions[0];
    assert_eq!((orders.cap, orders.active), (None, 500));
    drop(held);
    assert_eq!(limits.snapshot()[0].in_use, 0);
}
