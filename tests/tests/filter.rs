//! The overlay filter against a neighbour on the underlay: B sends plain IPv6 with its
//! own overlay source straight to A's veth (not through the tunnel), to a UDP service
//! bound to A's overlay address. With the filter (the default) it is dropped and
//! counted; the same datagram through the tunnel arrives; with `overlay-filter = false`
//! the forged one gets through (what the filter closes). Needs root and nft.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use metanet_tests::{ping, root_or_skip, wait_for, Daemon, Netns, Pair, TempDir};

/// Kills the listener on every exit path.
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP listener on `[ip]:7000` in `ns` that appends "source payload" lines to a file
/// (and exits after 60 s without a datagram).
fn listener(ns: &Netns, tmp: &TempDir, ip: &str) -> (Listener, PathBuf) {
    let out = tmp.0.join("got.txt");
    let _ = std::fs::remove_file(&out);
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
         s.bind(('{ip}',7000))\ns.settimeout(60)\nopen('{o}','w').close()\n\
         while True:\n  d,a=s.recvfrom(2048)\n  f=open('{o}','a');f.write(a[0]+' '+d.decode()+'\\n');f.close()\n",
        o = out.display()
    );
    let child = Listener(
        ns.cmd(Path::new("python3"))
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for(Duration::from_secs(10), || out.exists()));
    (child, out)
}

fn send(ns: &Netns, src: &str, dst: &str, payload: &str) {
    let o = ns.sh(&format!(
        "python3 -c \"import socket;s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);\
         s.bind(('{src}',0));[s.sendto(b'{payload}',('{dst}',7000)) for _ in range(3)]\""
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn got(out: &Path) -> String {
    std::fs::read_to_string(out).unwrap_or_default()
}

#[test]
fn packets_with_overlay_addresses_from_the_lan_are_dropped() {
    if !root_or_skip("packets_with_overlay_addresses_from_the_lan_are_dropped") {
        return;
    }
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let dev_b = format!("{}b", pair.dev_a.trim_end_matches('a'));
    let mut a = Daemon::start(&pair.a, &tmp.0.join("a"), "mnla");
    let b = Daemon::start(&pair.b, &tmp.0.join("b"), "mnlb");
    let (addr_a, ip_a) = a.identity();
    let (_, ip_b) = b.identity();
    let o = b.cli(&[
        "connect",
        &addr_a,
        "--endpoint",
        &format!("{}:51820", pair.ip_a),
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(wait_for(Duration::from_secs(10), || ping(&pair.b, &ip_a)));

    let table = "metanet_mnla";
    let listing = pair.a.sh(&format!("nft list table ip6 {table}"));
    assert!(
        listing.status.success(),
        "no overlay filter table in A's namespace"
    );

    let (srv, out) = listener(&pair.a, &tmp, &ip_a);
    // Through the tunnel: arrives, from B's overlay address.
    send(&pair.b, &ip_b, &ip_a, "tunnel");
    assert!(wait_for(Duration::from_secs(5), || got(&out).contains("tunnel")));
    assert!(
        got(&out).contains(&format!("{ip_b} tunnel")),
        "{}",
        got(&out)
    );

    // B as a plain LAN neighbour: a host route to A's overlay address over the veth,
    // next hop A's link-local address, source B's overlay address. No tunnel, no key.
    let ll = pair.a.sh(&format!(
        "ip -6 -o addr show dev {} scope link | awk '{{print $4}}' | cut -d/ -f1",
        pair.dev_a
    ));
    let ll = String::from_utf8_lossy(&ll.stdout).trim().to_owned();
    assert!(ll.starts_with("fe80"), "A's link-local: {ll:?}");
    let route = pair.b.sh(&format!(
        "ip -6 route add {ip_a}/128 via {ll} dev {dev_b} src {ip_b}"
    ));
    assert!(
        route.status.success(),
        "{}",
        String::from_utf8_lossy(&route.stderr)
    );
    let path = pair.b.sh(&format!("ip -6 route get {ip_a}"));
    assert!(String::from_utf8_lossy(&path.stdout).contains(&dev_b));
    // The neighbour entry first (DAD on fresh links can hold the first datagrams).
    let nd = format!("ping -6 -c 1 -W 2 {ll}%{dev_b}");
    assert!(wait_for(Duration::from_secs(10), || pair
        .b
        .sh(&nd)
        .status
        .success()));
    let table_text = || {
        let o = pair.a.sh(&format!("nft list table ip6 {table}"));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let dropped = || {
        table_text()
            .lines()
            .any(|l| l.contains("daddr @local") && !l.contains("packets 0 "))
    };
    let counted = wait_for(Duration::from_secs(10), || {
        send(&pair.b, &ip_b, &ip_a, "forged");
        dropped()
    });
    assert!(counted, "the filter counted nothing: {}", table_text());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !got(&out).contains("forged"),
        "the forged datagram arrived: {}",
        got(&out)
    );
    drop(srv);

    // The table goes with the daemon.
    assert_eq!(a.stop(), Some(0));
    assert!(!pair
        .a
        .sh(&format!("nft list table ip6 {table}"))
        .status
        .success());

    // Without the filter the same forged datagram reaches the application: the hole
    // this closes.
    let cfg = tmp.0.join("nofilter.toml");
    std::fs::write(&cfg, "overlay-filter = false\n").unwrap();
    let _a = Daemon::start_with_config(&pair.a, &tmp.0.join("a"), "mnla", &cfg);
    let (srv, out) = listener(&pair.a, &tmp, &ip_a);
    assert!(
        wait_for(Duration::from_secs(10), || {
            send(&pair.b, &ip_b, &ip_a, "forged");
            got(&out).contains("forged")
        }),
        "without the filter the forged datagram did not arrive either: the test proves nothing"
    );
    drop(srv);
}
