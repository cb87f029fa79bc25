//! podman containers on metanet through `metanet-cni`: two hosts (namespaces joined by
//! a veth, a metanetd in each), container A on a network of metanet-cni alone attached
//! to host 1's daemon, container B on a network chaining metanet-cni after the
//! reference `bridge` attached to host 2's daemon. podman runs in the test's own
//! namespace with a private configuration (`metanet_tests::podman`); its containers'
//! namespaces are podman's, but their overlay packets go TUN → daemon → UDP over the
//! veth → daemon → TUN. A pings B by overlay IPv6, by `<address>.meta` and (with anvil)
//! by a name on the chain, through the DNS view podman wrote into its resolv.conf;
//! `podman rm` takes each attachment away. Skipped when not root or without podman.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use metanet_tests::chain::{self, Anvil};
use metanet_tests::podman::{podman_or_skip, Podman};
use metanet_tests::{log, tag, wait_for, Daemon, Pair, TempDir};
use serde_json::Value;

/// The daemons' UDP port.
const PORT: u16 = 51820;

/// One container and the attachment the plugin made for it.
#[derive(Debug)]
struct Ctr {
    name: String,
    id: String,
    identity: String,
    address: String,
    ipv6: String,
    /// The DNS view's address, as the attachment reports it (`[ip]:53`).
    dns: String,
}

/// Fields drop in order: podman's containers first (their DEL needs the daemons), then
/// the daemons, anvil, the namespaces and the scratch directory.
struct World {
    podman: Podman,
    h1: Daemon,
    h2: Daemon,
    _anvil: Option<Anvil>,
    pair: Pair,
    _tmp: TempDir,
    net_a: String,
    a: Ctr,
    b: Ctr,
}

/// The attachment of container `id` on `d`.
fn attachment_of(d: &Daemon, id: &str) -> Option<Value> {
    d.attachments()
        .into_iter()
        .find(|a| a["container_id"] == id)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A bridge subnet per world of this process, in 198.18.0.0/15 and away from the
/// ranges of `Pair` (100-199) and `Lan` (200-249).
fn subnet() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "198.18.{}.0/24",
        250 + N.fetch_add(1, Ordering::Relaxed) % 6
    )
}

impl World {
    /// The two hosts, their daemons (following the chain at `anvil` when given), the
    /// two networks and the two containers.
    fn new(anvil: Option<PathBuf>) -> World {
        let pair = Pair::new();
        let tmp = TempDir::new();
        // anvil on host 1, reached by host 2 over the veth; the registry deployed there.
        let chain = anvil.map(|bin| {
            let anvil = Anvil::start(bin, &pair.a, &pair.ip_a, &tmp.0);
            let (key, contract) =
                chain::deploy(&pair.a, &anvil, &tmp.0, &["--min-reveal-delay", "2"]);
            let flags = vec![
                "--chain-rpc".to_owned(),
                anvil.url(),
                "--chain-contract".to_owned(),
                contract,
                "--chain-key".to_owned(),
                key.display().to_string(),
            ];
            (anvil, flags)
        });
        let flags: Vec<&str> = chain
            .as_ref()
            .map(|(_, f)| f.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let null = Path::new("/dev/null");
        let h1 = Daemon::start_with(&pair.a, &tmp.0.join("h1"), "mn0", null, &flags);
        let h2 = Daemon::start_with(&pair.b, &tmp.0.join("h2"), "mn0", null, &flags);
        if chain.is_some() {
            for d in [&h1, &h2] {
                // Name commands are refused until the first round of the registry.
                let synced = wait_for(Duration::from_secs(30), || {
                    d.request(r#"{"id":9,"method":"status"}"#)
                        .is_some_and(|v| v["result"]["chain"]["synced_block"].is_u64())
                });
                assert!(synced, "the daemon did not sync the chain: {}", log(d));
            }
        }

        let mut podman = Podman::new();
        let t = tag();
        let net_a = format!("mnp{t}a");
        let net_b = format!("mnp{t}b");
        podman.standalone(&net_a, &h1.socket);
        podman.bridged(&net_b, &format!("mnpbr{t}"), &subnet(), &h2.socket);
        let a = Self::container(&mut podman, &h1, &format!("mnp-{t}-a"), &net_a);
        let b = Self::container(&mut podman, &h2, &format!("mnp-{t}-b"), &net_b);
        World {
            podman,
            h1,
            h2,
            _anvil: chain.map(|(anvil, _)| anvil),
            pair,
            _tmp: tmp,
            net_a,
            a,
            b,
        }
    }

    /// `podman run` container `name` on `network`; its attachment on `d`.
    fn container(podman: &mut Podman, d: &Daemon, name: &str, network: &str) -> Ctr {
        let id = podman.run(name, network, &[]);
        assert_eq!(id.len(), 64, "podman run printed {id:?}");
        let a = attachment_of(d, &id).unwrap_or_else(|| {
            panic!(
                "no attachment for {name} ({id}): {:?}\n{}",
                d.attachments(),
                log(d)
            )
        });
        assert_eq!(a["state"], "up", "{a}");
        assert_eq!(a["network"], network, "{a}");
        let s = |k: &str| a[k].as_str().unwrap().to_owned();
        Ctr {
            name: name.to_owned(),
            id,
            identity: s("identity"),
            address: s("address"),
            ipv6: s("ipv6"),
            dns: s("dns"),
        }
    }

    /// B's identity on host 2 connects to A's at host 1's endpoint: from then on each
    /// daemon knows the other container's identity.
    fn connect(&self) {
        let endpoint = format!("{}:{PORT}", self.pair.ip_a);
        let out = self.h2.cli(&[
            "--json",
            "connect",
            &self.a.address,
            "--endpoint",
            &endpoint,
            "--identity",
            &self.b.identity,
        ]);
        assert!(out.status.success(), "connect: {}", text(&out));
    }

    /// `ping -6` of `target` (an address or a name) from container `from`, retried for
    /// up to `secs` while the session comes up; then three that must be answered.
    fn pings(&self, from: &Ctr, target: &str, secs: u64) -> bool {
        let once = |count: u32| {
            self.podman
                .exec(&from.name, &format!("ping -6 -c {count} -w 10 {target}"))
        };
        wait_for(Duration::from_secs(secs), || once(1).status.success()) && {
            let out = once(3);
            out.status.success() || {
                eprintln!("ping {target} from {}: {}", from.name, text(&out));
                false
            }
        }
    }
}

#[test]
fn podman_containers_on_two_hosts_reach_each_other_over_the_overlay() {
    if !podman_or_skip("podman_containers_on_two_hosts_reach_each_other_over_the_overlay") {
        return;
    }
    let mut w = World::new(None);
    let (a, b) = (&w.a, &w.b);

    // A (metanet-cni alone): its overlay /128 on the runtime's eth0 and the overlay
    // route, nothing else; podman took the result (it parses the interface's MAC).
    let out = w
        .podman
        .exec(&a.name, "ip -6 -o addr show dev eth0; ip -6 route");
    let shown = text(&out);
    assert!(shown.contains(&format!("{}/128", a.ipv6)), "{shown}");
    assert!(shown.contains("fd00::/8 dev eth0"), "{shown}");
    let inspect = w.podman.podman(&[
        "inspect",
        "--format",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").GlobalIPv6Address}}}}",
            w.net_a
        ),
        &a.name,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        a.ipv6,
        "{}",
        text(&inspect)
    );
    // B (after bridge): the bridge's eth0 with its IPv4, ours beside it.
    let v4 = text(&w.podman.exec(&b.name, "ip -4 addr show dev eth0"));
    assert!(v4.contains("inet 198.18.25"), "{v4}");
    let v6 = text(&w.podman.exec(&b.name, "ip -6 addr show dev mn-eth0"));
    assert!(v6.contains(&format!("{}/128", b.ipv6)), "{v6}");

    // Container to container across the hosts, both ways, by overlay IPv6.
    w.connect();
    assert!(
        w.pings(a, &b.ipv6, 20),
        "A cannot ping B at {}:\nhost 1: {}\nhost 2: {}",
        b.ipv6,
        log(&w.h1),
        log(&w.h2)
    );
    assert!(w.pings(b, &a.ipv6, 10), "B cannot ping A at {}", a.ipv6);
    let on_h1 = attachment_of(&w.h1, &a.id).unwrap();
    assert!(on_h1["tx_packets"].as_u64().unwrap() >= 4, "{on_h1}");
    assert!(on_h1["rx_packets"].as_u64().unwrap() >= 4, "{on_h1}");

    // podman 4.3's CNI backend writes the result's DNS into the container's
    // resolv.conf: host 1's DNS view first, `meta` searched.
    let dns_ip = a.dns.trim_start_matches('[').trim_end_matches("]:53");
    let resolv = text(&w.podman.exec(&a.name, "cat /etc/resolv.conf"));
    let first = resolv
        .lines()
        .find(|l| l.starts_with("nameserver"))
        .unwrap_or_default();
    assert_eq!(first, format!("nameserver {dns_ip}"), "{resolv}");
    assert!(resolv.lines().any(|l| l == "search meta"), "{resolv}");
    // B by its `<address>.meta` name: looked up through host 1's view (reached through
    // host 1's local delivery), then pinged by name.
    let name = format!("{}.meta", b.address);
    let look = text(&w.podman.exec(&a.name, &format!("nslookup {name}")));
    assert!(look.contains(&b.ipv6), "nslookup {name}: {look}");
    assert!(w.pings(a, &name, 10), "A cannot ping {name}");

    // `podman rm` calls DEL: the attachment and the container's own identity go.
    let (a_name, a_id, a_identity) = (a.name.clone(), a.id.clone(), a.identity.clone());
    let (b_name, b_id) = (b.name.clone(), b.id.clone());
    let out = w.podman.rm(&a_name);
    assert!(out.status.success(), "podman rm: {}", text(&out));
    assert!(
        wait_for(Duration::from_secs(10), || attachment_of(&w.h1, &a_id)
            .is_none()),
        "A's attachment outlived the container: {:?}",
        w.h1.attachments()
    );
    let ids = w.h1.cli_json(&["id", "list"]);
    assert!(
        !ids.as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == a_identity.as_str()),
        "{ids}"
    );
    let out = w.podman.rm(&b_name);
    assert!(out.status.success(), "podman rm: {}", text(&out));
    assert!(
        wait_for(Duration::from_secs(10), || attachment_of(&w.h2, &b_id)
            .is_none()),
        "B's attachment outlived the container: {:?}",
        w.h2.attachments()
    );
}

#[test]
fn a_podman_container_reaches_another_by_its_name_on_the_chain() {
    let test = "a_podman_container_reaches_another_by_its_name_on_the_chain";
    if !podman_or_skip(test) {
        return;
    }
    let Some(anvil) = chain::prerequisites(test) else {
        return;
    };
    let w = World::new(Some(anvil));
    let (a, b) = (&w.a, &w.b);
    w.connect();
    assert!(w.pings(a, &b.ipv6, 20), "A cannot ping B at {}", b.ipv6);

    // Host 2 registers a name for B's identity (commit, reveal after 2 blocks).
    let name = format!("pod-{}", tag());
    let reg =
        w.h2.cli_json(&["name", "register", &name, "--identity", &b.identity]);
    assert_eq!(reg["owner"], b.address.as_str(), "{reg}");
    assert_eq!(reg["status"], "registered", "{reg}");

    // Host 1 follows the chain; A asks its view, then pings B by that name.
    let meta = format!("{name}.meta");
    let mut look = String::new();
    let found = wait_for(Duration::from_secs(20), || {
        look = text(&w.podman.exec(&a.name, &format!("nslookup {meta}")));
        look.contains(&b.ipv6)
    });
    assert!(
        found,
        "nslookup {meta} in A: {look}\nhost 1: {}",
        log(&w.h1)
    );
    assert!(w.pings(a, &meta, 10), "A cannot ping {meta}");
}
