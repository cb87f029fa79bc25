//! Black-box scenarios: real `metanetd` processes in network namespaces this test
//! creates, checked the way a user would (ping, TCP, exit codes). Skipped when not root.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use metanet_tests::{bin, root_or_skip, wait_for, Daemon, Pair, TempDir};

const PORT: u16 = 51820;

fn ping(ns: &metanet_tests::Netns, ip: &str) -> bool {
    ns.sh(&format!("ping -6 -c 3 -i 0.2 -W 2 {ip}"))
        .status
        .success()
}

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
    // Receiver in B: accept one connection, hash everything, report the peer address.
    let out = tmp.0.join("recv.txt");
    let server = format!(
        "import socket,hashlib\ns=socket.socket(socket.AF_INET6)\ns.bind(('{ip_b}',5001))\ns.listen(1)\n\
         open('{o}.ready','w').close()\nc,peer=s.accept()\nh=hashlib.sha256();n=0\n\
         while True:\n  d=c.recv(1<<20)\n  if not d: break\n  h.update(d);n+=len(d)\n\
         open('{o}','w').write(peer[0]+' '+str(n)+' '+h.hexdigest())\n",
        o = out.display()
    );
    let mut srv = pair
        .b
        .cmd(std::path::Path::new("timeout"))
        .args(["120", "python3", "-c", &server])
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || tmp
        .0
        .join("recv.txt.ready")
        .exists()));
    let client = format!(
        "import socket,hashlib,os\nc=socket.create_connection(('{ip_b}',5001))\nh=hashlib.sha256()\n\
         blk=os.urandom(1<<20)\nfor i in range(100):\n  b=bytes([i])+blk[1:]\n  h.update(b);c.sendall(b)\n\
         c.close()\nprint(h.hexdigest())\n"
    );
    let sent = pair
        .a
        .cmd(std::path::Path::new("timeout"))
        .args(["120", "python3", "-c", &client])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "sender failed: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let sent_hash = String::from_utf8_lossy(&sent.stdout).trim().to_owned();
    let _ = srv.wait();
    let got = std::fs::read_to_string(&out).unwrap();
    let parts: Vec<&str> = got.split_whitespace().collect();
    assert_eq!(parts[1], (100u64 << 20).to_string(), "byte count");
    assert_eq!(parts[2], sent_hash, "content hash");
    // The receiving application saw A's overlay address, never its underlay IP.
    assert_eq!(parts[0], ip_a);
    assert_ne!(parts[0], pair.ip_a);
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
