//! The HTTP endpoint on `listen.metrics_addr`, served with hyper (HTTP/1.1):
//!
//! - `GET /metrics`: the Prometheus text exposition (gauges are set from the pools and the
//!   counting service just before rendering);
//! - `GET /healthz`: 200 while the process serves;
//! - `GET /readyz`: 200 while a backend check succeeded within two `backend.health_interval`s
//!   and the broker is not shutting down, else 503 with the reason;
//! - `GET /status`: a JSON snapshot of pools, accounts and functions.
//!
//! Also the metric upkeep loop, which runs whether or not anyone scrapes.

pub mod health;
mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::Limits;
use crate::metrics::{Metrics, UPKEEP_INTERVAL};
use crate::pool::Pools;
pub use health::{BackendCounts, Health, Probe};

/// HTTP connections served at once; past it new ones are closed at once, so a probe fails
/// fast instead of hanging in the backlog.
const MAX_CONNECTIONS: usize = 128;

/// A client must send each request's headers within this (probes and scrapers do at once).
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoint reports on.
#[derive(Debug)]
pub struct Admin {
    /// The broker's metrics.
    pub metrics: Arc<Metrics>,
    /// The counting service.
    pub limits: Arc<Limits>,
    /// The pools.
    pub pools: Arc<Pools>,
    /// The backend check.
    pub health: Arc<Health>,
    /// TLS offered to clients (its certificate's expiry).
    pub tls: Arc<crate::tls::Acceptor>,
    /// When the broker started.
    pub started: Instant,
    /// Cancelled when shutdown starts (readiness turns 503).
    pub shutdown: CancellationToken,
    /// One render of /metrics at a time: a flood of scrapes queues instead of taking every
    /// core from the forwarding.
    pub rendering: tokio::sync::Semaphore,
}

type Reply = Response<Full<Bytes>>;

impl Admin {
    async fn respond(self: Arc<Self>, request: Request<Incoming>) -> Reply {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n".into());
        }
        match request.uri().path() {
            "/metrics" => reply(StatusCode::OK, PROMETHEUS, self.render().await),
            "/healthz" => reply(StatusCode::OK, TEXT, "ok\n".into()),
            "/readyz" => match self.ready() {
                Ok(()) => reply(StatusCode::OK, TEXT, "ready\n".into()),
                Err(reason) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, reason + "\n"),
            },
            "/status" => reply(StatusCode::OK, JSON, status::render(&self)),
            _ => reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found: try /metrics, /healthz, /readyz or /status\n".into(),
            ),
        }
    }

    /// Sets the gauges and renders every metric, off the async threads (thousands of
    /// functions make a render take tens of milliseconds), one render at a time.
    async fn render(self: Arc<Self>) -> String {
        let _turn = self.rendering.acquire().await;
        let admin = Arc::clone(&self);
        let rendered = tokio::task::spawn_blocking(move || {
            admin.limits.publish();
            admin.pools.publish();
            admin.metrics.backend_ready(admin.ready().is_ok());
            admin.metrics.render()
        })
        .await;
        rendered.unwrap_or_else(|e| format!("# rendering failed: {e}\n"))
    }

    /// Ready: not shutting down, and the backend answered lately.
    fn ready(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() {
            return Err("shutting down".to_owned());
        }
        self.health.ready(Instant::now())
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Serves HTTP on `listener` until `stop` is cancelled; connections open then are closed
/// gracefully (their request in flight is answered).
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let (admin, stop) = (Arc::clone(&admin), stop.clone());
        tracker.spawn(async move {
            connection(stream, admin, stop).await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection(stream: tokio::net::TcpStream, admin: Arc<Admin>, stop: CancellationToken) {
    let service = hyper::service::service_fn(move |request| {
        let admin = Arc::clone(&admin);
        async move { Ok::<_, Infallible>(admin.respond(request).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(HEADER_TIMEOUT, conn).await;
        }
    }
}

/// Folds histogram samples into their buckets every [`UPKEEP_INTERVAL`] until `stop`.
pub async fn upkeep(metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => metrics.upkeep(),
            () = stop.cancelled() => return,
        }
    }
}
