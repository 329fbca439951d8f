//! One client session: startup, authentication, the greeting, then the forwarding loop
//! that borrows a server connection per transaction (or holds one: session mode, pinned),
//! and the release of everything at the end.

pub mod forward;
pub mod params;
pub mod startup;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::auth::{KeyCache, UserEntry};
use crate::backend::Params;
use crate::cancel::{CancelKey, CancelRegistry};
use crate::config::{AuthMethod, Config, FunctionFrom};
use crate::error::SessionError;
use crate::limits::CapError;
use crate::pool::Pools;
use crate::protocol::write;
use params::ClientParams;
use startup::{ClientIo, Opening};

/// What every session shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// Users by name.
    pub users: HashMap<String, UserEntry>,
    /// The method unknown users are asked for: the most common one among configured users,
    /// so the request itself does not tell who exists.
    pub default_method: AuthMethod,
    /// Derived SCRAM keys.
    pub keys: KeyCache,
    /// TLS offered to clients.
    pub tls: Arc<crate::tls::Acceptor>,
    /// Users not in the config, looked up in Postgres (`[auth]`).
    pub lookup: Option<crate::lookup::Lookup>,
    /// The server connection pools.
    pub pools: Arc<Pools>,
    /// The account and function caps.
    pub limits: Arc<crate::limits::Limits>,
    /// The broker's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Budgets of the warnings a storm would repeat.
    pub warnings: crate::throttle::Warnings,
    /// Every client session, for the reaper's sweep.
    pub clients: Arc<crate::reaper::Clients>,
    /// Broker-issued cancel keys.
    pub cancels: Arc<CancelRegistry>,
    /// Cancelled when shutdown starts: idle sessions end, busy ones end at their next rest.
    pub shutdown: CancellationToken,
    /// Cancelled when the grace period is over: every session ends now.
    pub abort: CancellationToken,
}

/// How long the last words to a client (its error, the rest of its results) may take.
const FINAL_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves one accepted client connection to its end. Logs once, here.
pub async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    let mut io = ClientIo::new(stream);
    let started = Instant::now();
    let mut summary = Summary::default();
    let outcome = run(&mut io, &shared, &mut summary).await;
    if let Err(error) = &outcome {
        if let Some(message) = error.client_message() {
            shared.metrics.error(message.code());
            message.write(&mut io.wbuf);
        }
    }
    // A client that stopped reading must not hold the task (and shutdown) hostage.
    let _ = tokio::time::timeout(FINAL_FLUSH_TIMEOUT, io.flush()).await;
    summary.log(&peer, started, &outcome);
}

/// What the closing log line of a session says.
#[derive(Debug, Default)]
struct Summary {
    /// Account and function, once the client was admitted.
    identity: Option<(String, String)>,
    transactions: u64,
    goodbye: Option<forward::Goodbye>,
}

impl Summary {
    /// One line per session: who, how long, how much, how it ended. A cancel request or a
    /// client that never finished startup logs at debug level unless it got an error.
    fn log(&self, peer: &str, started: Instant, outcome: &Result<(), SessionError>) {
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (account, function) = match &self.identity {
            Some((a, f)) => (a.as_str(), f.as_str()),
            None => ("", ""),
        };
        let ended = match (outcome, self.goodbye) {
            (Ok(()), Some(forward::Goodbye::Terminate)) => "terminate",
            (Ok(()), Some(forward::Goodbye::Vanished)) | (Err(SessionError::ClientIo(_)), _) => {
                "disconnect"
            }
            (Ok(()), None) => "cancel_request",
            (Err(SessionError::Shutdown), _) => "shutdown",
            (Err(SessionError::ClientIdle { .. }), _) => "reaped_client_idle",
            (Err(SessionError::IdleInTransaction { .. }), _) => "reaped_idle_in_transaction",
            (Err(_), _) => "error",
        };
        let error = outcome.as_ref().err().map(tracing::field::display);
        if self.identity.is_none() && error.is_none() {
            tracing::debug!(%peer, duration_ms, outcome = ended, "connection ended");
            return;
        }
        tracing::info!(
            %peer,
            %account,
            %function,
            duration_ms,
            transactions = self.transactions,
            outcome = ended,
            error,
            "session ended"
        );
    }
}

async fn run(
    io: &mut ClientIo,
    shared: &Arc<Shared>,
    summary: &mut Summary,
) -> Result<(), SessionError> {
    let timeout = shared.config.listen.startup_timeout;
    let greeted = tokio::time::timeout(timeout, Box::pin(handshake(io, shared, summary)))
        .await
        .map_err(|_| SessionError::StartupTimeout(timeout))??;
    let Some(session) = greeted else {
        return Ok(());
    };
    // Past the bound of tracked functions, the name the metrics use.
    let slot = &session.slot;
    summary.identity = Some((slot.account.name.clone(), slot.function.name.clone()));
    let (outcome, tally) = forward::Session::new(io, shared, session).run().await;
    summary.transactions = tally.transactions;
    summary.goodbye = outcome.as_ref().ok().copied();
    outcome.map(|_| ())
}

/// A client that finished startup and authentication, with its pool and cancel key.
#[derive(Debug)]
pub struct Greeted {
    /// The pool of its (database, user).
    pub pool: crate::pool::Pool,
    /// Its parameters.
    pub params: ClientParams,
    /// Its cancel key.
    pub key: CancelKey,
    /// Its place under the client caps of its account and function.
    pub slot: crate::limits::ClientSlot,
}

async fn handshake(
    io: &mut ClientIo,
    shared: &Arc<Shared>,
    summary: &mut Summary,
) -> Result<Option<Greeted>, SessionError> {
    let startup = match startup::open(io, shared).await? {
        Opening::Cancelled => return Ok(None),
        Opening::Session(startup) => startup,
    };
    let user = startup.get("user").unwrap_or_default().to_owned();
    let database = startup
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_owned();
    let entry = startup::authenticate(io, shared, &user).await?;
    write::auth_ok(&mut io.wbuf);
    let function = match shared.config.limits.function_from {
        FunctionFrom::ApplicationName => startup
            .get("application_name")
            .filter(|a| !a.is_empty())
            .unwrap_or(&user),
        FunctionFrom::User => user.as_str(),
    };
    summary.identity = Some((entry.account.clone(), function.to_owned()));
    let slot = shared
        .limits
        .admit(&entry.account, function)
        .inspect_err(|error| {
            let Some(suppressed) = shared.warnings.caps.allow() else {
                return;
            };
            match error {
                CapError::UnknownFunction { .. } => {
                    tracing::warn!(%error, suppressed, "function not allowed: connection refused")
                }
                _ => tracing::warn!(%error, suppressed, "cap reached: connection refused"),
            }
        })?;
    let pool = shared.pools.get(&database, &user, &entry.secret);
    let baseline = match pool.baseline().await {
        Ok(baseline) => baseline,
        Err(error) => {
            shared.pools.forget_unused(&database, &user);
            return Err(error.into());
        }
    };
    let params = ClientParams::new(&baseline, &startup_settings(&startup.params)?)
        .map_err(|name| SessionError::UnsupportedParameter { name })?;
    let key = shared.cancels.register();
    greet(io, &params.reported, &key);
    io.flush().await?;
    Ok(Some(Greeted {
        pool,
        params,
        key,
        slot,
    }))
}

/// The startup parameters with `options` expanded into its `-c name=value` settings.
fn startup_settings(params: &[(String, String)]) -> Result<Vec<(String, String)>, SessionError> {
    let mut out = Vec::with_capacity(params.len());
    for (name, value) in params {
        if name == "options" {
            let settings = crate::protocol::startup::parse_options(value).map_err(|word| {
                SessionError::UnsupportedParameter {
                    name: format!("options ({word})"),
                }
            })?;
            out.extend(settings);
        } else {
            out.push((name.clone(), value.clone()));
        }
    }
    Ok(out)
}

fn greet(io: &mut ClientIo, reported: &Params, key: &CancelKey) {
    for (name, value) in reported {
        write::parameter_status(&mut io.wbuf, name, value);
    }
    write::backend_key_data(&mut io.wbuf, key.pid, key.secret);
    write::ready_for_query(&mut io.wbuf, b'I');
}
