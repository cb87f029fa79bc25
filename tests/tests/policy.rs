//! Access policy in real daemons (docs/protocol.md §11): an identity whose config
//! allows only A refuses C at the handshake (counted, no session), lets A's TCP through
//! to the port its rule opens and drops the rest (counted per rule), lets the replies to
//! its own flows in, and a SIGHUP with a wider policy admits C. Three hosts on one
//! segment; skipped when not root.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use metanet_tests::{
    ping, root_or_skip, tcp_receiver, tcp_sender, transfer_intact, wait_for, Daemon, Lan, TempDir,
};

/// The default identity's entry of `metanet policy show --json`.
fn policy_json(d: &Daemon) -> serde_json::Value {
    d.cli_json(&["policy", "show"])[0].clone()
}

#[test]
fn an_allow_list_and_inbound_rules_hold_and_a_reload_widens_them() {
    if !root_or_skip("an_allow_list_and_inbound_rules_hold_and_a_reload_widens_them") {
        return;
    }
    let lan = Lan::new(3);
    let tmp = TempDir::new();
    let a = Daemon::start(&lan.hosts[1], &tmp.0.join("a"), "mn0");
    let c = Daemon::start(&lan.hosts[2], &tmp.0.join("c"), "mn0");
    let (addr_a, ip_a) = a.identity();
    let (addr_c, _) = c.identity();
    let config = tmp.0.join("b.toml");
    let write = |allow: &str, icmp: bool| {
        let icmp = if icmp {
            "[[identity.rule]]\nproto = \"icmp\"\n"
        } else {
            ""
        };
        std::fs::write(
            &config,
            format!(
                "[[identity]]\nname = \"default\"\nallow = [{allow}]\n\
                 [[identity.rule]]\nproto = \"tcp\"\nport = \"5001\"\nfrom = \"{addr_a}\"\n\
                 [[identity.rule]]\nproto = \"tcp\"\nport = \"81\"\naction = \"deny\"\n{icmp}"
            ),
        )
        .unwrap();
    };
    write(&format!("\"{addr_a}\""), false);
    let b = Daemon::start_with_config(&lan.hosts[0], &tmp.0.join("b"), "mn0", &config);
    let (addr_b, ip_b) = b.identity();
    let ep_b = format!("{}:51820", lan.ips[0]);

    // A is allowed: its session comes up.
    let v = a.connect(&addr_b, &ep_b);
    assert!(v["error"].is_null(), "{v}");
    // C is not: refused at the handshake, counted, no peer on B.
    let line = format!(
        r#"{{"id":3,"method":"connect","params":{{"address":"{addr_b}","endpoint":"{ep_b}","identity":null}}}}"#
    );
    let _ = c.request(&line);
    assert!(
        wait_for(Duration::from_secs(10), || b.counter("policy_refused") > 0),
        "C's initiations were not refused"
    );
    let peers = b.request(r#"{"id":4,"method":"peers"}"#).unwrap();
    let listed = peers["result"]["peers"].to_string();
    assert!(!listed.contains(&addr_c), "B holds a peer for C: {listed}");

    // TCP to the port the rule opens for A: through, intact.
    let t = TempDir::new();
    let (rx, out) = tcp_receiver(&lan.hosts[0], &t, &ip_b);
    let tx = tcp_sender(&lan.hosts[1], &ip_b, 20, 0.0, &t.0.join("progress"));
    assert_eq!(transfer_intact(tx, rx, &out, 20), ip_a);
    // Port 80 (no rule) and 81 (a deny rule): dropped and counted.
    let dropped = b.counter("rule_dropped");
    for port in [80, 81] {
        let o = lan.hosts[1].sh(&format!(
            "timeout 3 python3 -c \"import socket; s=socket.socket(socket.AF_INET6); s.settimeout(2); s.connect(('{ip_b}',{port}))\""
        ));
        assert!(!o.status.success(), "port {port} reached B");
    }
    assert!(b.counter("rule_dropped") > dropped);
    // No ICMP rule: A's echo requests are dropped, but B's own pings get their replies.
    assert!(
        !ping(&lan.hosts[1], &ip_b),
        "A's ping passed a policy without ICMP"
    );
    assert!(
        ping(&lan.hosts[0], &ip_a),
        "B's ping: the reply to its own flow must pass"
    );
    let p = policy_json(&b);
    assert_eq!(p["open"], false, "{p}");
    assert!(p["refused"].as_u64().unwrap() > 0, "{p}");
    assert!(p["rules"][0]["hits"].as_u64().unwrap() > 0, "{p}");
    assert!(p["rules"][1]["hits"].as_u64().unwrap() > 0, "{p}");
    assert!(p["default_dropped"].as_u64().unwrap() > 0, "{p}");

    // SIGHUP with C allowed and ICMP open: C connects, pings pass.
    write(&format!("\"{addr_a}\", \"{addr_c}\""), true);
    b.reload();
    assert!(
        wait_for(Duration::from_secs(10), || {
            policy_json(&b)["allowed"].as_array().unwrap().len() == 2
        }),
        "the reload did not widen the allow list: {}",
        metanet_tests::log(&b)
    );
    let v = c.connect(&addr_b, &ep_b);
    assert!(v["error"].is_null(), "{v}");
    assert!(
        wait_for(Duration::from_secs(15), || ping(&lan.hosts[2], &ip_b)),
        "C cannot reach B after the reload"
    );
    assert!(ping(&lan.hosts[1], &ip_b), "A's ping with ICMP open");

    // A new Noise key (the node holds the identity anew): the policy stays.
    b.cli_json(&["id", "rotate"]);
    let p = policy_json(&b);
    assert_eq!(
        p["open"], false,
        "the policy was lost with the key rotation: {p}"
    );
    assert_eq!(p["allowed"].as_array().unwrap().len(), 2, "{p}");
}
