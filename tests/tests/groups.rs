//! Groups on the chain with policies that admit only members (docs/protocol.md §9.8,
//! §11): four hosts and anvil in namespaces. Admin A creates group `ops` and adds B
//! and C; with `allow = ["group:ops"]` B and C reach each other and A, D (no member) is
//! refused at the handshake; A removes C: C's sessions drop on A and B within 5 s and
//! its new handshakes are refused; `group log` shows the whole history. Skipped when
//! not root or anvil is missing.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use metanet_tests::chain::{self, Anvil};
use metanet_tests::{log, ping, wait_for, Daemon, Lan, TempDir};

fn peer_addresses(d: &Daemon) -> String {
    d.request(r#"{"id":4,"method":"peers"}"#)
        .map(|v| v["result"]["peers"].to_string())
        .unwrap_or_default()
}

#[test]
fn group_members_reach_each_other_strangers_are_refused_and_a_removed_member_is_cut_off() {
    let test =
        "group_members_reach_each_other_strangers_are_refused_and_a_removed_member_is_cut_off";
    let Some(anvil_bin) = chain::prerequisites(test) else {
        return;
    };
    let lan = Lan::new(4);
    let tmp = TempDir::new();
    let anvil = Anvil::start(anvil_bin, &lan.hosts[0], &lan.ips[0], &tmp.0);
    let (key, contract) =
        chain::deploy(&lan.hosts[0], &anvil, &tmp.0, &["--min-reveal-delay", "2"]);
    let url = anvil.url();
    let key = key.display().to_string();
    let flags = [
        "--chain-rpc",
        url.as_str(),
        "--chain-contract",
        contract.as_str(),
        "--chain-key",
        key.as_str(),
    ];
    let members_only = tmp.0.join("ops.toml");
    std::fs::write(
        &members_only,
        "[[identity]]\nname = \"default\"\nallow = [\"group:ops\"]\n",
    )
    .unwrap();
    let start = |i: usize, config: &Path| {
        Daemon::start_with(
            &lan.hosts[i],
            &tmp.0.join(format!("h{i}")),
            "mn0",
            config,
            &flags,
        )
    };
    let (a, b, c) = (
        start(0, &members_only),
        start(1, &members_only),
        start(2, &members_only),
    );
    let d = start(3, Path::new("/dev/null"));
    for h in [&a, &b, &c, &d] {
        let synced = wait_for(Duration::from_secs(30), || {
            h.request(r#"{"id":9,"method":"status"}"#)
                .is_some_and(|v| v["result"]["chain"]["synced_block"].is_u64())
        });
        assert!(synced, "no chain sync: {}", log(h));
    }
    let ((addr_a, ip_a), (addr_b, ip_b), (addr_c, _), (_, _)) =
        (a.identity(), b.identity(), c.identity(), d.identity());
    let ep = |i: usize| format!("{}:51820", lan.ips[i]);

    // A creates `ops` and adds B and C; each call returns once its claim is applied.
    let g = a.cli_json(&["group", "create", "ops"]);
    assert_eq!(g["admins"][0], addr_a.as_str(), "{g}");
    a.cli_json(&["group", "add", "ops", &addr_b]);
    let g = a.cli_json(&["group", "add", "ops", &addr_c]);
    assert_eq!(g["members"].as_array().unwrap().len(), 3, "{g}");
    // B is no admin: its attempt to add D is refused with what to do.
    let out = b.cli(&["group", "add", "ops", &d.identity().0]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an admin"));
    // Every member's policy follows the chain.
    for h in [&a, &b, &c] {
        let ok = wait_for(Duration::from_secs(10), || {
            h.cli_json(&["policy", "show"])[0]["allowed"]
                .as_array()
                .is_some_and(|m| m.len() == 3)
        });
        assert!(ok, "policy did not pick up the group: {}", log(h));
    }

    // Members reach each other.
    for (from, to, i) in [(&b, &addr_a, 0), (&c, &addr_a, 0), (&c, &addr_b, 1)] {
        let v = from.connect(to, &ep(i));
        assert!(v["error"].is_null(), "{v}");
    }
    assert!(ping(&lan.hosts[1], &ip_a) && ping(&lan.hosts[2], &ip_a) && ping(&lan.hosts[2], &ip_b));
    // D is refused at A's handshake, counted.
    let line = format!(
        r#"{{"id":3,"method":"connect","params":{{"address":"{addr_a}","endpoint":"{}","identity":null}}}}"#,
        ep(0)
    );
    let _ = d.request(&line);
    assert!(
        wait_for(Duration::from_secs(10), || a.counter("policy_refused") > 0),
        "D was not refused"
    );

    // A removes C: its sessions drop on A and B within 5 s, its handshakes are refused.
    let refused = a.counter("policy_refused");
    a.cli_json(&["group", "remove", "ops", &addr_c]);
    let removed = Instant::now();
    let gone = wait_for(Duration::from_secs(5), || {
        !peer_addresses(&a).contains(&addr_c) && !peer_addresses(&b).contains(&addr_c)
    });
    assert!(
        gone,
        "C still has sessions {:?} after its removal: A {} B {}",
        removed.elapsed(),
        peer_addresses(&a),
        peer_addresses(&b)
    );
    eprintln!(
        "C's sessions gone {:?} after the removal was applied",
        removed.elapsed()
    );
    assert!(!ping(&lan.hosts[2], &ip_a), "C still reaches A");
    assert!(
        wait_for(Duration::from_secs(10), || a.counter("policy_refused")
            > refused),
        "C's new handshakes were not refused"
    );
    assert!(ping(&lan.hosts[1], &ip_a), "B lost A");

    // The log: created, added B, added C, removed C, with who admitted them.
    let l = b.cli_json(&["group", "log", "ops"]);
    let events = l["events"].as_array().unwrap();
    let changes: Vec<&str> = events
        .iter()
        .map(|e| e["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["created", "added", "added", "removed"], "{l}");
    assert!(events.iter().all(|e| e["by"] == addr_a.as_str()), "{l}");
    assert_eq!(events[3]["subject"], addr_c.as_str());
}
