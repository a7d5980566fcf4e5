//! SIEM sink benchmarks: mapping one log record to OCSF, evaluating one
//! record against five SOAR rules, and delivering a
//! 256-record batch through the HTTP sinks (HEC, HEC with gzip,
//! Elasticsearch `_bulk`) to a minimal collector on 127.0.0.1 that answers
//! at once, i.e. the sink's own cost per record plus loopback HTTP.
#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark with a broken fixture must stop, not measure nothing"
)]

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use toolgate_core::audit::AuditRecord;
use toolgate_sinks::appender::Appender;
use toolgate_sinks::reader::{Entry, Position};
use toolgate_sinks::siem::HttpSink;
use toolgate_sinks::sink::Sink;

const BATCH: usize = 256;

fn record() -> AuditRecord {
    toolgate_bench::sample_record()
}

/// `BATCH` chained log lines, as a sink reads them.
fn entries() -> Vec<Entry> {
    let dir = std::env::temp_dir().join(format!("toolgate-bench-sinks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut log =
        Appender::open(&dir, b"bench-checkpoint-key-0123456789".to_vec(), 64 << 20).expect("log");
    let r = record();
    let out = (1..=BATCH as u64)
        .map(|seq| {
            let mut buf = Vec::new();
            if !log.encode(&r, &mut buf) {
                panic!("encode");
            }
            buf.pop();
            Entry {
                seq,
                line: buf,
                after: Position::START,
            }
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// A collector answering every request with `answer` on a kept-alive connection.
fn collector(answer: &'static str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                let mut line = String::new();
                loop {
                    let mut len = 0usize;
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    if r.get_mut().write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn sink(kind: &str, addr: &str, extra: &str) -> HttpSink {
    let text = format!(
        "[[audit.sinks]]\nname = \"b\"\nkind = \"{kind}\"\nurl = \"http://{addr}/services/collector/event\"\nbatch_records = {BATCH}\n{extra}\n"
    );
    let v = toolgate_core::config::parse(&text, "bench", std::path::Path::new(".")).unwrap();
    HttpSink::from_config(&v.config.audit.sinks[0], &v.sink_targets[0], "gw".into()).unwrap()
}

fn benches(c: &mut Criterion) {
    let batch = entries();
    let mut g = c.benchmark_group("sinks");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ocsf_map_record", |b| {
        let mut out = Vec::with_capacity(2048);
        b.iter(|| {
            out.clear();
            let r = toolgate_sinks::ocsf::Record::parse(black_box(&batch[0].line));
            toolgate_sinks::ocsf::write_ocsf(&r, false, &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("soar_evaluate_record_5_rules", |b| {
        let text = "[[audit.sinks]]\nname = \"s\"\nkind = \"soar\"\nurl = \"http://127.0.0.1:9/h\"\n\
            [[audit.sinks.rules]]\nname = \"d\"\nkind = \"deny\"\n\
            [[audit.sinks.rules]]\nname = \"j\"\nkind = \"judge\"\n\
            [[audit.sinks.rules]]\nname = \"dr\"\nkind = \"deny_rate\"\nthreshold = 10\nwindow_s = 60\n\
            [[audit.sinks.rules]]\nname = \"cr\"\nkind = \"call_rate\"\nthreshold = 10000\nwindow_s = 60\n\
            [[audit.sinks.rules]]\nname = \"f\"\nkind = \"first_use\"\n";
        let v = toolgate_core::config::parse(text, "bench", std::path::Path::new("."))
            .unwrap();
        let rules = toolgate_sinks::soar::Rule::from_config(&v.config.audit.sinks[0]);
        let mut engine = toolgate_sinks::soar::Engine::new(rules, 10_000);
        let mut alerts = Vec::new();
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            alerts.clear();
            engine.evaluate(seq, black_box(&batch[0].line), &mut alerts);
            black_box(alerts.len())
        })
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    let hec = collector(r#"{"text":"Success","code":0}"#);
    let bulk = collector(r#"{"took":1,"errors":false,"items":[]}"#);
    for (name, kind, addr, extra) in [
        (
            "hec_deliver_256_ocsf",
            "splunk_hec",
            &hec,
            "[audit.sinks.token]\ncommand = [\"echo\", \"bench-token\"]",
        ),
        (
            "hec_deliver_256_ocsf_gzip",
            "splunk_hec",
            &hec,
            "gzip = true\n[audit.sinks.token]\ncommand = [\"echo\", \"bench-token\"]",
        ),
        (
            "hec_deliver_256_toolgate",
            "splunk_hec",
            &hec,
            "format = \"toolgate\"\n[audit.sinks.token]\ncommand = [\"echo\", \"bench-token\"]",
        ),
        ("bulk_deliver_256_ocsf", "elasticsearch", &bulk, ""),
    ] {
        let mut s = sink(kind, addr, extra);
        g.bench_function(name, |b| {
            b.iter(|| {
                if let Err(e) = s.deliver(black_box(&batch)) {
                    panic!("{e}");
                }
            })
        });
    }
    g.finish();
}

criterion_group!(sink_benches, benches);
criterion_main!(sink_benches);
