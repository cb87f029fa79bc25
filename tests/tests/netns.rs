//! Black-box scenarios: real `metanetd` processes in network namespaces this test
//! creates, checked the way a user would (ping, TCP, exit codes). Skipped when not root.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use metanet_tests::{
    bin, ping, root_or_skip, tcp_receiver, tcp_sender, transfer_intact, wait_for, Daemon, Pair,
    TempDir,
};

const PORT: u16 = 51820;

fn connected(pair: &Pair, tmp: &TempDir) -> (Daemon, Daemon) {
    let a = Daemon::start(&pair.a, &tmp.0.join("a"), "mnta");
    let b = Daemon::start(&pair.b, &tmp.0.join("b"), "mntb");
    let (addr_b, _) = b.identity();
    let r = a.connect(&addr_b, &format!("{}:{PORT}", pair.ip_b));
    assert!(r.get("error").is_none(), "connect failed: {r}");
    (a, b)
}

#[test]
fn two_hosts_ping_each_other_by_overlay_address() {
    if !root_or_skip("two_hosts_ping_each_other_by_overlay_address") {
        return;
    }
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let (a, b) = connected(&pair, &tmp);
    let (_, ip_a) = a.identity();
    let (_, ip_b) = b.identity();
    assert!(
        wait_for(Duration::from_secs(10), || ping(&pair.a, &ip_b)),
        "A cannot ping B"
    );
    assert!(ping(&pair.b, &ip_a), "B cannot ping A");
    let peers = a.request(r#"{"id":9,"method":"peers"}"#).unwrap();
    let p = &peers["result"]["peers"][0];
    assert_eq!(p["ipv6"].as_str().unwrap(), ip_b);
    assert_eq!(p["connected"], true);
    assert!(p["rx_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn tcp_transfer_arrives_intact_and_sees_only_overlay_addresses() {
    if !root_or_skip("tcp_transfer_arrives_intact_and_sees_only_overlay_addresses") {
        return;
    }
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let (a, b) = connected(&pair, &tmp);
    let (_, ip_a) = a.identity();
    let (_, ip_b) = b.identity();
    assert!(wait_for(Duration::from_secs(10), || ping(&pair.a, &ip_b)));
    let (srv, out) = tcp_receiver(&pair.b, &tmp, &ip_b);
    let sender = tcp_sender(&pair.a, &ip_b, 100, 0.0, &tmp.0.join("sent.txt"));
    let peer = transfer_intact(sender, srv, &out, 100);
    // The receiving application saw A's overlay address, never its underlay IP.
    assert_eq!(peer, ip_a);
    assert_ne!(peer, pair.ip_a);
}

#[test]
fn restarted_daemon_keeps_its_identity_and_traffic_resumes() {
    if !root_or_skip("restarted_daemon_keeps_its_identity_and_traffic_resumes") {
        return;
    }
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let (a, mut b) = connected(&pair, &tmp);
    let (addr_b, ip_b) = b.identity();
    assert!(wait_for(Duration::from_secs(10), || ping(&pair.a, &ip_b)));
    assert_eq!(b.stop(), Some(0), "SIGTERM must stop metanetd cleanly");
    assert!(!b.socket.exists(), "socket removed on shutdown");
    let b2 = Daemon::start(&pair.b, &tmp.0.join("b"), "mntb");
    assert_eq!(
        b2.identity(),
        (addr_b, ip_b.clone()),
        "same identity after restart"
    );
    // No operator action: A notices the dead session and handshakes again.
    assert!(
        wait_for(Duration::from_secs(40), || ping(&pair.a, &ip_b)),
        "traffic did not resume"
    );
    drop(a);
}

#[test]
fn bad_input_gives_clear_errors_and_exit_codes() {
    if !root_or_skip("bad_input_gives_clear_errors_and_exit_codes") {
        return;
    }
    let (pair, tmp) = (Pair::new(), TempDir::new());
    // Unknown config key: exit 2, message names the key.
    let cfg = tmp.0.join("bad.toml");
    std::fs::write(&cfg, "port = 1\nbogus-key = true\n").unwrap();
    let out = pair
        .a
        .cmd(&bin("metanetd"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus-key"));
    // A second daemon on the same socket: exit 3, the first keeps running.
    let a = Daemon::start(&pair.a, &tmp.0.join("a"), "mnta");
    let out = pair
        .a
        .cmd(&bin("metanetd"))
        .args(["--config", "/dev/null", "--tun", "mntx", "--port", "51999"])
        .arg("--state-dir")
        .arg(&a.state_dir)
        .arg("--socket")
        .arg(&a.socket)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already serving"));
    assert!(
        a.request(r#"{"id":1,"method":"status"}"#).is_some(),
        "first daemon still answers"
    );
    // Malformed address text: a clear error, nothing changes.
    let r = a.connect("mn1notanaddress", "198.18.0.2:51820");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("bad address"));
    // A key file others can read is refused (exit 2), and is not modified.
    let key = a.state_dir.join("identities/default.key");
    let before = std::fs::read(&key).unwrap();
    drop(a);
    Command::new("chmod").arg("644").arg(&key).status().unwrap();
    let out = pair
        .a
        .cmd(&bin("metanetd"))
        .args(["--config", "/dev/null", "--tun", "mnty"])
        .arg("--state-dir")
        .arg(tmp.0.join("a/state"))
        .arg("--socket")
        .arg(tmp.0.join("a/x.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    assert_eq!(std::fs::read(&key).unwrap(), before, "key file untouched");
}

/// What `metanet peers --json` shows on `d`.
fn peers(d: &Daemon) -> Vec<serde_json::Value> {
    let out = d.cli(&["peers", "--json"]);
    assert!(
        out.status.success(),
        "metanet peers failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().clone()
}

/// The entry for `address` in `metanet peers --json` on `d`, if any.
fn peer(d: &Daemon, address: &str) -> Option<serde_json::Value> {
    peers(d).into_iter().find(|p| p["address"] == address)
}

#[test]
fn underlay_address_change_mid_transfer_roams() {
    if !root_or_skip("underlay_address_change_mid_transfer_roams") {
        return;
    }
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let (a, b) = connected(&pair, &tmp);
    let (addr_a, ip_a) = a.identity();
    let (_, ip_b) = b.identity();
    assert!(wait_for(Duration::from_secs(10), || ping(&pair.a, &ip_b)));
    let old = format!("{}:{PORT}", pair.ip_a);
    assert_eq!(peer(&b, &addr_a).unwrap()["endpoint"], old.as_str());

    // 64 MiB, paced so the address change surely falls in the middle.
    const MIB: u32 = 64;
    let (srv, out) = tcp_receiver(&pair.b, &tmp, &ip_b);
    let progress = tmp.0.join("sent.txt");
    let sender = tcp_sender(&pair.a, &ip_b, MIB, 0.05, &progress);
    let sent = || {
        std::fs::read_to_string(&progress)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(30), || sent() >= 16),
        "transfer did not start"
    );
    // A's underlay address changes: the old one is gone, a new one in the same subnet
    // takes its place (with it the connected route, now with the new source).
    let new_ip = format!("{}.3", pair.ip_a.rsplit_once('.').unwrap().0);
    let change = pair.a.sh(&format!(
        "ip addr del {}/24 dev {dev} && ip addr add {new_ip}/24 dev {dev}",
        pair.ip_a,
        dev = pair.dev_a
    ));
    assert!(
        change.status.success(),
        "address change failed: {}",
        String::from_utf8_lossy(&change.stderr)
    );
    assert!(
        sent() < MIB,
        "the transfer ended before the address changed"
    );

    let from = transfer_intact(sender, srv, &out, MIB);
    assert_eq!(from, ip_a, "the receiver still sees A's overlay address");
    // B learnt A's new endpoint from A's authenticated packets, and the session is up.
    let new = format!("{new_ip}:{PORT}");
    let p = peer(&b, &addr_a).unwrap();
    assert_eq!(p["endpoint"], new.as_str(), "B did not roam: {p}");
    assert_eq!(p["connected"], true);
    // And traffic still flows both ways at the new address.
    assert!(ping(&pair.b, &ip_a), "B cannot reach A after the roam");
}

#[test]
fn peer_with_wrong_key_gets_no_tunnel() {
    if !root_or_skip("peer_with_wrong_key_gets_no_tunnel") {
        return;
    }
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let mut a = Daemon::start(&pair.a, &tmp.0.join("a"), "mnta");
    let b = Daemon::start(&pair.b, &tmp.0.join("b"), "mntb");
    let (addr_x, ip_x) = b.identity();
    // Identity Y is made elsewhere, with no daemon: nobody on the network holds it.
    let y_dir = tmp.0.join("y");
    let metanet_y = |args: &[&str]| {
        let out = Command::new(bin("metanet"))
            .arg("--socket")
            .arg(y_dir.join("none.sock"))
            .arg("--state-dir")
            .arg(y_dir.join("state"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "metanet {args:?}: {out:?}");
        out.stdout
    };
    metanet_y(&["id", "new"]);
    let y: serde_json::Value =
        serde_json::from_slice(&metanet_y(&["id", "show", "--json"])).unwrap();
    let (addr_y, ip_y) = (y["address"].as_str().unwrap(), y["ipv6"].as_str().unwrap());
    assert_ne!(addr_y, addr_x);
    let endpoint_b = format!("{}:{PORT}", pair.ip_b);
    let y_up = |d: &Daemon| peer(d, addr_y).is_some_and(|p| p["connected"] == true);
    // Pinging Y fails within a bounded wait (unreachable at once, or no reply).
    let ping_y_fails = |d: &Daemon| {
        let t = Instant::now();
        let out = pair
            .a
            .sh(&format!("timeout 15 ping -6 -c 2 -i 0.2 -W 2 {ip_y}"));
        assert!(!out.status.success(), "ping to Y answered: {out:?}");
        assert!(t.elapsed() < Duration::from_secs(15));
        assert!(!y_up(d), "a session with Y is up");
    };

    // `metanet connect` to Y at B's endpoint: B answers no record for Y, so the
    // command fails, naming the address and the endpoint.
    let t = Instant::now();
    let out = a.cli(&["connect", addr_y, "--endpoint", &endpoint_b]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(0),
        "connect to Y succeeded: {out:?}"
    );
    assert_ne!(out.status.code(), Some(124), "connect to Y hung");
    assert!(
        err.contains(addr_y) && err.contains(&endpoint_b),
        "unclear error: {err}"
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    ping_y_fails(&a);
    assert!(peers(&b).is_empty(), "B took A as a peer: {:?}", peers(&b));
    // The endpoint itself is fine: B's own address connects there.
    let out = a.cli(&["connect", &addr_x, "--endpoint", &endpoint_b]);
    assert!(out.status.success(), "connect to B failed: {out:?}");
    assert!(wait_for(Duration::from_secs(10), || ping(&pair.a, &ip_x)));
    assert!(!y_up(&a));

    // The same through a static peer in A's config: no tunnel comes up while A tries,
    // and after it gives up Y stays unreachable.
    assert_eq!(a.stop(), Some(0));
    let cfg = tmp.0.join("a.toml");
    std::fs::write(
        &cfg,
        format!("[[peer]]\naddress = \"{addr_y}\"\nendpoint = \"{endpoint_b}\"\n"),
    )
    .unwrap();
    let a = Daemon::start_with_config(&pair.a, &tmp.0.join("a"), "mnta", &cfg);
    let log = || std::fs::read_to_string(&a.log).unwrap_or_default();
    let mut up = false;
    let gave_up = wait_for(Duration::from_secs(25), || {
        up |= y_up(&a);
        up || log().contains("no valid record")
    });
    assert!(!up, "a session with Y came up");
    assert!(gave_up, "A never gave up on Y: {}", log());
    ping_y_fails(&a);
}
