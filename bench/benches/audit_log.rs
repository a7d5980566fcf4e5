//! Audit log benchmarks: chaining one record, appending a batch with its
//! fdatasync, and the records per second the audit thread sustains from
//! two shard rings into the hash-chained segment log (on the machine's
//! real disk under the system temp dir).
#![expect(
    clippy::expect_used,
    reason = "a benchmark with a broken fixture must stop, not measure nothing"
)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use toolgate_core::audit::AuditRecord;
use toolgate_core::config::Durability;
use toolgate_sinks::appender::Appender;
use toolgate_sinks::{audit_ring, AuditHealth, AuditProducer, AuditWriter, WriterConfig};

const KEY: &[u8] = b"bench-checkpoint-key-0123456789";

fn record() -> AuditRecord {
    toolgate_bench::sample_record()
}

fn fresh_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("toolgate-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn chain_and_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit_log");
    let dir = fresh_dir("append");
    let mut log = Appender::open(&dir, KEY.to_vec(), 64 << 20).expect("opening the bench log");
    let r = record();
    let mut buf = Vec::with_capacity(1 << 20);
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_and_chain_record", |b| {
        b.iter(|| {
            buf.clear();
            log.encode(black_box(&r), &mut buf);
            buf.len()
        })
    });
    for batch in [64usize, 1024] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("append_batch_{batch}_fdatasync"), |b| {
            b.iter(|| {
                buf.clear();
                for _ in 0..batch {
                    log.encode(&r, &mut buf);
                }
                log.append(&buf).expect("append");
                log.sync().expect("sync");
                if log.full() {
                    log.seal().expect("seal");
                }
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two producer threads (as two shards) push `per_shard` records each; the
/// clock stops when the audit thread has written them all.
fn writer_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit_log");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    let per_shard = 100_000u64;
    g.throughput(Throughput::Elements(2 * per_shard));
    g.bench_function("writer_thread_2_rings_batch_durability", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = fresh_dir("writer");
                let health = AuditHealth::new(2, Durability::Batch);
                let (w0, c0) = audit_ring(65_536);
                let (w1, c1) = audit_ring(65_536);
                let writer = AuditWriter::spawn(
                    WriterConfig {
                        dir: dir.clone(),
                        fsync_interval: Duration::from_millis(10),
                        segment_bytes: 64 << 20,
                        segment_max_age: None,
                        durability: Durability::Batch,
                        background: true,
                        key: KEY.to_vec(),
                    },
                    vec![c0, c1],
                    Arc::clone(&health),
                )
                .expect("writer");
                let stats = writer.stats();
                let start = Instant::now();
                let producers: Vec<_> = [(0u16, w0), (1u16, w1)]
                    .into_iter()
                    .map(|(shard, w)| {
                        let health = Arc::clone(&health);
                        std::thread::spawn(move || {
                            let mut p = AuditProducer::new(shard, w, health);
                            let r = record();
                            for _ in 0..per_shard {
                                let a = loop {
                                    match p.admit() {
                                        Ok(a) => break a,
                                        Err(_) => std::thread::yield_now(),
                                    }
                                };
                                p.commit(a, r.clone());
                            }
                        })
                    })
                    .collect();
                for p in producers {
                    let _ = p.join();
                }
                while stats.records_written.load(Ordering::Relaxed) < 2 * per_shard {
                    std::thread::sleep(Duration::from_micros(100));
                }
                total += start.elapsed();
                writer.shutdown();
                let _ = std::fs::remove_dir_all(&dir);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, chain_and_append, writer_thread);
criterion_main!(benches);
