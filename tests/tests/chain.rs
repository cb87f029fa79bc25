//! Names on chain, end to end: a real EVM node (foundry's anvil, installed by
//! `contracts/anvil.sh install`) in one namespace of an Ethernet segment, the registry
//! deployed there with `metanet chain deploy`, and real `metanetd` processes in the
//! other namespaces that follow it. Host 0 registers `alice`; host 1 connects to it,
//! pings it and resolves `alice.meta` by name; a revoked identity is refused; a daemon
//! keeps answering names from its cache while the node is down; a wallet rotation
//! hands an address and its names to a new key. Skipped when not root
//! or when anvil is missing.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use metanet_tests::chain::{prerequisites, Anvil, DEV_KEY};
use metanet_tests::{bin, ping, root_or_skip, wait_for, Daemon, Lan, TempDir};

const DHT_PORT: u16 = 51821;
/// Port of the `.meta` DNS view on each host's loopback.
const DNS_PORT: u16 = 5353;

/// A segment with anvil on its last host and the registry deployed; the daemons are
/// started by the tests. Fields drop in order: daemons, then anvil, then namespaces.
struct Net {
    daemons: Vec<Daemon>,
    anvil: Anvil,
    lan: Lan,
    tmp: TempDir,
    contract: String,
    key: PathBuf,
}

impl Net {
    /// `hosts` daemon hosts plus one for anvil; deploys the registry from host 0 with
    /// `metanet chain deploy`.
    fn start(anvil: PathBuf, hosts: usize) -> Net {
        let lan = Lan::new(hosts + 1);
        let tmp = TempDir::new();
        let anvil = Anvil::start(anvil, &lan.hosts[hosts], &lan.ips[hosts], &tmp.0);
        let key = tmp.0.join("funding.key");
        std::fs::write(&key, format!("{DEV_KEY}\n")).unwrap();
        std::process::Command::new("chmod")
            .arg("600")
            .arg(&key)
            .status()
            .unwrap();
        let deploy = |args: &[&str]| {
            lan.hosts[0]
                .cmd(Path::new("timeout"))
                .arg("60")
                .arg(bin("metanet"))
                .args(["chain", "deploy", "--rpc", &anvil.url(), "--key"])
                .arg(&key)
                .args(args)
                .output()
                .unwrap()
        };
        // A loose key file is refused with the fix.
        let loose = tmp.0.join("loose.key");
        std::fs::write(&loose, DEV_KEY).unwrap();
        let out = lan.hosts[0]
            .cmd(&bin("metanet"))
            .args(["chain", "deploy", "--rpc", &anvil.url(), "--key"])
            .arg(&loose)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("chmod 600"), "{}", text(&out));

        let out = deploy(&["--min-reveal-delay", "2"]);
        assert!(out.status.success(), "deploy failed: {}", text(&out));
        let contract = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            contract.starts_with("0x") && contract.len() == 42,
            "{contract}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--chain-contract"),
            "deploy says what to do next: {}",
            text(&out)
        );
        Net {
            daemons: Vec::new(),
            anvil,
            lan,
            tmp,
            contract,
            key,
        }
    }

    /// Start metanetd on host `i`, following the chain; hosts after 0 join the DHT
    /// through host 0.
    fn daemon(&self, i: usize) -> Daemon {
        let boot = format!("/ip4/{}/tcp/{DHT_PORT}", self.lan.ips[0]);
        let dns = format!("127.0.0.1:{DNS_PORT}");
        let rpc = self.anvil.url();
        let key = self.key.display().to_string();
        let mut extra = vec![
            "--chain-rpc",
            &rpc,
            "--chain-contract",
            &self.contract,
            "--chain-key",
            &key,
            "--dns-listen",
            &dns,
        ];
        if i > 0 {
            extra.extend(["--bootstrap", &boot]);
        }
        let dir = self.tmp.0.join(format!("h{i}"));
        let d = Daemon::start_with(
            &self.lan.hosts[i],
            &dir,
            &format!("mnc{i}"),
            Path::new("/dev/null"),
            &extra,
        );
        // Until its first round (or its cache) the daemon rightly refuses name
        // commands; on a loaded machine that round can take a few seconds. A node that
        // is down leaves it unread: the test's own assertions then say so.
        wait_for(Duration::from_secs(20), || {
            chain_status(&d)["synced_block"].is_u64()
        });
        d
    }

    /// `metanet <args>` inside host `i`'s namespace, against daemon `i`.
    fn cli_in(&self, i: usize, args: &[&str]) -> Output {
        self.lan.hosts[i]
            .cmd(Path::new("timeout"))
            .arg("60")
            .arg(bin("metanet"))
            .arg("--socket")
            .arg(&self.daemons[i].socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// `dig AAAA <name> @127.0.0.1 -p DNS_PORT` on host `i`: the whole answer.
    fn dig(&self, i: usize, name: &str) -> String {
        let out = self.lan.hosts[i].sh(&format!(
            "dig +time=2 +tries=1 -p {DNS_PORT} @127.0.0.1 AAAA {name}"
        ));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn dig_short(&self, i: usize, name: &str) -> String {
        let out = self.lan.hosts[i].sh(&format!(
            "dig +short +time=2 +tries=1 -p {DNS_PORT} @127.0.0.1 AAAA {name}"
        ));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn log(d: &Daemon) -> String {
    std::fs::read_to_string(&d.log).unwrap_or_default()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `metanet name show <name> --json` on `d`, when it succeeds.
fn show(d: &Daemon, name: &str) -> Option<serde_json::Value> {
    let out = d.cli(&["--json", "name", "show", name]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn chain_status(d: &Daemon) -> serde_json::Value {
    d.request(r#"{"id":9,"method":"status"}"#).unwrap()["result"]["chain"].clone()
}

fn dht_peers(d: &Daemon) -> u64 {
    d.request(r#"{"id":7,"method":"status"}"#)
        .and_then(|v| v["result"]["dht"]["peers"].as_u64())
        .unwrap_or(0)
}

#[test]
fn registered_name_reaches_its_owner_and_revoked_ids_are_refused() {
    let Some(anvil) =
        prerequisites("registered_name_reaches_its_owner_and_revoked_ids_are_refused")
    else {
        return;
    };
    let mut net = Net::start(anvil, 2);
    net.daemons.push(net.daemon(0));
    net.daemons.push(net.daemon(1));
    let (a, b) = (&net.daemons[0], &net.daemons[1]);
    for d in [a, b] {
        assert!(
            wait_for(Duration::from_secs(20), || dht_peers(d) >= 1),
            "DHT did not form: {}",
            log(d)
        );
    }
    let (addr_a, ip_a) = a.identity();

    // A registers `alice` for its default identity: commit, reveal after 2 blocks.
    let reg = json(&a.cli(&["--json", "name", "register", "Alice"]));
    assert_eq!(reg["name"], "alice");
    assert_eq!(reg["owner"], addr_a.as_str());
    assert_eq!(reg["identity"], "default");
    assert_eq!(reg["status"], "registered");
    // Taken now, also for A itself.
    let again = a.cli(&["name", "register", "alice"]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already registered"),
        "{}",
        text(&again)
    );
    // A sub-name of a name A does not own is refused before anything is submitted.
    let sub = a.cli(&["name", "register", "x.nobody"]);
    assert!(
        text(&sub).contains("only the owner of `nobody`"),
        "{}",
        text(&sub)
    );

    // B follows the chain and sees it.
    assert!(
        wait_for(Duration::from_secs(15), || show(b, "alice")
            .is_some_and(|v| v["owner"] == addr_a.as_str())),
        "B does not see alice: {}",
        log(b)
    );
    let shown = show(b, "alice").unwrap();
    assert_eq!(shown["ipv6"], ip_a.as_str());
    assert_eq!(shown["identity"], serde_json::Value::Null, "not B's");
    assert_eq!(shown["stale"], false);
    let mine = json(&a.cli(&["--json", "name", "list", "--mine"]));
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    let theirs = json(&b.cli(&["--json", "name", "list", "--mine"]));
    assert_eq!(theirs.as_array().unwrap().len(), 0, "{theirs}");
    let st = chain_status(b);
    assert_eq!(st["contract"], net.contract.as_str());
    assert_eq!(st["stale"], false, "{st}");
    assert!(st["synced_block"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["names"], 1, "{st}");

    // The DNS view answers for the name.
    assert_eq!(net.dig_short(1, "alice.meta"), ip_a);
    assert!(net.dig(1, "nobody.meta").contains("NXDOMAIN"));
    // resolve by name gives A's record from the DHT.
    let rec = json(&b.cli(&["--json", "resolve", "alice"]));
    assert_eq!(rec["address"], addr_a.as_str());

    // `metanet connect alice` from B, then ping A by its overlay IPv6 and by name.
    let out = b.cli(&["connect", "alice"]);
    assert!(
        out.status.success(),
        "connect alice failed: {}\n{}",
        text(&out),
        log(b)
    );
    assert!(
        wait_for(Duration::from_secs(10), || ping(&net.lan.hosts[1], &ip_a)),
        "B cannot ping alice at {ip_a}:\nB: {}\nA: {}",
        log(b),
        log(a)
    );
    let out = net.cli_in(1, &["ping", "alice", "-c", "2", "-W", "2"]);
    assert!(out.status.success(), "metanet ping alice: {}", text(&out));

    // A sub-name: only the owner of `alice` creates `shop.alice`.
    let out = b.cli(&["name", "register", "shop.alice"]);
    assert!(
        text(&out).contains("only the owner of `alice`"),
        "{}",
        text(&out)
    );
    let sub = json(&a.cli(&["--json", "name", "register", "shop.alice"]));
    assert_eq!(sub["owner"], addr_a.as_str());
    assert!(
        wait_for(Duration::from_secs(15), || net
            .dig_short(1, "shop.alice.meta")
            == ip_a),
        "shop.alice.meta does not resolve on B"
    );

    // A registers `dave` and hands it to B; B now holds it, A cannot move it again.
    let (addr_b, _) = b.identity();
    json(&a.cli(&["--json", "name", "register", "dave"]));
    let moved = json(&a.cli(&["--json", "name", "transfer", "dave", &addr_b]));
    assert_eq!(moved["owner"], addr_b.as_str());
    assert_eq!(moved["seq"], 1);
    assert_eq!(
        moved["identity"],
        serde_json::Value::Null,
        "not A's any more"
    );
    assert!(
        wait_for(Duration::from_secs(15), || {
            let out = b.cli(&["--json", "name", "list", "--mine"]);
            out.status.success()
                && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .is_ok_and(|v| v[0]["name"] == "dave" && v[0]["identity"] == "default")
        }),
        "B does not hold dave: {}",
        log(b)
    );
    let again = a.cli(&["name", "transfer", "dave", &addr_a]);
    assert!(!again.status.success());
    assert!(text(&again).contains("only its owner"), "{}", text(&again));

    // A second identity of A gets a name, then is revoked.
    let carol = json(&a.cli(&["--json", "id", "new", "carol"]));
    let addr_c = carol["address"].as_str().unwrap().to_owned();
    let reg = json(&a.cli(&["--json", "name", "register", "carol", "--identity", "carol"]));
    assert_eq!(reg["owner"], addr_c.as_str());
    // B reaches carol by name before the revocation.
    assert!(
        wait_for(Duration::from_secs(15), || show(b, "carol").is_some()),
        "B does not see carol: {}",
        log(b)
    );
    let ip_c = carol["ipv6"].as_str().unwrap().to_owned();
    let out = b.cli(&["connect", "carol"]);
    assert!(out.status.success(), "connect carol: {}", text(&out));
    assert!(
        wait_for(Duration::from_secs(10), || ping(&net.lan.hosts[1], &ip_c)),
        "B cannot ping carol: {}",
        log(b)
    );
    let unconfirmed = a.cli(&["id", "revoke", "carol"]);
    assert_eq!(unconfirmed.status.code(), Some(2), "{}", text(&unconfirmed));
    assert!(
        text(&unconfirmed).contains("--yes"),
        "{}",
        text(&unconfirmed)
    );
    let revoked = json(&a.cli(&["--json", "id", "revoke", "carol", "--yes"]));
    assert_eq!(revoked["address"], addr_c.as_str());
    assert!(
        wait_for(Duration::from_secs(15), || show(b, "carol")
            .is_some_and(|v| v["status"] == "revoked")),
        "B does not see carol revoked: {}",
        log(b)
    );
    // Refused by name and by address, with the reason and exit code 6.
    for target in ["carol", addr_c.as_str()] {
        let out = b.cli(&["connect", target]);
        assert_eq!(out.status.code(), Some(6), "{target}: {}", text(&out));
        assert!(text(&out).contains("revoked"), "{target}: {}", text(&out));
    }
    let out = b.cli(&["resolve", &addr_c]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let out = net.cli_in(1, &["ping", "carol", "-c", "1"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    // The session B had with carol is gone, and traffic to her is not let through.
    assert!(
        wait_for(Duration::from_secs(10), || !text(&b.cli(&["peers"]))
            .contains(&addr_c)),
        "B still has a session with revoked carol: {}",
        log(b)
    );
    assert!(
        !ping(&net.lan.hosts[1], &ip_c),
        "revoked carol still answers"
    );
    assert!(net.dig(1, "carol.meta").contains("NXDOMAIN"));
    // Carol herself (still on A, which does not refuse its own identity) keeps
    // sending to B: A's old session dies unanswered, carol handshakes again, and B
    // drops each initiation from the revoked key before replying.
    let (_, ip_b) = b.identity();
    let carol_refused = wait_for(Duration::from_secs(30), || {
        let _ = net.lan.hosts[0].sh(&format!("ping -6 -n -c 1 -W 1 -I {ip_c} {ip_b}"));
        b.counter("denied") > 0
    });
    assert!(
        carol_refused,
        "B never refused carol's handshake: {}",
        log(b)
    );
    assert!(!text(&b.cli(&["peers"])).contains(&addr_c));
    // A revoked name cannot move any more.
    let out = a.cli(&["name", "transfer", "carol", &addr_a]);
    assert!(!out.status.success(), "{}", text(&out));
    // alice is untouched.
    assert_eq!(net.dig_short(1, "alice.meta"), ip_a);
}

#[test]
fn names_keep_answering_while_the_chain_node_is_down() {
    let Some(anvil) = prerequisites("names_keep_answering_while_the_chain_node_is_down") else {
        return;
    };
    let mut net = Net::start(anvil, 1);
    net.daemons.push(net.daemon(0));
    let (addr_a, ip_a) = net.daemons[0].identity();
    let reg = json(&net.daemons[0].cli(&["--json", "name", "register", "alice"]));
    assert_eq!(reg["owner"], addr_a.as_str());

    net.anvil.down();
    let a = &net.daemons[0];
    assert!(
        wait_for(Duration::from_secs(15), || chain_status(a)["stale"] == true),
        "status does not report the node down: {}",
        chain_status(a)
    );
    let st = chain_status(a);
    assert!(st["error"].as_str().is_some_and(|e| !e.is_empty()), "{st}");
    let shown = show(a, "alice").unwrap();
    assert_eq!(shown["owner"], addr_a.as_str());
    assert_eq!(shown["stale"], true);
    let human = a.cli(&["name", "show", "alice"]);
    assert!(text(&human).contains("out of date"), "{}", text(&human));
    assert!(a.cli(&["status"]).stdout.starts_with(b"metanetd"));
    assert!(text(&a.cli(&["status"])).contains("STALE"));
    assert_eq!(net.dig_short(0, "alice.meta"), ip_a);
    // A write cannot happen now, and says why.
    let out = a.cli(&["name", "register", "bob"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("RPC node"), "{}", text(&out));

    // Restarted with the node still down, the daemon answers from its cache.
    net.daemons.clear();
    net.daemons.push(net.daemon(0));
    let a = &net.daemons[0];
    assert!(
        wait_for(Duration::from_secs(10), || show(a, "alice")
            .is_some_and(|v| v["owner"] == addr_a.as_str())),
        "no answer from the cache: {}",
        log(a)
    );
    assert_eq!(net.dig_short(0, "alice.meta"), ip_a);

    // The node comes back (same chain): fresh again.
    net.anvil.up();
    let a = &net.daemons[0];
    assert!(
        wait_for(Duration::from_secs(15), || chain_status(a)["stale"]
            == false),
        "still stale after the node came back: {}",
        chain_status(a)
    );
    assert_eq!(show(a, "alice").unwrap()["stale"], false);
}

#[test]
fn names_without_a_chain_say_how_to_configure_one() {
    if !root_or_skip("names_without_a_chain_say_how_to_configure_one") {
        return;
    }
    let (lan, tmp) = (Lan::new(1), TempDir::new());
    let ns = &lan.hosts[0];
    // Incomplete or unusable chain settings stop metanetd with exit code 2.
    let loose = tmp.0.join("loose.key");
    std::fs::write(&loose, DEV_KEY).unwrap();
    let contract = "0x5fbdb2315678afecb367f032d93f642f64180aa3";
    let cases: [(&[&str], &str); 4] = [
        (
            &["--chain-rpc", "http://198.18.0.9:8545"],
            "--chain-contract",
        ),
        (&["--chain-confirmations", "6"], "--chain-rpc"),
        (
            &[
                "--chain-rpc",
                "https://198.18.0.9",
                "--chain-contract",
                contract,
            ],
            "no TLS",
        ),
        (
            &[
                "--chain-rpc",
                "http://198.18.0.9:8545",
                "--chain-contract",
                contract,
                "--chain-key",
                loose.to_str().unwrap(),
            ],
            "chmod 600",
        ),
    ];
    for (i, (flags, want)) in cases.into_iter().enumerate() {
        let dir = tmp.0.join(format!("bad{i}"));
        let out = ns
            .cmd(Path::new("timeout"))
            .arg("20")
            .arg(bin("metanetd"))
            .args(["--config", "/dev/null", "--tun", &format!("mncb{i}")])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(dir.join("s"))
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", text(&out));
        assert!(text(&out).contains(want), "{flags:?}: {}", text(&out));
    }

    // Without a chain, names are refused with the flags that would enable them.
    let d = Daemon::start(ns, &tmp.0.join("d"), "mncn");
    for args in [
        &["connect", "alice"][..],
        &["resolve", "alice"],
        &["name", "show", "alice"],
        &["name", "register", "alice"],
        &["id", "revoke", "--yes"],
    ] {
        let out = d.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("--chain-rpc"),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert!(chain_status(&d).is_null());
}

#[test]
fn sighup_applies_changed_chain_settings() {
    let Some(anvil) = prerequisites("sighup_applies_changed_chain_settings") else {
        return;
    };
    let net = Net::start(anvil, 1);
    // First pointed at a port where no node listens (on the daemon's own loopback).
    let cfg = net.tmp.0.join("h0.toml");
    let write = |rpc: &str| {
        std::fs::write(
            &cfg,
            format!(
                "chain-rpc = \"{rpc}\"\nchain-contract = \"{}\"\nchain-key = \"{}\"\n\
                 dns-listen = \"127.0.0.1:{DNS_PORT}\"\n",
                net.contract,
                net.key.display()
            ),
        )
        .unwrap();
    };
    write("http://127.0.0.1:9");
    let d = Daemon::start_with_config(&net.lan.hosts[0], &net.tmp.0.join("h0"), "mnc0", &cfg);
    assert!(
        wait_for(Duration::from_secs(15), || chain_status(&d)["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())),
        "no error from a dead RPC node: {}",
        chain_status(&d)
    );
    // The operator fixes the file and reloads: the new node is followed, and writes go
    // through it, without a restart.
    write(&net.anvil.url());
    d.reload();
    assert!(
        wait_for(Duration::from_secs(20), || chain_status(&d)["synced_block"]
            .is_u64()
            && chain_status(&d)["stale"] == false),
        "the reload did not switch to the live node: {}\n{}",
        chain_status(&d),
        log(&d)
    );
    assert!(log(&d).contains("chain settings applied"), "{}", log(&d));
    assert!(!log(&d).contains("next restart"), "{}", log(&d));
    let (addr, _) = d.identity();
    let reg = json(&d.cli(&["--json", "name", "register", "carol"]));
    assert_eq!(reg["owner"], addr.as_str(), "{reg}");
}

#[test]
fn wallet_rotation_hands_the_address_and_its_names_to_a_new_key() {
    let Some(anvil) = prerequisites("wallet_rotation_hands_the_address_and_its_names_to_a_new_key")
    else {
        return;
    };
    let mut net = Net::start(anvil, 2);
    net.daemons.push(net.daemon(0));
    net.daemons.push(net.daemon(1));
    for d in &net.daemons {
        assert!(
            wait_for(Duration::from_secs(20), || dht_peers(d) >= 1),
            "DHT did not form: {}",
            log(d)
        );
    }
    let (a, b) = (&net.daemons[0], &net.daemons[1]);
    let (old, old_ip) = a.identity();
    let reg = json(&a.cli(&["--json", "name", "register", "erin"]));
    assert_eq!(reg["owner"], old.as_str(), "{reg}");

    // The default identity rotates its wallet key: a new address, recorded on chain.
    let r = json(&a.cli(&["--json", "id", "rotate", "--wallet"]));
    assert_eq!(r["identity"], "default", "{r}");
    assert_eq!(r["from"], old.as_str(), "{r}");
    let new = r["address"].as_str().unwrap().to_owned();
    let new_ip = r["ipv6"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(r["block"].as_u64().unwrap() > 0, "{r}");
    // A serves it at once; the kernel prefers it as the source, the old one is deprecated.
    assert_eq!(a.identity(), (new.clone(), new_ip.clone()));
    let addrs = net.lan.hosts[0].sh("ip -6 addr show dev mnc0");
    let addrs = String::from_utf8_lossy(&addrs.stdout).into_owned();
    let line = |ip: &str| {
        addrs
            .lines()
            .find(|l| l.contains(&format!("{ip}/")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(!line(&new_ip).is_empty(), "{addrs}");
    assert!(!line(&new_ip).contains("deprecated"), "{addrs}");
    assert!(line(&old_ip).contains("deprecated"), "{addrs}");
    // No key file is left for the old key, and the pending one became the key.
    let ids = net.tmp.0.join("h0/state/identities");
    let files: Vec<String> = std::fs::read_dir(&ids)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["default.key"], "{files:?}");

    // B sees the name owned by the new address, reaches it by name, and is told where
    // the old address went.
    assert!(
        wait_for(Duration::from_secs(15), || show(b, "erin")
            .is_some_and(|v| v["owner"] == new.as_str())),
        "B does not see erin moved: {:?}\n{}",
        show(b, "erin"),
        log(b)
    );
    let out = b.cli(&["connect", "erin"]);
    assert!(
        out.status.success(),
        "connect erin: {}\n{}",
        text(&out),
        log(a)
    );
    assert!(
        wait_for(Duration::from_secs(10), || ping(&net.lan.hosts[1], &new_ip)),
        "B cannot ping the rotated identity at {new_ip}: {}",
        log(a)
    );
    let out = b.cli(&["connect", &old]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(
        text(&out).contains("rotated to") && text(&out).contains(&new),
        "{}",
        text(&out)
    );
    // An identity that does not exist is refused.
    let out = a.cli(&["id", "rotate", "--wallet", "nobody"]);
    assert!(!out.status.success(), "{}", text(&out));

    // A restart keeps the new key, as the only address on the TUN.
    net.daemons[0].stop();
    let a = net.daemon(0);
    assert_eq!(a.identity(), (new.clone(), new_ip.clone()));
    let addrs = net.lan.hosts[0].sh("ip -6 addr show dev mnc0");
    assert!(
        !String::from_utf8_lossy(&addrs.stdout).contains(&old_ip),
        "{}",
        String::from_utf8_lossy(&addrs.stdout)
    );
    net.daemons[0] = a;
}
