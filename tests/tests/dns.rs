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
