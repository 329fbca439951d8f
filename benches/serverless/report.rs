//! The results: one row per (scenario, mode), printed as a table, written as JSON, and
//! drawn as an SVG chart (invocations/s and server-side CPU per invocation).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::fleet::Tally;

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Percentiles {
    pub fn of(samples: &[f64]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize] * 1000.0;
        Some(Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        })
    }
}

/// One scenario in one mode.
#[derive(Debug, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub mode: &'static str,
    pub invocations: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub connect_ms: Option<Percentiles>,
    pub invoke_ms: Option<Percentiles>,
    pub errors: BTreeMap<String, u64>,
    pub peak_server_connections: i64,
    /// CPU of the process between the fleet and Postgres (pgbroker or PgBouncer).
    pub middle_cpu_seconds: Option<f64>,
    pub middle_peak_rss_mb: Option<f64>,
    /// CPU of every Postgres process over the run.
    pub postgres_cpu_seconds: f64,
    /// (Postgres + middle) CPU per completed invocation, milliseconds (none completed: None).
    pub server_cpu_ms_per_invocation: Option<f64>,
    /// Middle CPU per completed invocation, milliseconds.
    pub middle_cpu_ms_per_invocation: Option<f64>,
    /// Frozen fleet: idle client connections held, and the middle's memory per one.
    pub idle_clients: Option<usize>,
    pub bytes_per_idle_client: Option<f64>,
}

impl Row {
    pub fn new(scenario: &'static str, mode: &'static str, tally: &Tally, seconds: f64) -> Row {
        Row {
            scenario,
            mode,
            invocations: tally.done,
            seconds,
            per_second: tally.done as f64 / seconds.max(1e-9),
            connect_ms: Percentiles::of(&tally.connect),
            invoke_ms: Percentiles::of(&tally.invoke),
            errors: tally.errors.clone(),
            peak_server_connections: 0,
            middle_cpu_seconds: None,
            middle_peak_rss_mb: None,
            postgres_cpu_seconds: 0.0,
            server_cpu_ms_per_invocation: None,
            middle_cpu_ms_per_invocation: None,
            idle_clients: None,
            bytes_per_idle_client: None,
        }
    }
}

fn ms(p: Option<Percentiles>) -> String {
    p.map_or_else(
        || "-".to_owned(),
        |p| format!("{:.1}/{:.1}/{:.1}", p.p50, p.p95, p.p99),
    )
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

pub fn print(rows: &[Row]) {
    println!(
        "{:<13} {:<10} {:>8} {:>9} {:>17} {:>17} {:>5} {:>8} {:>8} {:>8} {:>7} {:>8}  errors",
        "scenario",
        "mode",
        "done",
        "inv/s",
        "connect ms 50/95/99",
        "invoke ms 50/95/99",
        "srv",
        "mid cpu",
        "srv ms/i",
        "mid ms/i",
        "rss MB",
        "B/idle"
    );
    for r in rows {
        let errors: Vec<String> = r.errors.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        println!(
            "{:<13} {:<10} {:>8} {:>9.0} {:>17} {:>17} {:>5} {:>8} {:>8} {:>8} {:>7} {:>8}  {}",
            r.scenario,
            r.mode,
            r.invocations,
            r.per_second,
            ms(r.connect_ms),
            ms(r.invoke_ms),
            r.peak_server_connections,
            opt(r.middle_cpu_seconds, 2),
            opt(r.server_cpu_ms_per_invocation, 3),
            opt(r.middle_cpu_ms_per_invocation, 3),
            opt(r.middle_peak_rss_mb, 1),
            opt(r.bytes_per_idle_client, 0),
            errors.join(" ")
        );
    }
}

pub fn write_json(path: &Path, rows: &[Row], about: &serde_json::Value) -> anyhow::Result<()> {
    let doc = serde_json::json!({ "run": about, "rows": rows });
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}

const MODES: [&str; 3] = ["unpooled", "pooled", "pgbouncer"];
const COLORS: [RGBColor; 3] = [
    RGBColor(150, 150, 150),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
];

/// Two rows of panels, one panel per scenario: invocations/s, then server-side CPU per
/// invocation; one bar per mode.
pub fn write_svg(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in rows {
        if !scenarios.contains(&r.scenario) {
            scenarios.push(r.scenario);
        }
    }
    let width = 280 * scenarios.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(310);
    panels(&top, &scenarios, rows, "invocations/s", |r| r.per_second)?;
    let cpu = |r: &Row| r.server_cpu_ms_per_invocation.unwrap_or(0.0);
    panels(&bottom, &scenarios, rows, "server CPU ms/invocation", cpu)?;
    root.present()?;
    Ok(())
}

/// One panel per scenario in `area`: a bar per mode of `value`.
fn panels(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    scenarios: &[&str],
    rows: &[Row],
    label: &str,
    value: fn(&Row) -> f64,
) -> anyhow::Result<()> {
    let panels = area.split_evenly((1, scenarios.len().max(1)));
    for (scenario, panel) in scenarios.iter().zip(panels) {
        let bars: Vec<(usize, f64)> = MODES
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                rows.iter()
                    .find(|r| r.scenario == *scenario && r.mode == *m)
                    .map(|r| (i, value(r)))
            })
            .collect();
        let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-6) * 1.2;
        let mut chart = ChartBuilder::on(&panel)
            .caption(format!("{scenario}: {label}"), ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(48)
            .build_cartesian_2d((0u32..3).into_segmented(), 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => MODES.get(*i as usize).map_or("", |m| *m).to_owned(),
                _ => String::new(),
            })
            .draw()?;
        chart.draw_series(bars.iter().map(|&(i, v)| {
            let i = i as u32;
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), v),
                ],
                COLORS[i as usize].filled(),
            );
            bar.set_margin(0, 0, 8, 8);
            bar
        }))?;
        chart.draw_series(bars.iter().map(|&(i, v)| {
            let text = if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.3}")
            };
            Text::new(
                text,
                (SegmentValue::CenterOf(i as u32), v + top * 0.04),
                ("sans-serif", 11),
            )
        }))?;
    }
    Ok(())
}
