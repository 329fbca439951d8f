//! The forwarding path's codec on in-memory bytes, no database: frames per second through
//! the server-to-client scanner (what `forward_into` runs on every read) and through the
//! client-side framing and pin scan (what every client message goes through). A regression
//! on the hot path shows here first.
//!
//! `cargo bench --bench codec`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgbroker::backend::Position;
use pgbroker::protocol::frame::Passthrough;
use pgbroker::protocol::query::analyze;
use pgbroker::protocol::Header;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// `results` result sets of `rows` 100-byte rows each, as Postgres answers a query.
fn server_bytes(results: usize, rows: usize) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    let mut frames = 0;
    for _ in 0..results {
        out.extend(frame(b'T', &[0u8; 30]));
        for _ in 0..rows {
            out.extend(frame(b'D', &[7u8; 100]));
        }
        out.extend(frame(b'C', b"SELECT 10\0"));
        out.extend(frame(b'Z', b"I"));
        frames += rows as u64 + 3;
    }
    (out, frames)
}

fn scan_server(buf: &[u8]) -> usize {
    let mut scan = Passthrough::default();
    let mut position = Position::default();
    let (mut at, mut frames) = (0, 0);
    while let Ok(Some(step)) = scan.next(&buf[at..], Position::watches) {
        if let pgbroker::protocol::frame::Step::Frame(header, body, _) = &step {
            position.received(header.tag, body);
        }
        frames += 1;
        at += step.len();
    }
    frames
}

fn client_bytes(n: usize) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    for i in 0..n {
        let sql = format!("SELECT id, name FROM orders WHERE customer = {i} AND status = 'open'\0");
        out.extend(frame(b'Q', sql.as_bytes()));
    }
    (out, n as u64)
}

fn scan_client(buf: &[u8]) -> usize {
    let (mut at, mut pinned) = (0, 0);
    while let Ok(Some(header)) = Header::parse(&buf[at..]) {
        let len = header.frame_len();
        let body = &buf[at + 5..at + len - 1];
        let sql = std::str::from_utf8(body).unwrap_or("");
        if analyze(sql, false, |_| true).pin.is_some() {
            pinned += 1;
        }
        at += len;
    }
    pinned
}

fn codec(c: &mut Criterion) {
    let (server, frames) = server_bytes(100, 10);
    let mut group = c.benchmark_group("server_to_client");
    group.throughput(Throughput::Elements(frames));
    group.bench_function("scan 100 results of 10 rows", |b| {
        b.iter(|| scan_server(black_box(&server)))
    });
    group.finish();
    let (client, frames) = client_bytes(1000);
    let mut group = c.benchmark_group("client_to_server");
    group.throughput(Throughput::Elements(frames));
    group.bench_function("frame and pin-scan 1000 queries", |b| {
        b.iter(|| scan_client(black_box(&client)))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
