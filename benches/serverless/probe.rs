//! What the harness reads off the machine: CPU seconds and memory of a process (from
//! /proc), the CPU of the whole Postgres server (the postmaster, the backends that ended,
//! the ones alive), and the peak of server connections (sampled from pg_stat_activity).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux everywhere).
const TICKS: f64 = 100.0;

/// Fields of /proc/PID/stat after the command name: (ppid, utime, stime, cutime, cstime).
fn stat(pid: u32) -> Option<(u32, u64, u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let num = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    Some((num(1)? as u32, num(11)?, num(12)?, num(13)?, num(14)?))
}

/// CPU seconds a process has used (user + system); `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat(pid).map(|(_, u, s, _, _)| (u + s) as f64 / TICKS)
}

/// CPU seconds of the Postgres server: the postmaster's own and its ended children's
/// (cutime/cstime: Postgres reaps its backends), plus every live child's.
pub fn server_cpu_seconds(postmaster: u32) -> Option<f64> {
    let (_, u, s, cu, cs) = stat(postmaster)?;
    let mut ticks = u + s + cu + cs;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some((ppid, u, s, _, _)) = stat(pid) {
                if ppid == postmaster {
                    ticks += u + s;
                }
            }
        }
    }
    Some(ticks as f64 / TICKS)
}

/// Resident memory of a process now, in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Peaks seen by a [`Sampler`] while it ran.
#[derive(Debug, Default)]
pub struct Peaks {
    /// Most client backends of the mode's user at once in pg_stat_activity.
    pub server_connections: AtomicI64,
    /// Most resident memory of the middle process (pgbroker, PgBouncer), in bytes.
    pub rss: AtomicU64,
}

/// Samples server connections and the middle process's memory every 20ms until stopped.
pub struct Sampler {
    pub peaks: Arc<Peaks>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(
        superuser: Arc<tokio_postgres::Client>,
        user: &'static str,
        middle: Option<u32>,
    ) -> Sampler {
        let peaks = Arc::new(Peaks::default());
        let stop = CancellationToken::new();
        let (p, s) = (Arc::clone(&peaks), stop.clone());
        let task = tokio::spawn(async move {
            let sql = "SELECT count(*) FROM pg_stat_activity \
                       WHERE usename = $1 AND backend_type = 'client backend' \
                       AND application_name <> 'pgbroker health check'";
            while !s.is_cancelled() {
                if let Ok(row) = superuser.query_one(sql, &[&user]).await {
                    p.server_connections
                        .fetch_max(row.get(0), Ordering::Relaxed);
                }
                if let Some(pid) = middle {
                    p.rss.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    () = s.cancelled() => {}
                }
            }
        });
        Sampler { peaks, stop, task }
    }

    pub async fn finish(self) -> Arc<Peaks> {
        self.stop.cancel();
        let _ = self.task.await;
        self.peaks
    }
}
