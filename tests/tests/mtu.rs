//! Path MTU: the tunnel MTU follows the underlay, and a packet that would not fit once
//! sealed is answered with ICMPv6 Packet Too Big, so applications never black-hole.
//! Real daemons in namespaces; skipped when not root.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use metanet_tests::{
    ping, root_or_skip, tcp_receiver, tcp_sender, transfer_intact, wait_for, Daemon, Pair, TempDir,
};

const PORT: u16 = 51820;

/// Both veth ends at `mtu`.
fn shrink(pair: &Pair, mtu: u32) {
    for ns in [&pair.a, &pair.b] {
        let out = ns.sh(&format!(
            "for d in $(ls /sys/class/net | grep -v lo); do ip link set $d mtu {mtu}; done"
        ));
        assert!(out.status.success());
    }
}

fn link_mtu(pair: &Pair, dev: &str) -> u32 {
    let out = pair.a.sh(&format!("cat /sys/class/net/{dev}/mtu"));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn tunnel_mtu_follows_the_underlay() {
    if !root_or_skip("tunnel_mtu_follows_the_underlay") {
        return;
    }
    let (pair, tmp) = (Pair::new(), TempDir::new());
    shrink(&pair, 1420);
    let a = Daemon::start(&pair.a, &tmp.0.join("a"), "mnma");
    let b = Daemon::start(&pair.b, &tmp.0.join("b"), "mnmb");
    assert_eq!(
        link_mtu(&pair, "mnma"),
        1296,
        "1420 underlay - 124 overhead (80 and a relay header)"
    );
    let (addr_b, ip_b) = b.identity();
    let r = a.connect(&addr_b, &format!("{}:{PORT}", pair.ip_b));
    assert!(r.get("error").is_none(), "{r}");
    assert!(wait_for(Duration::from_secs(10), || ping(&pair.a, &ip_b)));
    // A full-size packet (1248 + 8 ICMP + 40 IPv6 = 1296) crosses unfragmented.
    let out = pair
        .a
        .sh(&format!("ping -6 -c 2 -W 2 -s 1248 -M do {ip_b}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn oversized_packets_get_packet_too_big_and_tcp_still_flows() {
    if !root_or_skip("oversized_packets_get_packet_too_big_and_tcp_still_flows") {
        return;
    }
    let (pair, tmp) = (Pair::new(), TempDir::new());
    shrink(&pair, 1420);
    // The operator forces a tunnel MTU the underlay cannot carry.
    let cfg = tmp.0.join("mtu.toml");
    std::fs::write(&cfg, "mtu = 1420\n").unwrap();
    let a = Daemon::start_with_config(&pair.a, &tmp.0.join("a"), "mnpa", &cfg);
    let b = Daemon::start_with_config(&pair.b, &tmp.0.join("b"), "mnpb", &cfg);
    let (addr_b, ip_b) = b.identity();
    let (_, ip_a) = a.identity();
    let r = a.connect(&addr_b, &format!("{}:{PORT}", pair.ip_b));
    assert!(r.get("error").is_none(), "{r}");
    assert!(wait_for(Duration::from_secs(10), || ping(&pair.a, &ip_b)));
    // 1350 + 48 = 1398 bytes: fits the TUN, not the underlay once sealed.
    let out = pair
        .a
        .sh(&format!("ping -6 -c 2 -W 2 -s 1350 -M do {ip_b}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an oversized ping got through: {text}"
    );
    assert!(
        text.contains("mtu=1296") || text.contains("mtu = 1296"),
        "no Packet Too Big with the MTU that fits: {text}"
    );
    assert!(a.counter("too_big") > 0);
    // TCP discovers the path MTU and moves data intact.
    let (rx, out_file) = tcp_receiver(&pair.b, &tmp, &ip_b);
    let progress = tmp.0.join("progress");
    let tx = tcp_sender(&pair.a, &ip_b, 8, 0.0, &progress);
    assert_eq!(transfer_intact(tx, rx, &out_file, 8), ip_a);
}
