//! Groups on the chain with policies that admit only members, and their MLS keys
//! (docs/protocol.md §9.8, §9.9, §11): four hosts and anvil in namespaces, one DHT.
//! Admin A creates group `ops` and adds B and C; every member reaches the chain's key
//! epoch (the Welcome and commits travel through the DHT, the chain orders them) and
//! handshakes with the other members under the group's network key; with
//! `allow = ["group:ops"]` on A and C, D (no member) is refused at A's handshake; B
//! admits anyone, so only the network key keeps C out once removed. A removes C while
//! C's view of the chain is cut (so C still holds the old epoch's key): C's sessions
//! drop on A and B within 5 s, the next epoch is committed without C, and C's
//! re-handshake with the previous epoch's key is refused by B; `group log` shows the
//! whole history. Skipped when not root or anvil is missing.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use metanet_tests::chain::{self, Anvil};
use metanet_tests::{log, ping, wait_for, Daemon, Lan, TempDir, DHT_PORT};

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
    // C admits only members, and of them only TCP 22 (and ICMPv6).
    let c_config = tmp.0.join("c.toml");
    std::fs::write(
        &c_config,
        "[[identity]]\nname = \"default\"\nallow = [\"group:ops\"]\n\
         [[identity.rule]]\nproto = \"tcp\"\nport = \"22\"\nfrom = \"group:ops\"\n\
         [[identity.rule]]\nproto = \"icmp\"\n",
    )
    .unwrap();
    let boot = format!("/ip4/{}/tcp/{DHT_PORT}", lan.ips[0]);
    let start = |i: usize, config: &Path| {
        let mut extra = flags.to_vec();
        if i > 0 {
            extra.extend(["--bootstrap", boot.as_str()]);
        }
        Daemon::start_with(
            &lan.hosts[i],
            &tmp.0.join(format!("h{i}")),
            "mn0",
            config,
            &extra,
        )
    };
    let (a, b, c) = (
        start(0, &members_only),
        start(1, Path::new("/dev/null")),
        start(2, &c_config),
    );
    let d = start(3, Path::new("/dev/null"));
    for h in [&a, &b, &c, &d] {
        let synced = wait_for(Duration::from_secs(30), || {
            h.request(r#"{"id":9,"method":"status"}"#)
                .is_some_and(|v| v["result"]["chain"]["synced_block"].is_u64())
        });
        assert!(synced, "no chain sync: {}", log(h));
    }
    let ((addr_a, ip_a), (addr_b, ip_b), (addr_c, ip_c), (_, _)) =
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
    for h in [&a, &c] {
        let ok = wait_for(Duration::from_secs(10), || {
            h.cli_json(&["policy", "show"])[0]["allowed"]
                .as_array()
                .is_some_and(|m| m.len() == 3)
        });
        assert!(ok, "policy did not pick up the group: {}", log(h));
    }

    // Every member reaches the chain's key epoch and uses the group's key with the
    // other two.
    let chain_epoch = || {
        a.cli_json(&["group", "show", "ops"])["epoch"]
            .as_u64()
            .unwrap_or(0)
    };
    let keyed = |h: &Daemon, members: usize| {
        let closed = &h.cli_json(&["policy", "show"])[0]["closed"];
        closed[0]["group"] == "ops" && closed[0]["members"] == members as u64
    };
    let ok = wait_for(Duration::from_secs(40), || {
        chain_epoch() >= 1 && [&a, &b, &c].iter().all(|h| keyed(h, 3))
    });
    assert!(
        ok,
        "the members did not reach a common key epoch: chain {} A {} B {} C {}\n{}\n{}",
        a.cli_json(&["group", "show", "ops"]),
        a.cli_json(&["policy", "show"]),
        b.cli_json(&["policy", "show"]),
        c.cli_json(&["policy", "show"]),
        log(&a),
        log(&b)
    );
    // B and C, once joined, have their own empty updates ordered (their tree nodes
    // fill, so later commits stay O(log N)).
    let updated = wait_for(Duration::from_secs(40), || {
        [(&b, "ops"), (&c, "ops")].iter().all(|(h, g)| {
            let k = &h.cli_json(&["group", "show", g])["keys"][0];
            k["needs_update"] == false && k["epoch"] == chain_epoch()
        })
    });
    assert!(
        updated,
        "the members' updates were not ordered: {} {}\n{}",
        b.cli_json(&["group", "show", "ops"]),
        c.cli_json(&["group", "show", "ops"]),
        log(&a)
    );
    assert!(chain_epoch() >= 3, "two updates and at least one add");
    assert!(wait_for(Duration::from_secs(10), || [&a, &b, &c]
        .iter()
        .all(|h| keyed(h, 3))));
    let epoch_before = chain_epoch();
    let shown = b.cli_json(&["group", "show", "ops"]);
    assert_eq!(shown["keys"][0]["epoch"], epoch_before, "{shown}");

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

    for h in [&a, &b, &c] {
        assert_eq!(h.counter("epoch_refused"), 0, "{}", log(h));
    }
    // C's rule: TCP 22 from a member passes, TCP 80 is dropped and counted.
    let mut listener = metanet_tests::spawn_silent(lan.hosts[2].cmd(Path::new("python3")).args([
        "-c",
        &format!("import socket; s=socket.socket(socket.AF_INET6); s.bind(('{ip_c}',22)); s.listen(); s.settimeout(20); c,_=s.accept(); c.sendall(b'ssh')"),
    ]));
    // Connect only once C listens (the listener accepts one connection).
    let listening = wait_for(Duration::from_secs(5), || {
        let o = lan.hosts[2].sh("ss -Hltn 'sport = :22'");
        !String::from_utf8_lossy(&o.stdout).trim().is_empty()
    });
    assert!(listening, "the listener on C's port 22 did not start");
    let o = lan.hosts[1].sh(&format!(
        "timeout 5 python3 -c \"import socket; s=socket.create_connection(('{ip_c}',22),3); assert s.recv(3)==b'ssh'\""
    ));
    assert!(o.status.success(), "B could not reach C's port 22: {o:?}");
    let _ = listener.wait();
    let dropped = c.counter("rule_dropped");
    let o = lan.hosts[1].sh(&format!(
        "timeout 3 python3 -c \"import socket; socket.create_connection(('{ip_c}',80),2)\""
    ));
    assert!(!o.status.success(), "port 80 reached C");
    assert!(
        c.counter("rule_dropped") > dropped,
        "TCP 80 was not counted"
    );

    // C stops hearing from the chain (as a removed member that hides would): it keeps
    // the epoch it holds. A removes C: its sessions drop on A and B within 5 s, its
    // handshakes are refused.
    let cut = lan.hosts[2].sh(&format!(
        "nft add table inet mn_cut && nft add chain inet mn_cut out '{{ type filter hook output priority 0; }}' && nft add rule inet mn_cut out ip daddr {} tcp dport {} drop",
        lan.ips[0],
        chain::RPC_PORT
    ));
    assert!(cut.status.success(), "{cut:?}");
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

    // The next epoch is committed without C; A and B reach it.
    let ok = wait_for(Duration::from_secs(40), || {
        chain_epoch() > epoch_before && [&a, &b].iter().all(|h| keyed(h, 2))
    });
    assert!(
        ok,
        "no epoch without C: chain {} A {} B {}",
        a.cli_json(&["group", "show", "ops"]),
        a.cli_json(&["policy", "show"]),
        b.cli_json(&["policy", "show"])
    );
    assert!(ping(&lan.hosts[1], &ip_a), "B lost A after the new epoch");
    // C still holds the previous epoch's key and names it: B, which admits anyone,
    // refuses it for its epoch (C is no member of the epoch it names, and its key is
    // not the current one).
    assert!(
        keyed(&c, 3),
        "C lost its old key: {}",
        c.cli_json(&["policy", "show"])
    );
    // C's side of its old session only ends when B stops answering (§7.5): C keeps
    // sending until it handshakes again.
    let before = b.counter("epoch_refused");
    assert!(
        wait_for(Duration::from_secs(40), || {
            let _ = ping(&lan.hosts[2], &ip_b);
            b.counter("epoch_refused") > before
        }),
        "C's re-handshake with the previous epoch's key was not refused: B {} C {} {}",
        b.request(r#"{"id":9,"method":"status"}"#)
            .unwrap_or_default()["result"]["counters"],
        c.request(r#"{"id":9,"method":"status"}"#)
            .unwrap_or_default()["result"]["counters"],
        peer_addresses(&c)
    );
    assert!(!ping(&lan.hosts[2], &ip_b), "C reaches B");

    // The log: created, added B, added C, removed C, with who admitted them, and the
    // key epochs A committed between them.
    let l = b.cli_json(&["group", "log", "ops"]);
    let events = l["events"].as_array().unwrap();
    let changes: Vec<&str> = events
        .iter()
        .map(|e| e["change"].as_str().unwrap())
        .filter(|c| *c != "epoch")
        .collect();
    assert_eq!(changes, ["created", "added", "added", "removed"], "{l}");
    assert!(events.iter().all(|e| e["by"] == addr_a.as_str()), "{l}");
    let epochs: Vec<u64> = events.iter().filter_map(|e| e["epoch"].as_u64()).collect();
    assert_eq!(epochs, (1..=chain_epoch()).collect::<Vec<_>>(), "{l}");
    let removal = events
        .iter()
        .position(|e| e["change"] == "removed")
        .unwrap();
    assert_eq!(events[removal]["subject"], addr_c.as_str());
    assert!(
        events[removal..].iter().any(|e| e["change"] == "epoch"),
        "no epoch after the removal: {l}"
    );
}
