//! The `.meta` DNS view: `dig` and ordinary name resolution in a namespace find a peer
//! by `<address>.meta`, and the view refuses to be an open resolver. Real daemons in
//! namespaces; skipped when not root.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use metanet_tests::{root_or_skip, wait_for, Daemon, Pair, TempDir};

const PORT: u16 = 51820;

/// `/etc/netns/<ns>/resolv.conf`, which `ip netns exec` mounts over /etc/resolv.conf;
/// removed on drop.
struct ResolvConf(std::path::PathBuf);

impl ResolvConf {
    fn new(ns: &str, nameserver: &str) -> Self {
        let dir = std::path::PathBuf::from(format!("/etc/netns/{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )
        .unwrap();
        ResolvConf(dir)
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn meta_names_resolve_to_overlay_addresses() {
    if !root_or_skip("meta_names_resolve_to_overlay_addresses") {
        return;
    }
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let a = Daemon::start(&pair.a, &tmp.0.join("a"), "mnsa");
    let b = Daemon::start(&pair.b, &tmp.0.join("b"), "mnsb");
    let (addr_b, ip_b) = b.identity();
    let (_, ip_a) = a.identity();
    let dig = |q: &str| {
        let out = pair.a.sh(&format!("dig +time=2 +tries=1 @{ip_a} {q}"));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = pair.a.sh(&format!(
        "dig +short +time=2 +tries=1 AAAA {addr_b}.meta @{ip_a}"
    ));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ip_b);
    assert!(dig(&format!("AAAA nobody-{}.meta", std::process::id())).contains("NXDOMAIN"));
    assert!(dig("AAAA example.com").contains("REFUSED"));
    // Negative answers carry the SOA of meta.; EDNS is answered, unknown versions refused.
    let nx = dig(&format!("+edns=0 AAAA nobody-{}.meta", std::process::id()));
    assert!(
        nx.contains("AUTHORITY SECTION") && nx.contains("SOA"),
        "{nx}"
    );
    assert!(
        nx.contains("OPT PSEUDOSECTION") && nx.contains("udp: 1232"),
        "{nx}"
    );
    let badvers = dig(&format!("+edns=1 +noednsnegotiation AAAA {addr_b}.meta"));
    assert!(badvers.contains("BADVERS"), "{badvers}");

    // With the view as the namespace's resolver, ordinary tools use the name.
    let _conf = ResolvConf::new(&pair.a.name, &ip_a);
    let r = a.connect(&addr_b, &format!("{}:{PORT}", pair.ip_b));
    assert!(r.get("error").is_none(), "{r}");
    assert!(
        wait_for(Duration::from_secs(10), || pair
            .a
            .sh(&format!("ping -6 -c 1 -W 2 {addr_b}.meta"))
            .status
            .success()),
        "ping by .meta name failed"
    );
}

/// `metanet status --json` through `d`.
fn status(d: &Daemon) -> serde_json::Value {
    let out = d.cli(&["--json", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn hosts_file_lists_peers_and_is_restored_on_stop() {
    if !root_or_skip("hosts_file_lists_peers_and_is_restored_on_stop") {
        return;
    }
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let hosts = tmp.0.join("hosts");
    // Foreign content, without a final newline: it must come back byte for byte.
    let original = "127.0.0.1\tlocalhost\n# keep this line\n::1 localhost";
    std::fs::write(&hosts, original).unwrap();
    let config = tmp.0.join("a.toml");
    std::fs::write(
        &config,
        format!(
            "dns-system = \"hosts\"\nhosts-file = \"{}\"\n",
            hosts.display()
        ),
    )
    .unwrap();
    let mut a = Daemon::start_with_config(&pair.a, &tmp.0.join("a"), "mnha", &config);
    let b = Daemon::start(&pair.b, &tmp.0.join("b"), "mnhb");
    let (addr_a, ip_a) = a.identity();
    let (addr_b, ip_b) = b.identity();

    let s = status(&a);
    assert_eq!(s["dns"]["listen"], format!("[{ip_a}]:53"), "{s}");
    assert_eq!(s["dns"]["state"], "serving", "{s}");
    assert_eq!(s["dns"]["system"], "hosts", "{s}");
    assert_eq!(s["dns"]["system_state"], "active", "{s}");
    // In a network namespace `auto` leaves the host's resolver alone.
    let s = status(&b);
    assert_eq!(s["dns"]["state"], "serving", "{s}");
    assert_eq!(s["dns"]["system"], "off", "{s}");

    let read = || std::fs::read_to_string(&hosts).unwrap_or_default();
    let own = format!("{ip_a}\t{addr_a}.meta\n");
    assert!(
        wait_for(Duration::from_secs(10), || read().contains(&own)),
        "own identity missing: {}",
        read()
    );
    let r = a.connect(&addr_b, &format!("{}:{PORT}", pair.ip_b));
    assert!(r.get("error").is_none(), "{r}");
    let peer = format!("{ip_b}\t{addr_b}.meta\n");
    assert!(
        wait_for(Duration::from_secs(10), || read().contains(&peer)),
        "peer missing: {}",
        read()
    );
    let text = read();
    assert!(text.starts_with(original), "{text}");
    assert!(text.contains("# BEGIN metanet (managed by metanetd, do not edit)\n"));
    assert!(text.ends_with("# END metanet\n"), "{text}");
    // One `<ipv6> <address>.meta` line per name, as the resolver's files module reads.
    assert!(
        text.lines().any(|l| l
            .split_whitespace()
            .eq([ip_b.as_str(), &format!("{addr_b}.meta")])),
        "{text}"
    );

    assert_eq!(a.stop(), Some(0));
    assert_eq!(read(), original, "the block is removed on a clean stop");
}
