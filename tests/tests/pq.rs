//! The hybrid ML-KEM handshake between real daemons in namespaces (docs/protocol.md
//! §5.7): two default daemons (`pq = auto`) handshake hybrid (`peers --json` says
//! `"pq": "ml-kem-512"`) and carry TCP intact; `--pq off` against the default is
//! classical (`"pq": null`) and carries TCP intact; `--pq required` against `--pq off`
//! never gets a session. Skipped when not root.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use metanet_tests::{
    log, ping, root_or_skip, tcp_receiver, tcp_sender, transfer_intact, wait_for, Daemon, Pair,
    TempDir,
};

const PORT: u16 = 51820;

/// One pair of namespaces at a time (2-core CI machines).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A and B started with the given flags, A told B's endpoint. `connect` waits for
/// the handshake: when none can complete, its answer is an error or a timeout.
fn start(
    pair: &Pair,
    tmp: &TempDir,
    flags_a: &[&str],
    flags_b: &[&str],
    session: bool,
) -> (Daemon, Daemon) {
    let none = Path::new("/dev/null");
    let a = Daemon::start_with(&pair.a, &tmp.0.join("a"), "mnqa", none, flags_a);
    let b = Daemon::start_with(&pair.b, &tmp.0.join("b"), "mnqb", none, flags_b);
    let (addr_b, _) = b.identity();
    if session {
        let r = a.connect(&addr_b, &format!("{}:{PORT}", pair.ip_b));
        assert!(r.get("error").is_none(), "connect failed: {r}");
    } else {
        let line = format!(
            r#"{{"id":3,"method":"connect","params":{{"address":"{addr_b}","endpoint":"{}:{PORT}","identity":null}}}}"#,
            pair.ip_b
        );
        let r = a.request(&line);
        assert!(
            r.as_ref().is_none_or(|v| v.get("error").is_some()),
            "connect succeeded: {r:?}"
        );
    }
    (a, b)
}

/// The `pq` field of `d`'s only peer in `peers --json` (the field must be present).
fn pq_of(d: &Daemon) -> serde_json::Value {
    let peers = d.cli_json(&["peers"]);
    let p = &peers.as_array().unwrap()[0];
    assert!(p.get("pq").is_some(), "no pq field: {peers}");
    p["pq"].clone()
}

/// A reaches B and 8 MiB of TCP arrive intact; returns both sides' `pq` fields.
fn carries_tcp(pair: &Pair, tmp: &TempDir, a: &Daemon, b: &Daemon) -> (String, String) {
    let (_, ip_b) = b.identity();
    assert!(
        wait_for(Duration::from_secs(15), || ping(&pair.a, &ip_b)),
        "A cannot ping B: {}\n{}",
        log(a),
        log(b)
    );
    let (receiver, out) = tcp_receiver(&pair.b, tmp, &ip_b);
    let sender = tcp_sender(&pair.a, &ip_b, 8, 0.0, &tmp.0.join("progress"));
    transfer_intact(sender, receiver, &out, 8);
    (pq_of(a).to_string(), pq_of(b).to_string())
}

#[test]
fn two_default_daemons_handshake_hybrid_and_carry_tcp_intact() {
    if !root_or_skip("two_default_daemons_handshake_hybrid_and_carry_tcp_intact") {
        return;
    }
    let _serial = serial();
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let (a, b) = start(&pair, &tmp, &[], &[], true);
    let (pa, pb) = carries_tcp(&pair, &tmp, &a, &b);
    assert_eq!(
        (pa.as_str(), pb.as_str()),
        ("\"ml-kem-512\"", "\"ml-kem-512\"")
    );
    assert!(b.counter("kem_encapsulations") >= 1);
    assert_eq!(b.counter("pq_refused"), 0);
    // The table shows it too.
    let table = String::from_utf8_lossy(&a.cli(&["peers"]).stdout).into_owned();
    assert!(
        table.contains("PQ") && table.contains("ml-kem-512"),
        "{table}"
    );
}

#[test]
fn pq_off_against_the_default_is_classical_and_carries_tcp_intact() {
    if !root_or_skip("pq_off_against_the_default_is_classical_and_carries_tcp_intact") {
        return;
    }
    let _serial = serial();
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let (a, b) = start(&pair, &tmp, &[], &["--pq", "off"], true);
    let (pa, pb) = carries_tcp(&pair, &tmp, &a, &b);
    assert_eq!((pa.as_str(), pb.as_str()), ("null", "null"));
    assert_eq!(b.counter("kem_encapsulations"), 0);
}

#[test]
fn pq_required_against_pq_off_gets_no_session() {
    if !root_or_skip("pq_required_against_pq_off_gets_no_session") {
        return;
    }
    let _serial = serial();
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let (a, b) = start(&pair, &tmp, &["--pq", "required"], &["--pq", "off"], false);
    let (_, ip_b) = b.identity();
    // Both ends try (A initiates; B answers, and initiates back to reply).
    assert!(!ping(&pair.a, &ip_b));
    assert!(
        wait_for(Duration::from_secs(10), || a.counter("pq_refused") >= 1),
        "A refused nothing: {}",
        log(&a)
    );
    assert!(!ping(&pair.a, &ip_b), "a session came up");
    let peers = a.cli_json(&["peers"]);
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["connected"] == false),
        "{peers}"
    );
}
