//! Tests of the warnings `pgbroker check` prints: each found, with its key and line, and none
//! for the shipped configs.

use super::*;

const SHIPPED: &str = include_str!("../../../config.toml");
const SIDECAR: &str = include_str!("../../../examples/sidecar.toml");

fn checked(text: &str) -> Checked {
    Checked::new(text.to_owned(), Path::new("/etc/pgbroker/config.toml")).unwrap()
}

/// (key, line, doubt) of each warning.
fn found(text: &str) -> Vec<(Option<String>, Option<usize>, Doubt)> {
    let warnings = checked(text).warnings;
    warnings
        .into_iter()
        .map(|w| (w.key, w.line, w.doubt))
        .collect()
}

const USER: &str = "[[users]]\nname = \"app\"\npassword = \"app\"\n";

#[test]
fn the_shipped_configs_warn_of_nothing() {
    assert_eq!(found(SHIPPED), []);
    assert_eq!(found(SIDECAR), []);
}

#[test]
fn no_user_and_no_auth_query_means_no_login() {
    let warnings = checked("[pool]\nsize = 4\n").warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0].to_string(),
        "/etc/pgbroker/config.toml: no [[users]] and no [auth] (auth_query): no client can log in"
    );
    // Users looked up in Postgres can log in.
    assert_eq!(found("[auth]\nuser = \"pgbroker_auth\"\n"), []);
    assert_eq!(found(USER), []);
}

#[test]
fn an_account_without_its_table() {
    let text = format!("[accounts.shop]\nmax_concurrency = 5\n\n{USER}account = \"shpo\"\n");
    let account = "shpo".to_owned();
    assert_eq!(
        found(&text),
        [(
            Some("users[0].account".to_owned()),
            Some(7),
            Doubt::UnknownAccount { account }
        )]
    );
    let message = checked(&text).warnings[0].to_string();
    assert!(
        message.starts_with("/etc/pgbroker/config.toml line 7: `users[0].account` is \"shpo\""),
        "{message}"
    );
    assert_eq!(found(&text.replace("shpo", "shop")), []);
    // Without `account`, the user is its own account: no table is the ordinary case.
    assert_eq!(found(USER), []);
}

#[test]
fn function_caps_above_their_accounts() {
    let text = format!(
        "{USER}[accounts.shop]\nmax_concurrency = 5\nfunction_concurrency = 8\n\
         [accounts.shop.functions.orders]\nmax_concurrency = 6\n\
         [accounts.shop.functions.billing]\nmax_concurrency = 5\n\
         [accounts.open.functions.orders]\nmax_concurrency = 500\n"
    );
    let above = |cap| Doubt::AboveAccountCap {
        cap,
        account_cap: 5,
    };
    assert_eq!(
        found(&text),
        [
            (
                Some("accounts.shop.function_concurrency".to_owned()),
                Some(6),
                above(8)
            ),
            (
                Some("accounts.shop.functions.orders.max_concurrency".to_owned()),
                Some(8),
                above(6)
            ),
        ],
        "a cap equal to its account's is meant (one function may use it all); an account \
         without a cap bounds nothing"
    );
    // The [limits] defaults: an account without max_concurrency gets the default's cap.
    let text = format!(
        "[limits]\ndefault_function_concurrency = 10\ndefault_account_concurrency = 5\n{USER}\
         [accounts.open.functions.orders]\nmax_concurrency = 7\n"
    );
    let keys: Vec<_> = found(&text).into_iter().map(|(k, l, _)| (k, l)).collect();
    assert_eq!(
        keys,
        [
            (
                Some("limits.default_function_concurrency".to_owned()),
                Some(2)
            ),
            (
                Some("accounts.open.functions.orders.max_concurrency".to_owned()),
                Some(8)
            ),
        ]
    );
}

#[test]
fn a_pool_postgres_would_not_let_fill() {
    let mut pool = checked(&format!("{USER}[pool]\nsize = 98\n"));
    pool.against_server(100, 3);
    let warnings = &pool.warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0].to_string(),
        "/etc/pgbroker/config.toml line 5: `pool.size` is 98, but Postgres allows 97 connections \
         to a role that is not a superuser (max_connections 100, 3 reserved)"
    );
    let mut fits = checked(&format!("{USER}[pool]\nsize = 97\n"));
    fits.against_server(100, 3);
    assert_eq!(fits.warnings, []);
    // The default pool.size is not in the text: the warning has no line.
    let mut default = checked(USER);
    default.against_server(10, 3);
    assert_eq!(default.warnings[0].line, None);
    assert!(default.warnings[0]
        .to_string()
        .contains("`pool.size` is 20"));
}
