//! The opt-in metrics endpoint (`metrics-listen`): Prometheus text exposition format
//! 0.0.4 at `GET /metrics`, served by a small hand-written HTTP/1.1 server on the
//! daemon's tokio runtime.
//!
//! The server never touches the node: for each scrape it asks the main loop for a
//! [`Snapshot`] (the loop asks the data plane for one, see `link.rs`), then
//! formats it here, outside every lock. Requests are bounded ([`Limits`]: head size,
//! read timeout, connections at once), one request per connection.
//!
//! There is no authentication: anyone who reaches the address reads every peer's
//! address and traffic. Bind it to loopback or an overlay address.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// `Content-Type` of a scrape: the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Peers with series of their own, the ones with the most traffic (received plus
/// sent bytes) first; the rest only count in the per-identity totals and in
/// `metanet_peer_series_omitted`. Keeps a scrape small with thousands of peers.
pub const MAX_PEER_SERIES: usize = 256;

/// A scrape request to the main loop: where to send the snapshot.
pub type Request = oneshot::Sender<Snapshot>;

/// Everything one scrape shows, copied out of the daemon.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// metanetd's version.
    pub version: String,
    /// The global counters of `metanet status --json`: name, what it counts (HELP),
    /// value.
    pub counters: Vec<(&'static str, &'static str, u64)>,
    /// Local identities.
    pub identities: Vec<IdentitySample>,
    /// Every peer of every identity.
    pub peers: Vec<PeerSample>,
    /// The DHT node's routing table size and stored records, when it runs.
    pub dht: Option<DhtSample>,
}

/// One local identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentitySample {
    /// Its name in the state directory.
    pub name: String,
    /// Its address (`mn1…`).
    pub address: String,
}

/// The DHT node's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtSample {
    /// Peers in the routing table.
    pub peers: usize,
    /// Records in the store.
    pub records: usize,
}

/// One peer of one local identity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerSample {
    /// The local identity's name.
    pub identity: String,
    /// The peer's address (`mn1…`).
    pub address: String,
    /// Whether a usable session is up.
    pub connected: bool,
    /// Plaintext bytes received.
    pub rx_bytes: u64,
    /// Plaintext bytes sent.
    pub tx_bytes: u64,
    /// Data packets received.
    pub rx_packets: u64,
    /// Data packets sent.
    pub tx_packets: u64,
    /// Packets to the peer dropped (queue full, handshake gave up).
    pub dropped: u64,
    /// Unix time of the last completed handshake, in seconds.
    pub last_handshake: Option<f64>,
    /// Round-trip time of the last handshake we initiated.
    pub rtt: Option<Duration>,
    /// The current session's data cipher (`aes-256-gcm`, `chacha20-poly1305`).
    pub cipher: Option<String>,
}

/// Escape a label value: backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escape HELP text: backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Whether `name` may be a metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A text exposition being written: one metric family at a time.
struct Writer {
    out: String,
}

impl Writer {
    /// Start a family: its HELP and TYPE lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Totals of one identity over all its peers.
#[derive(Default)]
struct Totals {
    peers: u64,
    connected: u64,
    rx_bytes: u64,
    tx_bytes: u64,
    rx_packets: u64,
    tx_packets: u64,
    dropped: u64,
}

/// The peers that get series of their own: at most `max`, most traffic first, ties by
/// identity and address (stable between scrapes).
fn top_peers(peers: &[PeerSample], max: usize) -> Vec<&PeerSample> {
    let mut top: Vec<&PeerSample> = peers.iter().collect();
    top.sort_by(|a, b| {
        let traffic = |p: &PeerSample| p.rx_bytes.saturating_add(p.tx_bytes);
        traffic(b)
            .cmp(&traffic(a))
            .then_with(|| (&a.identity, &a.address).cmp(&(&b.identity, &b.address)))
    });
    top.truncate(max);
    top
}

/// Format `s` as Prometheus text (format 0.0.4), with at most `max_peers` peers'
/// own series.
pub fn render(s: &Snapshot, max_peers: usize) -> String {
    let mut w = Writer { out: String::new() };
    w.family(
        "metanet_build_info",
        "gauge",
        "metanetd's version, as a label; always 1.",
    );
    w.sample("metanet_build_info", &[("version", &s.version)], 1);
    for (name, help, value) in &s.counters {
        let metric = format!("metanet_{name}_total");
        if !valid_name(&metric) {
            continue;
        }
        w.single(&metric, "counter", help, value);
    }
    render_gauges(&mut w, s);
    render_identities(&mut w, s);
    render_peers(&mut w, s, max_peers);
    w.out
}

fn render_gauges(w: &mut Writer, s: &Snapshot) {
    let connected = s.peers.iter().filter(|p| p.connected).count();
    w.single(
        "metanet_identities",
        "gauge",
        "Local identities.",
        s.identities.len(),
    );
    w.single(
        "metanet_peers_known",
        "gauge",
        "Peers known, of all identities.",
        s.peers.len(),
    );
    w.single(
        "metanet_peers_connected",
        "gauge",
        "Peers with a usable session, of all identities.",
        connected,
    );
    if let Some(d) = s.dht {
        w.single(
            "metanet_dht_peers",
            "gauge",
            "Peers in the DHT routing table.",
            d.peers,
        );
        w.single(
            "metanet_dht_records",
            "gauge",
            "Records in the DHT store (own and held for others).",
            d.records,
        );
    }
}

fn render_identities(w: &mut Writer, s: &Snapshot) {
    let totals: Vec<(&IdentitySample, Totals)> = s
        .identities
        .iter()
        .map(|id| {
            let mut t = Totals::default();
            for p in s.peers.iter().filter(|p| p.identity == id.name) {
                t.peers += 1;
                t.connected += u64::from(p.connected);
                t.rx_bytes = t.rx_bytes.saturating_add(p.rx_bytes);
                t.tx_bytes = t.tx_bytes.saturating_add(p.tx_bytes);
                t.rx_packets = t.rx_packets.saturating_add(p.rx_packets);
                t.tx_packets = t.tx_packets.saturating_add(p.tx_packets);
                t.dropped = t.dropped.saturating_add(p.dropped);
            }
            (id, t)
        })
        .collect();
    type Field = fn(&Totals) -> u64;
    let families: [(&str, &str, &str, Field); 7] = [
        (
            "metanet_identity_peers",
            "gauge",
            "Peers of the identity.",
            |t| t.peers,
        ),
        (
            "metanet_identity_peers_connected",
            "gauge",
            "Peers of the identity with a usable session.",
            |t| t.connected,
        ),
        (
            "metanet_identity_rx_bytes_total",
            "counter",
            "Plaintext bytes received from the identity's current peers.",
            |t| t.rx_bytes,
        ),
        (
            "metanet_identity_tx_bytes_total",
            "counter",
            "Plaintext bytes sent to the identity's current peers.",
            |t| t.tx_bytes,
        ),
        (
            "metanet_identity_rx_packets_total",
            "counter",
            "Data packets received from the identity's current peers.",
            |t| t.rx_packets,
        ),
        (
            "metanet_identity_tx_packets_total",
            "counter",
            "Data packets sent to the identity's current peers.",
            |t| t.tx_packets,
        ),
        (
            "metanet_identity_dropped_total",
            "counter",
            "Packets to the identity's current peers dropped.",
            |t| t.dropped,
        ),
    ];
    for (name, kind, help, field) in families {
        w.family(name, kind, help);
        for (id, t) in &totals {
            w.sample(
                name,
                &[("identity", &id.name), ("address", &id.address)],
                field(t),
            );
        }
    }
}

fn render_peers(w: &mut Writer, s: &Snapshot, max_peers: usize) {
    let top = top_peers(&s.peers, max_peers);
    w.single(
        "metanet_peer_series_omitted",
        "gauge",
        &format!(
            "Peers without series of their own (only the {max_peers} with the most traffic have them)."
        ),
        s.peers.len() - top.len(),
    );
    type Field = fn(&PeerSample) -> u64;
    let counters: [(&str, &str, Field); 5] = [
        (
            "metanet_peer_rx_bytes_total",
            "Plaintext bytes received from the peer.",
            |p| p.rx_bytes,
        ),
        (
            "metanet_peer_tx_bytes_total",
            "Plaintext bytes sent to the peer.",
            |p| p.tx_bytes,
        ),
        (
            "metanet_peer_rx_packets_total",
            "Data packets received from the peer.",
            |p| p.rx_packets,
        ),
        (
            "metanet_peer_tx_packets_total",
            "Data packets sent to the peer.",
            |p| p.tx_packets,
        ),
        (
            "metanet_peer_dropped_total",
            "Packets to the peer dropped (queue full, handshake gave up).",
            |p| p.dropped,
        ),
    ];
    let labels = |p: &PeerSample| {
        [
            ("identity", p.identity.clone()),
            ("peer", p.address.clone()),
        ]
    };
    let sample = |w: &mut Writer, name: &str, p: &PeerSample, value: &dyn std::fmt::Display| {
        let l = labels(p);
        w.sample(name, &[(l[0].0, &l[0].1), (l[1].0, &l[1].1)], value);
    };
    w.family(
        "metanet_peer_connected",
        "gauge",
        "Whether the peer has a usable session (1) or not (0).",
    );
    for p in &top {
        sample(w, "metanet_peer_connected", p, &u8::from(p.connected));
    }
    for (name, help, field) in counters {
        w.family(name, "counter", help);
        for p in &top {
            sample(w, name, p, &field(p));
        }
    }
    w.family(
        "metanet_peer_last_handshake_timestamp_seconds",
        "gauge",
        "Unix time of the last completed handshake with the peer.",
    );
    for p in &top {
        if let Some(t) = p.last_handshake {
            sample(w, "metanet_peer_last_handshake_timestamp_seconds", p, &t);
        }
    }
    w.family(
        "metanet_peer_rtt_seconds",
        "gauge",
        "Round-trip time of the last handshake initiated to the peer.",
    );
    for p in &top {
        if let Some(rtt) = p.rtt {
            sample(w, "metanet_peer_rtt_seconds", p, &rtt.as_secs_f64());
        }
    }
    w.family(
        "metanet_peer_cipher_info",
        "gauge",
        "The data cipher of the peer's current session, as a label; always 1.",
    );
    for p in &top {
        if let Some(c) = &p.cipher {
            w.sample(
                "metanet_peer_cipher_info",
                &[
                    ("identity", &p.identity),
                    ("peer", &p.address),
                    ("cipher", c),
                ],
                1,
            );
        }
    }
}

/// Bounds on scrape connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Longest request head (request line and headers), bytes.
    pub max_head: usize,
    /// Time for a client to send its request head.
    pub read_timeout: Duration,
    /// Time for the main loop's snapshot and for writing the answer.
    pub answer_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16,
            max_head: 8 * 1024,
            read_timeout: Duration::from_secs(5),
            answer_timeout: Duration::from_secs(10),
        }
    }
}

/// What to answer to a request head.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics`: a scrape.
    Metrics,
    /// Anything else: a status line and a short text body.
    Error(u16, &'static str),
}

/// Route a complete request head (`\r\n\r\n` included or not).
fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::Error(400, "Bad Request");
    };
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::Error(400, "Bad Request");
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Route::Error(400, "Bad Request");
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        ("GET", _) => Route::Error(404, "Not Found"),
        _ => Route::Error(405, "Method Not Allowed"),
    }
}

/// A complete response: status line, headers (`Connection: close`), body.
fn response(code: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    let allow = if code == 405 { "Allow: GET\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

fn error_response(code: u16, reason: &str) -> Vec<u8> {
    response(
        code,
        reason,
        "text/plain; charset=utf-8",
        &format!("{code} {reason}: metanetd serves only GET /metrics\n"),
    )
}

/// Read the request head: up to the blank line, at most `max` bytes. `Ok(None)`: the
/// client closed first; `Err` with `InvalidData`: the head is too long.
async fn read_head(stream: &mut TcpStream, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(from + end + 4);
            return Ok(Some(head));
        }
        if head.len() > max {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// Serve one connection: one request, one answer, close.
async fn connection(mut stream: TcpStream, snapshots: mpsc::Sender<Request>, limits: Limits) {
    let head =
        match tokio::time::timeout(limits.read_timeout, read_head(&mut stream, limits.max_head))
            .await
        {
            Err(_) => Some(error_response(408, "Request Timeout")),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Some(error_response(431, "Request Header Fields Too Large"))
            }
            Ok(Err(_) | Ok(None)) => return,
            Ok(Ok(Some(head))) => match route(&head) {
                Route::Error(code, reason) => Some(error_response(code, reason)),
                Route::Metrics => None,
            },
        };
    let answer = async {
        let out = match head {
            Some(err) => err,
            None => scrape(&snapshots).await,
        };
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(limits.answer_timeout, answer).await;
}

/// Ask the main loop for a snapshot and format it.
async fn scrape(snapshots: &mpsc::Sender<Request>) -> Vec<u8> {
    let (tx, rx) = oneshot::channel();
    if snapshots.send(tx).await.is_err() {
        return error_response(503, "Service Unavailable");
    }
    match rx.await {
        Ok(s) => response(200, "OK", CONTENT_TYPE, &render(&s, MAX_PEER_SERIES)),
        Err(_) => error_response(503, "Service Unavailable"),
    }
}

/// Accept scrapes forever; snapshots come from the main loop through `snapshots`.
pub async fn serve(listener: TcpListener, snapshots: mpsc::Sender<Request>, limits: Limits) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Over the cap: closed at once (dropping the stream).
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let snapshots = snapshots.clone();
                tokio::spawn(async move {
                    connection(stream, snapshots, limits).await;
                    drop(slot);
                });
            }
            Err(e) => {
                let now = tokio::time::Instant::now();
                if last_warning.is_none_or(|t| now - t > Duration::from_secs(60)) {
                    tracing::warn!(error = %e, "metrics accept failed");
                    last_warning = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn peer(identity: &str, address: &str, rx: u64) -> PeerSample {
        PeerSample {
            identity: identity.into(),
            address: address.into(),
            connected: true,
            rx_bytes: rx,
            tx_bytes: 10,
            rx_packets: 3,
            tx_packets: 1,
            dropped: 2,
            last_handshake: Some(1_800_000_000.5),
            rtt: Some(Duration::from_micros(1500)),
            cipher: Some("aes-256-gcm".into()),
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            version: "0.1.0".into(),
            counters: vec![
                (
                    "malformed",
                    "Datagrams that were not valid metanet messages.",
                    4,
                ),
                ("udp_datagrams_in", "UDP datagrams received.", 9),
            ],
            identities: vec![
                IdentitySample {
                    name: "default".into(),
                    address: "mn1aaa".into(),
                },
                IdentitySample {
                    name: "other".into(),
                    address: "mn1bbb".into(),
                },
            ],
            peers: vec![
                peer("default", "mn1p1", 100),
                peer("default", "mn1p2", 5),
                peer("other", "mn1p3", 50),
            ],
            dht: Some(DhtSample {
                peers: 2,
                records: 7,
            }),
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_label("plain-name_1"), "plain-name_1");
        let mut s = snapshot();
        s.identities[0].name = "we\"ird\\\nname".into();
        let text = render(&s, 10);
        assert!(
            text.contains(
                r#"metanet_identity_peers{identity="we\"ird\\\nname",address="mn1aaa"} 0"#
            ),
            "{text}"
        );
        // No sample line is broken by a raw line feed.
        for line in text.lines() {
            assert!(
                line.starts_with("metanet_") || line.starts_with("# "),
                "{line}"
            );
        }
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render(&snapshot(), 10);
        let mut announced: Vec<String> = Vec::new();
        let mut helped: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap().into());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut f = rest.split(' ');
                let name = f.next().unwrap();
                assert_eq!(helped.last().map(String::as_str), Some(name), "HELP first");
                assert!(matches!(f.next(), Some("counter" | "gauge")), "{line}");
                assert!(!announced.iter().any(|n| n == name), "{name} twice");
                announced.push(name.into());
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(
                    announced.last().map(String::as_str),
                    Some(name),
                    "sample of the current family: {line}"
                );
            }
        }
        for want in [
            "metanet_malformed_total",
            "metanet_udp_datagrams_in_total",
            "metanet_identities",
            "metanet_peers_known",
            "metanet_peers_connected",
            "metanet_dht_peers",
            "metanet_dht_records",
            "metanet_peer_rx_bytes_total",
            "metanet_peer_rtt_seconds",
            "metanet_peer_cipher_info",
        ] {
            assert!(announced.iter().any(|n| n == want), "{want} missing");
        }
        assert!(
            text.contains("# TYPE metanet_malformed_total counter\nmetanet_malformed_total 4\n")
        );
        assert!(text.contains("metanet_peers_known 3\n"));
        assert!(text.contains("metanet_dht_records 7\n"));
    }

    #[test]
    fn peer_series_carry_identity_and_peer_and_totals_add_up() {
        let text = render(&snapshot(), 10);
        assert!(
            text.contains(r#"metanet_peer_rx_bytes_total{identity="default",peer="mn1p1"} 100"#)
        );
        assert!(text.contains(r#"metanet_peer_dropped_total{identity="other",peer="mn1p3"} 2"#));
        assert!(
            text.contains(r#"metanet_peer_rtt_seconds{identity="default",peer="mn1p1"} 0.0015"#)
        );
        assert!(text.contains(
            r#"metanet_peer_last_handshake_timestamp_seconds{identity="default",peer="mn1p1"} 1800000000.5"#
        ));
        assert!(text.contains(
            r#"metanet_peer_cipher_info{identity="default",peer="mn1p2",cipher="aes-256-gcm"} 1"#
        ));
        assert!(text.contains(
            r#"metanet_identity_rx_bytes_total{identity="default",address="mn1aaa"} 105"#
        ));
        assert!(text.contains(r#"metanet_identity_peers{identity="other",address="mn1bbb"} 1"#));
        assert!(text.contains(r#"metanet_build_info{version="0.1.0"} 1"#));
    }

    #[test]
    fn peer_series_are_bounded_to_the_busiest_peers() {
        let mut s = snapshot();
        s.peers = (0..1000)
            .map(|i| peer("default", &format!("mn1p{i}"), i))
            .collect();
        let text = render(&s, 5);
        let rx: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("metanet_peer_rx_bytes_total{"))
            .collect();
        assert_eq!(rx.len(), 5);
        assert!(rx[0].ends_with("} 999"), "{}", rx[0]);
        assert!(text.contains("metanet_peer_series_omitted 995\n"));
        // The totals still count every peer.
        assert!(
            text.contains(r#"metanet_identity_peers{identity="default",address="mn1aaa"} 1000"#)
        );
        assert!(text.len() < 16 * 1024, "{} bytes", text.len());
    }

    #[test]
    fn requests_are_routed_by_method_and_path() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(
            route(b"GET / HTTP/1.1\r\n\r\n"),
            Route::Error(404, "Not Found")
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::Error(405, "Method Not Allowed")
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::Error(405, "Method Not Allowed")
        );
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"\xff\xfe",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics SMTP\r\n\r\n",
        ] {
            assert_eq!(route(bad), Route::Error(400, "Bad Request"), "{bad:?}");
        }
        let r = String::from_utf8(error_response(405, "Method Not Allowed")).unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("\r\nAllow: GET\r\n"), "{r}");
    }

    /// One raw request to `addr`; the whole answer as text.
    async fn ask(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(request).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn the_server_answers_scrapes_and_bounds_bad_clients() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel::<Request>(4);
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(snapshot());
            }
        });
        let limits = Limits {
            max_connections: 2,
            max_head: 1024,
            read_timeout: Duration::from_millis(300),
            answer_timeout: Duration::from_secs(2),
        };
        tokio::spawn(serve(listener, tx, limits));

        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("\r\nContent-Type: {CONTENT_TYPE}\r\n")),
            "{ok}"
        );
        assert!(ok.contains("metanet_peers_known 3\n"), "{ok}");
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );

        let nf = ask(addr, b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(nf.starts_with("HTTP/1.1 404 "), "{nf}");
        let na = ask(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").await;
        assert!(na.starts_with("HTTP/1.1 405 "), "{na}");
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 4096));
        let tl = ask(addr, &big).await;
        assert!(tl.starts_with("HTTP/1.1 431 "), "{tl}");

        // Two idle clients fill the cap; a third is closed at once; once the idle ones
        // time out, scrapes work again.
        let idle1 = TcpStream::connect(addr).await.unwrap();
        let idle2 = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(refused.is_empty(), "{refused}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        drop((idle1, idle2));
    }
}
