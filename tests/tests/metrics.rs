//! The metrics endpoint: two daemons with `metrics-listen` on loopback (one by flag,
//! one by config key), connected and pinging; a real scrape of `/metrics` shows the
//! peer's traffic and passes `promtool check metrics`. Skipped when not root.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use metanet_tests::{ping, root_or_skip, wait_for, Daemon, Netns, Pair, TempDir};

const PORT: u16 = 51820;

/// Send `request` to `addr` from inside `ns` with python3; the raw answer (empty when
/// the server closed without one).
fn http(ns: &Netns, addr: &str, request: &str) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let script = format!(
        "import socket,sys\n\
         s=socket.create_connection(('{host}',{port}),timeout=10)\n\
         s.sendall(sys.stdin.buffer.read())\n\
         out=b''\n\
         while True:\n  d=s.recv(65536)\n  if not d: break\n  out+=d\n\
         sys.stdout.buffer.write(out)\n"
    );
    let mut child = ns
        .cmd(std::path::Path::new("timeout"))
        .args(["20", "python3", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "request to {addr} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `GET /metrics`: the answer's head and body.
fn scrape(ns: &Netns, addr: &str) -> (String, String) {
    let answer = http(
        ns,
        addr,
        "GET /metrics HTTP/1.1\r\nHost: metanet\r\nAccept: text/plain\r\n\r\n",
    );
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// The value of the sample line starting with `series` (name and labels).
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics` on `body`; fails the test on any problem it reports.
/// Skipped (with a message) when promtool is not installed.
fn promtool_check(body: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!(
            "SKIP promtool check: promtool not installed (Debian package `prometheus`; .ci/run installs it)"
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics found problems:\n{said}\n--- scrape ---\n{body}"
    );
}

#[test]
fn metrics_endpoint_shows_peer_traffic_and_passes_promtool() {
    if !root_or_skip("metrics_endpoint_shows_peer_traffic_and_passes_promtool") {
        return;
    }
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let metrics_a = "127.0.0.1:9474";
    let metrics_b = "[::1]:9475";
    let a = Daemon::start_with(
        &pair.a,
        &tmp.0.join("a"),
        "mnma",
        std::path::Path::new("/dev/null"),
        &["--metrics-listen", metrics_a],
    );
    std::fs::create_dir_all(tmp.0.join("b")).unwrap();
    let cfg_b = tmp.0.join("b").join("metanetd.toml");
    std::fs::write(&cfg_b, format!("metrics-listen = \"{metrics_b}\"\n")).unwrap();
    let b = Daemon::start_with_config(&pair.b, &tmp.0.join("b"), "mnmb", &cfg_b);
    let (addr_a, _) = a.identity();
    let (addr_b, ip_b) = b.identity();
    let r = a.connect(&addr_b, &format!("{}:{PORT}", pair.ip_b));
    assert!(r.get("error").is_none(), "connect failed: {r}");
    assert!(
        wait_for(Duration::from_secs(10), || ping(&pair.a, &ip_b)),
        "A cannot ping B"
    );

    let (head, body) = scrape(&pair.a, metrics_a);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let peer = format!("{{identity=\"default\",peer=\"{addr_b}\"}}");
    let rx = value(&body, &format!("metanet_peer_rx_bytes_total{peer}"));
    assert!(rx.is_some_and(|v| v > 0.0), "rx bytes {rx:?} in\n{body}");
    let tx = value(&body, &format!("metanet_peer_tx_packets_total{peer}"));
    assert!(tx.is_some_and(|v| v >= 3.0), "tx packets {tx:?}");
    assert_eq!(
        value(&body, &format!("metanet_peer_connected{peer}")),
        Some(1.0)
    );
    assert!(value(
        &body,
        &format!("metanet_peer_last_handshake_timestamp_seconds{peer}")
    )
    .is_some_and(|t| t > 1.0e9));
    assert!(
        body.contains(&format!(
            "metanet_peer_cipher_info{{identity=\"default\",peer=\"{addr_b}\",cipher=\""
        )),
        "{body}"
    );
    assert!(value(&body, "metanet_udp_datagrams_in_total").is_some_and(|v| v > 0.0));
    assert_eq!(value(&body, "metanet_peers_connected"), Some(1.0));
    assert_eq!(value(&body, "metanet_identities"), Some(1.0));
    assert!(value(&body, "metanet_dht_peers").is_some(), "{body}");
    assert!(value(
        &body,
        &format!("metanet_identity_rx_bytes_total{{identity=\"default\",address=\"{addr_a}\"}}")
    )
    .is_some_and(|v| v > 0.0));
    // Every counter of `metanet status --json` is a series.
    let status = a.request(r#"{"id":5,"method":"status"}"#).unwrap();
    for c in status["result"]["counters"].as_object().unwrap().keys() {
        let name = format!("metanet_{c}_total");
        assert!(
            body.contains(&format!("# TYPE {name} counter\n")),
            "{name} missing"
        );
    }
    promtool_check(&body);

    // B, configured by the file on IPv6 loopback, sees A's traffic too.
    let (head, body_b) = scrape(&pair.b, metrics_b);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let rx = value(
        &body_b,
        &format!("metanet_peer_rx_bytes_total{{identity=\"default\",peer=\"{addr_a}\"}}"),
    );
    assert!(rx.is_some_and(|v| v > 0.0), "B's rx bytes {rx:?}");
    promtool_check(&body_b);

    // Other paths and methods, oversized heads.
    let nf = http(&pair.a, metrics_a, "GET / HTTP/1.1\r\n\r\n");
    assert!(nf.starts_with("HTTP/1.1 404 "), "{nf}");
    let na = http(&pair.a, metrics_a, "POST /metrics HTTP/1.1\r\n\r\n");
    assert!(na.starts_with("HTTP/1.1 405 "), "{na}");
    let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let tl = http(&pair.a, metrics_a, &big);
    assert!(
        tl.is_empty() || tl.starts_with("HTTP/1.1 431 "),
        "{}",
        &tl[..tl.len().min(200)]
    );
    // The daemon still answers after all that.
    assert!(a.request(r#"{"id":6,"method":"status"}"#).is_some());

    // A reload that moves the endpoint names it as needing a restart and keeps serving
    // where it was.
    std::fs::write(&cfg_b, "metrics-listen = \"[::1]:9476\"\n").unwrap();
    b.reload();
    assert!(
        wait_for(Duration::from_secs(5), || {
            let log = metanet_tests::log(&b);
            log.contains("configuration reloaded") && log.contains("metrics-listen")
        }),
        "reload did not name metrics-listen: {}",
        metanet_tests::log(&b)
    );
    let (head, _) = scrape(&pair.b, metrics_b);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
}

#[test]
fn bad_metrics_listen_is_refused_with_the_reason() {
    // Checking a config touches no device: no root needed.
    let tmp = TempDir::new();
    let cfg = tmp.0.join("bad.toml");
    std::fs::write(&cfg, "metrics-listen = \"localhost:9474\"\n").unwrap();
    let out = Command::new(metanet_tests::bin("metanetd"))
        .arg("--check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics-listen"), "{err}");
    let out = Command::new(metanet_tests::bin("metanetd"))
        .args(["--config", "/dev/null", "--metrics-listen", "127.0.0.1:0"])
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port 0"));
}
