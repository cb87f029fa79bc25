//! Namespaces attached to one daemon (`metanet attach`): each speaks as its own
//! identity through an interface the daemon owns, reaches the other attachments and
//! the host without UDP, reaches a remote host with its own source address, cannot
//! use another identity's source, goes when its namespace goes, and comes back after
//! a daemon restart. Real daemons in namespaces; skipped when not root.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use metanet_tests::{
    ping, root_or_skip, tag, tcp_receiver, tcp_sender, transfer_intact, wait_for, Daemon, Netns,
    Pair, TempDir,
};

/// Attach namespace `ns` to identity `identity`; returns (address, ipv6).
fn attach(d: &Daemon, ns: &Netns, identity: &str) -> (String, String) {
    let a = d.cli_json(&["attach", "--netns", &ns.name, "--identity", identity]);
    assert_eq!(a["identity"], identity);
    assert_eq!(a["state"], "up");
    (
        a["address"].as_str().unwrap().to_owned(),
        a["ipv6"].as_str().unwrap().to_owned(),
    )
}

/// 100 MiB from `from` to `[ip]` in `to`, intact; returns the source the receiver saw.
fn transfer(from: &Netns, to: &Netns, ip: &str) -> String {
    let tmp = TempDir::new();
    let (rx, out) = tcp_receiver(to, &tmp, ip);
    let tx = tcp_sender(from, ip, 100, 0.0, &tmp.0.join("progress"));
    transfer_intact(tx, rx, &out, 100)
}

#[test]
fn attached_namespaces_reach_each_other_and_a_remote_host_as_their_own_identities() {
    if !root_or_skip(
        "attached_namespaces_reach_each_other_and_a_remote_host_as_their_own_identities",
    ) {
        return;
    }
    let pair = Pair::new();
    let tmp = TempDir::new();
    let h1 = Daemon::start(&pair.a, &tmp.0.join("h1"), "mn0");
    let h2 = Daemon::start(&pair.b, &tmp.0.join("h2"), "mn0");
    let t = tag();
    let c1 = Netns::new(format!("mnc-{t}-1"));
    let c2 = Netns::new(format!("mnc-{t}-2"));
    let (addr1, ip1) = attach(&h1, &c1, "c1");
    let (addr2, ip2) = attach(&h1, &c2, "c2");
    assert_ne!(ip1, ip2);
    let (_, ip_h1) = h1.identity();
    let (_, ip_h2) = h2.identity();

    // Inside the namespace: only the identity's /128 and the fd00::/8 route.
    let addrs = c1.sh("ip -6 -o addr show dev metanet0 scope global");
    let addrs = String::from_utf8_lossy(&addrs.stdout).to_string();
    assert!(addrs.contains(&format!("{ip1}/128")), "{addrs}");
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
    let routes =
        String::from_utf8_lossy(&c1.sh("ip -6 route show dev metanet0").stdout).to_string();
    assert!(routes.contains("fd00::/8"), "{routes}");
    // The host no longer carries the attached identities' addresses.
    let host = String::from_utf8_lossy(&pair.a.sh("ip -6 -o addr show dev mn0").stdout).to_string();
    assert!(!host.contains(&ip1) && !host.contains(&ip2), "{host}");

    // The remote host knows both containers' identities at host 1's endpoint.
    let endpoint = format!("{}:51820", pair.ip_a);
    for addr in [&addr1, &addr2] {
        let v = h2.connect(addr, &endpoint);
        assert!(v["error"].is_null(), "{v}");
    }

    // Ping between every pair: container↔container and container↔host locally,
    // container↔remote host over the tunnel.
    assert!(ping(&c1, &ip2), "c1 -> c2");
    assert!(ping(&c2, &ip1), "c2 -> c1");
    assert!(ping(&c1, &ip_h1), "c1 -> host 1");
    assert!(ping(&pair.a, &ip2), "host 1 -> c2");
    assert!(ping(&c1, &ip_h2), "c1 -> host 2");
    assert!(ping(&c2, &ip_h2), "c2 -> host 2");
    assert!(ping(&pair.b, &ip1), "host 2 -> c1");

    // 100 MiB each way that matters, intact; each arrives from its own identity.
    let local_before = h1.counter("local_packets");
    assert_eq!(transfer(&c1, &c2, &ip2), ip1, "c1 -> c2 source");
    assert!(
        h1.counter("local_packets") > local_before + 1000,
        "c1 -> c2 did not go through local delivery"
    );
    assert_eq!(transfer(&c2, &pair.a, &ip_h1), ip2, "c2 -> host 1 source");
    assert_eq!(transfer(&c1, &pair.b, &ip_h2), ip1, "c1 -> host 2 source");
    assert_eq!(transfer(&c2, &pair.b, &ip_h2), ip2, "c2 -> host 2 source");
    assert_eq!(transfer(&pair.b, &c1, &ip1), ip_h2, "host 2 -> c1 source");

    // c1 cannot speak as c2: with c2's address on its interface, what it sends from
    // there is refused and counted, and reaches nobody.
    let refused = h1.counter("source_refused");
    c1.sh(&format!("ip -6 addr add {ip2}/128 dev metanet0 nodad"));
    let spoof = c1.sh(&format!("ping -6 -c 3 -i 0.2 -W 1 -I {ip2} {ip_h2}"));
    assert!(!spoof.status.success(), "a spoofed ping was answered");
    assert!(h1.counter("source_refused") >= refused + 3);
    let list = h1.cli_json(&["attachments"]);
    let c1_info = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["identity"] == "c1")
        .unwrap()
        .clone();
    assert!(c1_info["spoofed"].as_u64().unwrap() >= 3, "{c1_info}");

    // Detach by identity: the interface goes, the address returns to the host.
    h1.cli_json(&["detach", "--identity", "c2"]);
    let links = String::from_utf8_lossy(&c2.sh("ip -o link").stdout).to_string();
    assert!(!links.contains("metanet0"), "{links}");
    let host = String::from_utf8_lossy(&pair.a.sh("ip -6 -o addr show dev mn0").stdout).to_string();
    assert!(host.contains(&ip2), "{host}");
    // Detaching again is not an error, and removes no identity that is not attached.
    h1.cli_json(&["detach", "--identity", "c2", "--remove-identity"]);
    let ids = h1.cli_json(&["id", "list"]).to_string();
    assert!(ids.contains("\"c2\""), "{ids}");

    // A namespace that disappears takes its attachment with it.
    drop(c1);
    assert!(
        wait_for(Duration::from_secs(10), || h1
            .cli_json(&["attachments"])
            .as_array()
            .unwrap()
            .is_empty()),
        "attachment of a deleted namespace was kept"
    );
}

#[test]
fn attach_refuses_what_it_cannot_do_and_leaves_nothing_behind() {
    if !root_or_skip("attach_refuses_what_it_cannot_do_and_leaves_nothing_behind") {
        return;
    }
    let pair = Pair::new();
    let tmp = TempDir::new();
    let h1 = Daemon::start(&pair.a, &tmp.0.join("h1"), "mn0");
    let c = Netns::new(format!("mnc-{}-x", tag()));
    let fail = |args: &[&str]| {
        let out = h1.cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = fail(&["attach", "--netns", "mnc-no-such-ns", "--identity", "x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no network namespace"), "{err}");
    let (code, err) = fail(&["attach", "--netns", &c.name, "--identity", "default"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("default identity"), "{err}");
    let (code, err) = fail(&["attach", "--netns", &c.name, "--identity", "Bad Name"]);
    assert_eq!(code, Some(2), "{err}");
    // A request without the descriptors is refused with what to do.
    let v = h1
        .request(r#"{"id":9,"method":"attach","params":{"netns":"/run/netns/x","identity":"y"}}"#)
        .unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("two descriptors"), "{v}");
    // Nothing was created: no identity, no attachment, no interface.
    let ids = h1.cli_json(&["id", "list"]);
    assert_eq!(ids.as_array().unwrap().len(), 1, "{ids}");
    assert!(h1.cli_json(&["attachments"]).as_array().unwrap().is_empty());
    let links = String::from_utf8_lossy(&c.sh("ip -o link").stdout).to_string();
    assert!(!links.contains("metanet0"), "{links}");
    // The same attachment twice is answered as it is; another identity in the same
    // namespace is refused (one identity per namespace).
    attach(&h1, &c, "web");
    attach(&h1, &c, "web");
    let (code, err) = fail(&[
        "attach",
        "--netns",
        &c.name,
        "--identity",
        "other",
        "--interface",
        "mn1",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("one identity per namespace"), "{err}");
    // An interface of that name that is not metanet's: refused, naming the clash.
    let c2 = Netns::new(format!("mnc-{}-y", tag()));
    c2.sh("ip link add mnclash type veth peer name mnclashp");
    let (code, err) = fail(&[
        "attach",
        "--netns",
        &c2.name,
        "--identity",
        "other",
        "--interface",
        "mnclash",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("already has an interface named mnclash"),
        "{err}"
    );
    // From inside the namespace (`ip netns exec`).
    let out = c2
        .cmd(&metanet_tests::bin("metanet"))
        .arg("--socket")
        .arg(&h1.socket)
        .args([
            "attach",
            "--netns",
            &c2.name,
            "--identity",
            "web2",
            "--interface",
            "mn1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let links = String::from_utf8_lossy(&c2.sh("ip -o link").stdout).to_string();
    assert!(links.contains("mn1"), "{links}");
}

#[test]
fn attachments_survive_a_daemon_restart_and_traffic_resumes_within_10_s() {
    if !root_or_skip("attachments_survive_a_daemon_restart_and_traffic_resumes_within_10_s") {
        return;
    }
    let pair = Pair::new();
    let tmp = TempDir::new();
    let dir1 = tmp.0.join("h1");
    let mut h1 = Daemon::start(&pair.a, &dir1, "mn0");
    let h2 = Daemon::start(&pair.b, &tmp.0.join("h2"), "mn0");
    let t = tag();
    let c1 = Netns::new(format!("mnc-{t}-1"));
    let c2 = Netns::new(format!("mnc-{t}-2"));
    let (addr1, ip1) = attach(&h1, &c1, "c1");
    let (addr2, ip2) = attach(&h1, &c2, "c2");
    let (addr_h2, ip_h2) = h2.identity();
    // Host 1's containers know host 2 from the config, so they reach it after a restart.
    let config = dir1.join("metanetd.toml");
    let endpoint_b = format!("{}:51820", pair.ip_b);
    std::fs::write(
        &config,
        format!(
            "[[peer]]\naddress = \"{addr_h2}\"\nendpoint = \"{endpoint_b}\"\nidentity = \"c1\"\n\
             [[peer]]\naddress = \"{addr_h2}\"\nendpoint = \"{endpoint_b}\"\nidentity = \"c2\"\n"
        ),
    )
    .unwrap();
    let endpoint_a = format!("{}:51820", pair.ip_a);
    h2.connect(&addr1, &endpoint_a);
    h2.connect(&addr2, &endpoint_a);
    assert!(ping(&c1, &ip_h2) && ping(&c2, &ip_h2) && ping(&c1, &ip2));

    h1.stop();
    let started = Instant::now();
    let h1 = Daemon::start_with_config(&pair.a, &dir1, "mn0", &config);
    let mut state = (false, false, false);
    let resumed = wait_for(Duration::from_secs(10), || {
        state = (
            state.0 || quick_ping(&c1, &ip2),
            state.1 || quick_ping(&c1, &ip_h2),
            state.2 || quick_ping(&c2, &ip_h2),
        );
        state == (true, true, true)
    });
    let took = started.elapsed();
    assert!(
        resumed,
        "traffic did not resume within 10 s of the restart (c1->c2, c1->h2, c2->h2: {state:?}): {}",
        metanet_tests::log(&h1)
    );
    eprintln!("traffic resumed {took:?} after the restart");
    let list = h1.cli_json(&["attachments"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|a| a["state"] == "up"), "{list:?}");
    // Still the same addresses.
    let ips: Vec<&str> = list.iter().map(|a| a["ipv6"].as_str().unwrap()).collect();
    assert!(ips.contains(&ip1.as_str()) && ips.contains(&ip2.as_str()));
}

/// One ping with a short wait.
fn quick_ping(ns: &Netns, ip: &str) -> bool {
    ns.sh(&format!("ping -6 -c 1 -W 1 {ip}")).status.success()
}

#[test]
fn local_delivery_obeys_the_destination_identitys_policy() {
    if !root_or_skip("local_delivery_obeys_the_destination_identitys_policy") {
        return;
    }
    let pair = Pair::new();
    let tmp = TempDir::new();
    // Identity `db` (created by the attach below) takes TCP 5001 and nothing else.
    let config = tmp.0.join("h1.toml");
    std::fs::write(
        &config,
        "[[identity]]\nname = \"db\"\n[[identity.rule]]\nproto = \"tcp\"\nport = \"5001\"\n",
    )
    .unwrap();
    let h1 = Daemon::start_with_config(&pair.a, &tmp.0.join("h1"), "mn0", &config);
    let t = tag();
    let (app, db) = (
        Netns::new(format!("mnc-{t}-a")),
        Netns::new(format!("mnc-{t}-d")),
    );
    let (_, ip_app) = attach(&h1, &app, "app");
    let (_, ip_db) = attach(&h1, &db, "db");
    let dropped = h1.counter("rule_dropped");
    assert!(
        !ping(&app, &ip_db),
        "a ping reached db, whose rules take only TCP 5001"
    );
    assert!(
        h1.counter("rule_dropped") > dropped,
        "the drop was not counted"
    );
    assert_eq!(transfer(&app, &db, &ip_db), ip_app, "TCP 5001 app -> db");
    // db's own pings get their replies (the reply to its own flow passes).
    assert!(ping(&db, &ip_app), "db -> app");
}
