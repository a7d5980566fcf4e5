//! TLS on the agent listener, in memory: a rustls client and toolgate's own
//! server configuration (`load_server_config`, ring provider) exchanging
//! bytes through a buffer, no sockets, so the numbers are the CPU cost of
//! TLS alone. Each figure is both peers' work: a handshake includes the
//! client's chain verification, a record round trip the client's sealing
//! and opening as well as the server's.
//!
//! Certificates are fixtures (`fixtures/tls/`: a CA and a leaf for
//! `toolgate.bench.test`, ECDSA P-256 and RSA 2048, valid until 2126).
#![expect(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark with a broken fixture must stop, not measure nothing"
)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, ConnectionCommon, HandshakeKind, RootCertStore, ServerConfig,
    ServerConnection,
};
use toolgate_core::config::{ClientAuth, TlsFiles};
use toolgate_net::tls::load_server_config;

const NAME: &str = "toolgate.bench.test";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/tls")
        .join(name)
}

/// The listener's configuration as toolgate builds it (TLS 1.2 and 1.3,
/// no client certificate, ALPN `http/1.1`).
fn server_config(kind: &str) -> Arc<ServerConfig> {
    let files = TlsFiles {
        cert: fixture(&format!("server-{kind}.pem")),
        key: fixture(&format!("server-{kind}.key")),
        client_ca: None,
        client_auth: ClientAuth::Required,
        tls13_only: false,
    };
    load_server_config(&files).unwrap_or_else(|e| panic!("{kind} server config: {e}"))
}

/// An agent's client trusting the fixture CA; with `resume` false it never
/// offers a session ticket, so every handshake is a full one.
fn client_config(kind: &str, resume: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(fixture(&format!("ca-{kind}.pem")))
        .unwrap_or_else(|e| panic!("{kind} CA: {e}"));
    roots
        .add(ca)
        .unwrap_or_else(|e| panic!("{kind} CA root: {e}"));
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("client versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Arc::new(config)
}

/// Moves everything `from` has to send into `to` and lets `to` process it;
/// returns the bytes that crossed the wire.
fn pump<A, B>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
    wire: &mut Vec<u8>,
) -> usize {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire).expect("write_tls");
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).expect("read_tls");
        to.process_new_packets().expect("process_new_packets");
    }
    wire.len()
}

/// One connection from ClientHello to the server's session tickets.
fn handshake(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
    wire: &mut Vec<u8>,
) -> (ClientConnection, ServerConnection) {
    let name = ServerName::try_from(NAME).unwrap();
    let mut c = ClientConnection::new(Arc::clone(client), name).expect("client");
    let mut s = ServerConnection::new(Arc::clone(server)).expect("server");
    // A TLS 1.3 handshake is two flights each way; more means a bug.
    for _ in 0..4 {
        pump(&mut c, &mut s, wire);
        pump(&mut s, &mut c, wire);
        if !c.is_handshaking() && !s.is_handshaking() {
            return (c, s);
        }
    }
    panic!("handshake did not complete")
}

fn handshakes(c: &mut Criterion) {
    let mut g = c.benchmark_group("tls");
    let mut wire = Vec::with_capacity(16 * 1024);
    for (kind, label) in [("ec", "ecdsa_p256"), ("rsa", "rsa2048")] {
        let server = server_config(kind);
        let client = client_config(kind, false);
        let (conn, _) = handshake(&client, &server, &mut wire);
        assert_eq!(conn.handshake_kind(), Some(HandshakeKind::Full));
        assert_eq!(
            conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        g.bench_function(format!("handshake_tls13_full_{label}"), |b| {
            b.iter(|| handshake(black_box(&client), &server, &mut wire))
        });
    }
    // A returning agent with a ticket: no certificate, no signature.
    let server = server_config("ec");
    let client = client_config("ec", true);
    let _ = handshake(&client, &server, &mut wire);
    let (conn, _) = handshake(&client, &server, &mut wire);
    assert_eq!(conn.handshake_kind(), Some(HandshakeKind::Resumed));
    g.bench_function("handshake_tls13_resumed_ecdsa_p256", |b| {
        b.iter(|| handshake(black_box(&client), &server, &mut wire))
    });
    g.finish();
}

/// The per-request cost on an established connection: a 1 KiB request
/// sealed by the client and opened by the server, then a 1 KiB response
/// the other way.
fn records(c: &mut Criterion) {
    let mut g = c.benchmark_group("tls");
    let mut wire = Vec::with_capacity(16 * 1024);
    let server = server_config("ec");
    let client = client_config("ec", false);
    let (mut conn, mut srv) = handshake(&client, &server, &mut wire);
    let request = vec![b'q'; 1024];
    let response = vec![b'r'; 1024];
    let mut got = vec![0u8; 1024];
    let mut round_trip = |wire: &mut Vec<u8>| {
        conn.writer()
            .write_all(black_box(&request))
            .expect("client write");
        let up = pump(&mut conn, &mut srv, wire);
        srv.reader().read_exact(&mut got).expect("server read");
        srv.writer()
            .write_all(black_box(&response))
            .expect("server write");
        let down = pump(&mut srv, &mut conn, wire);
        conn.reader().read_exact(&mut got).expect("client read");
        up + down
    };
    let on_wire = round_trip(&mut wire);
    assert!(on_wire > 2048, "records carry the payload: {on_wire} bytes");
    g.throughput(Throughput::Bytes(2048));
    g.bench_function("record_round_trip_1kib_request_1kib_response", |b| {
        b.iter(|| round_trip(&mut wire))
    });
    g.finish();
}

criterion_group!(benches, handshakes, records);
criterion_main!(benches);
