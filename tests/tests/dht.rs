//! Registry scenarios: real `metanetd` processes on one Ethernet segment (a bridge in a
//! namespace), host 0 the bootstrap node, the others joining through it. Hosts find each
//! other by address alone through the DHT. Skipped when not root.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Stdio};
use std::time::Duration;

use metanet_tests::{
    bin, log, ping, resolve, root_or_skip, tcp_receiver, tcp_sender, transfer_intact, wait_for,
    DhtNet as Net,
};

const PORT: u16 = 51820;
const DHT_PORT: u16 = 51821;

#[test]
fn address_alone_reaches_a_peer_through_the_dht() {
    if !root_or_skip("address_alone_reaches_a_peer_through_the_dht") {
        return;
    }
    // Host 2 offers a service; its record carries it.
    let net = Net::start(5, |i| {
        if i == 2 {
            "[[identity]]\nname = \"default\"\n[[identity.service]]\nname = \"web\"\nprotocol = \"tcp\"\nport = 5001\n".into()
        } else {
            String::new()
        }
    });
    let (addr2, ip2) = net.addr(2);
    let (_, ip1) = net.addr(1);
    assert!(
        net.resolves(1, 2, &net.lan.ips[2], Duration::from_secs(20)),
        "host 1 cannot resolve host 2: {}",
        log(&net.daemons[1])
    );

    // What `metanet resolve` shows: the verified record with its service.
    let rec = resolve(&net.daemons[1], &addr2).unwrap();
    assert_eq!(rec["address"], addr2.as_str());
    assert_eq!(rec["ipv6"], ip2.as_str());
    assert_eq!(rec["services"][0]["name"], "web");
    assert_eq!(rec["services"][0]["port"], 5001);
    assert!(rec["source"].as_str().unwrap().starts_with("dht"), "{rec}");
    // By overlay IPv6, the same record.
    let by_ip = resolve(&net.daemons[1], &ip2).unwrap();
    assert_eq!(by_ip["address"], addr2.as_str());

    // `metanet connect <address>` with no endpoint, then ping and TCP.
    let out = net.daemons[1].cli(&["connect", &addr2]);
    assert!(
        out.status.success(),
        "connect by address failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_for(Duration::from_secs(10), || ping(&net.lan.hosts[1], &ip2)),
        "host 1 cannot ping host 2 by address"
    );
    let (rx, out_file) = tcp_receiver(&net.lan.hosts[2], &net.tmp, &ip2);
    let progress = net.tmp.0.join("progress");
    let tx = tcp_sender(&net.lan.hosts[1], &ip2, 8, 0.0, &progress);
    let peer = transfer_intact(tx, rx, &out_file, 8);
    assert_eq!(
        peer, ip1,
        "receiver saw {peer}, not host 1's overlay address"
    );

    // A name that is nowhere in the registry fails clearly.
    let nobody = net.tmp.0.join("nobody");
    let made = std::process::Command::new(bin("metanet"))
        .arg("--state-dir")
        .arg(&nobody)
        .args([
            "--socket",
            "/nonexistent/metanet.sock",
            "--json",
            "id",
            "new",
            "x",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let out = net.daemons[1].cli(&["resolve", v["address"].as_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not resolved"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn overlay_ipv6_alone_resolves_on_demand() {
    if !root_or_skip("overlay_ipv6_alone_resolves_on_demand") {
        return;
    }
    let net = Net::start(5, |_| String::new());
    let (_, ip4) = net.addr(4);
    let (_, ip3) = net.addr(3);
    assert!(net.resolves(3, 4, &net.lan.ips[4], Duration::from_secs(20)));
    // No `metanet connect`: the first packet to the overlay IPv6 triggers the lookup.
    assert!(
        wait_for(Duration::from_secs(15), || ping(&net.lan.hosts[3], &ip4)),
        "host 3 cannot ping host 4 by overlay IPv6 alone: {}",
        log(&net.daemons[3])
    );
    // And TCP the other way, again with no connect first.
    let (rx, out_file) = tcp_receiver(&net.lan.hosts[3], &net.tmp, &ip3);
    let progress = net.tmp.0.join("progress");
    let tx = tcp_sender(&net.lan.hosts[2], &ip3, 4, 0.0, &progress);
    let (_, ip2) = net.addr(2);
    assert_eq!(transfer_intact(tx, rx, &out_file, 4), ip2);
}

#[test]
fn moved_host_republishes_and_is_reached_at_its_new_address() {
    if !root_or_skip("moved_host_republishes_and_is_reached_at_its_new_address") {
        return;
    }
    let net = Net::start(5, |_| String::new());
    let (_, ip2) = net.addr(2);
    assert!(net.resolves(1, 2, &net.lan.ips[2], Duration::from_secs(20)));
    assert!(wait_for(Duration::from_secs(10), || ping(
        &net.lan.hosts[1],
        &ip2
    )));
    // Host 2 moves to another address on the segment.
    let new_ip = format!("198.18.{}.77", net.lan.net);
    let out = net.lan.hosts[2].sh(&format!(
        "ip addr del {}/24 dev eth0 && ip addr add {new_ip}/24 dev eth0",
        net.lan.ips[2]
    ));
    assert!(out.status.success());
    assert!(
        net.resolves(3, 2, &new_ip, Duration::from_secs(20)),
        "the new address was not republished: {}",
        log(&net.daemons[2])
    );
    // A host that never talked to it reaches it at the new address...
    assert!(
        wait_for(Duration::from_secs(15), || ping(&net.lan.hosts[3], &ip2)),
        "host 3 cannot reach the moved host: {}",
        log(&net.daemons[3])
    );
    // ...and so does the host that had a session with it at the old one.
    assert!(
        wait_for(Duration::from_secs(30), || ping(&net.lan.hosts[1], &ip2)),
        "host 1 lost the moved host: {}",
        log(&net.daemons[1])
    );
}

#[test]
fn forged_records_are_never_used() {
    if !root_or_skip("forged_records_are_never_used") {
        return;
    }
    let net = Net::start(5, |_| String::new());
    let (addr2, ip2) = net.addr(2);
    assert!(net.resolves(1, 2, &net.lan.ips[2], Duration::from_secs(20)));
    let secret = {
        let out = net.daemons[2].cli(&["id", "export", "default"]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // The forger runs on host 4 next to its daemon, on another DHT port; every forged
    // record points at an address where nothing listens.
    let bogus = format!("198.18.{}.250:{PORT}", net.lan.net);
    let boot = format!("/ip4/{}/tcp/{DHT_PORT}", net.lan.ips[0]);
    for forge in ["wrong-key", "expired", "stale"] {
        let mut forger = Forger(
            net.lan.hosts[4]
                .cmd(&bin("mn-dht-forge"))
                .args(["--port", "51900", "--bootstrap", &boot])
                .args(["--target-secret", &secret, "--endpoint", &bogus])
                .args(["--forge", forge])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let injected = wait_for(Duration::from_secs(15), || {
            net.daemons
                .iter()
                .any(|d| log(d).matches("refused a").count() > 0)
        });
        assert!(injected, "{forge}: no honest node saw the forged record");
        // Lookups from every host keep returning the real record.
        for i in [1, 3, 4] {
            let rec = resolve(&net.daemons[i], &addr2).unwrap();
            let eps = rec["endpoints"].to_string();
            assert!(!eps.contains(".250:"), "{forge}: host {i} used {rec}");
            assert_eq!(rec["address"], addr2.as_str());
        }
        forger.stop();
    }
    // And traffic goes to the real host.
    let out = net.daemons[3].cli(&["connect", &addr2]);
    assert!(out.status.success());
    assert!(wait_for(Duration::from_secs(10), || ping(
        &net.lan.hosts[3],
        &ip2
    )));
}

#[test]
fn resolution_survives_the_bootstrap_node_going_down() {
    if !root_or_skip("resolution_survives_the_bootstrap_node_going_down") {
        return;
    }
    let mut net = Net::start(5, |_| String::new());
    let (addr4, ip4) = net.addr(4);
    assert!(net.resolves(3, 4, &net.lan.ips[4], Duration::from_secs(20)));
    assert!(net.resolves(1, 4, &net.lan.ips[4], Duration::from_secs(20)));
    net.daemons[0].stop();
    // Fresh lookups (resolve never answers from the cache) among the others.
    assert!(
        net.resolves(2, 4, &net.lan.ips[4], Duration::from_secs(20)),
        "host 2 cannot resolve without the bootstrap node: {}",
        log(&net.daemons[2])
    );
    let out = net.daemons[2].cli(&["connect", &addr4]);
    assert!(out.status.success());
    assert!(wait_for(Duration::from_secs(10), || ping(
        &net.lan.hosts[2],
        &ip4
    )));
}

/// The forger process, killed on drop.
struct Forger(Child);

impl Forger {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Forger {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn sighup_reload_republishes_new_services() {
    if !root_or_skip("sighup_reload_republishes_new_services") {
        return;
    }
    let net = Net::start(2, |_| String::new());
    let (addr1, _) = net.addr(1);
    assert!(net.resolves(0, 1, &net.lan.ips[1], Duration::from_secs(20)));
    let cfg = net.tmp.0.join("h1/metanetd.toml");
    // A broken file is refused and changes nothing; the daemon keeps running.
    std::fs::write(&cfg, "no-such-key = 1\n").unwrap();
    let hup = || net.daemons[1].reload();
    hup();
    assert!(wait_for(Duration::from_secs(5), || log(&net.daemons[1])
        .contains("reload refused")));
    std::fs::write(
        &cfg,
        "[[identity]]\nname = \"default\"\n[[identity.service]]\nname = \"ssh\"\nprotocol = \"tcp\"\nport = 22\n",
    )
    .unwrap();
    hup();
    assert!(
        wait_for(Duration::from_secs(15), || resolve(&net.daemons[0], &addr1)
            .is_some_and(|r| r["services"][0]["name"] == "ssh")),
        "reload did not republish: {}",
        log(&net.daemons[1])
    );
    assert!(net.daemons[1]
        .request(r#"{"id":1,"method":"status"}"#)
        .is_some());
}
