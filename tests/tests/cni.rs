//! The CNI plugin run the way a container runtime runs it: `metanet-cni` with the
//! `CNI_*` variables and a network configuration on stdin, against a real metanetd in a
//! namespace, for "containers" that are namespaces made with `ip netns`. Every verb
//! (VERSION, ADD, CHECK, DEL, GC, STATUS), chained after a bridge-like plugin, and the
//! error objects a runtime gets. Skipped when not root.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use metanet_tests::{bin, ping, root_or_skip, tag, wait_for, Daemon, Netns, Pair, TempDir};
use serde_json::{json, Value};

/// What one plugin run gave.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The result printed on success (exit 0; `Null` when nothing was printed).
    fn ok(&self) -> Value {
        assert_eq!(self.code, Some(0), "{self:?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&self.stdout).unwrap()
        }
    }

    /// The error object of a failed run (exit 1); asserts its CNI code is `code`.
    fn error(&self, code: u64) -> Value {
        assert_eq!(self.code, Some(1), "{self:?}");
        let v: Value = serde_json::from_str(&self.stdout).unwrap();
        assert_eq!(v["code"], code, "{self:?}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(v["cniVersion"].is_string(), "{v}");
        v
    }
}

/// Run the plugin for `command` with the variables `vars` (nothing else of the
/// runtime's environment is inherited) and `stdin`; bounded.
fn cni(command: &str, vars: &[(&str, &str)], stdin: &str) -> Run {
    let mut c = Command::new("timeout");
    c.arg("30").arg(bin("metanet-cni"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CNI_") {
            c.env_remove(k);
        }
    }
    c.env("CNI_COMMAND", command)
        .env("CNI_PATH", "/usr/lib/cni")
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A network configuration of `network` for the daemon at `socket`; `extra` is more
/// JSON members, each starting with a comma.
fn conf(version: &str, network: &str, socket: &Path, extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"{network}","type":"metanet-cni","socket":"{}","timeout":5{extra}}}"#,
        socket.display()
    )
}

/// `conf` with the result of an earlier ADD as `prevResult` (what CHECK and DEL get).
fn with_prev(version: &str, network: &str, socket: &Path, prev: &Value) -> String {
    conf(
        version,
        network,
        socket,
        &format!(r#","prevResult":{prev}"#),
    )
}

/// A "container": a namespace and a runtime-style id (64 hex-ish characters).
struct Container {
    ns: Netns,
    id: String,
}

impl Container {
    fn new(t: &str, n: u32) -> Container {
        let ns = Netns::new(format!("mncni-{t}-{n}"));
        let id = format!("{t}{n}{}", "0123456789abcdef".repeat(4));
        Container {
            ns,
            id: id[..64].to_owned(),
        }
    }

    fn netns(&self) -> String {
        format!("/run/netns/{}", self.ns.name)
    }

    /// The identity the plugin derives for this container: `c-` and 24 characters.
    fn derived(&self) -> String {
        format!("c-{}", &self.id[..24])
    }

    /// Run the plugin for this container as interface `ifname` (and `args` as CNI_ARGS).
    fn cni(&self, command: &str, ifname: &str, args: &str, stdin: &str) -> Run {
        let netns = self.netns();
        cni(
            command,
            &[
                ("CNI_CONTAINERID", &self.id),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", ifname),
                ("CNI_ARGS", args),
            ],
            stdin,
        )
    }

    fn sh(&self, script: &str) -> String {
        let out = self.ns.sh(script);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn identities(d: &Daemon) -> Vec<String> {
    d.cli_json(&["id", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

/// A daemon on host A of a fresh pair, and the scratch directory it lives in.
struct Host {
    daemon: Daemon,
    _pair: Pair,
    tmp: TempDir,
    /// The daemon's default identity's overlay IPv6: where its DNS view listens.
    ipv6: String,
    network: String,
}

impl Host {
    fn new() -> Host {
        let pair = Pair::new();
        let tmp = TempDir::new();
        let daemon = Daemon::start(&pair.a, &tmp.0.join("h1"), "mn0");
        let (_, ipv6) = daemon.identity();
        Host {
            daemon,
            _pair: pair,
            tmp,
            ipv6,
            network: format!("mnnet-{}", tag()),
        }
    }

    fn conf(&self, version: &str, extra: &str) -> String {
        conf(version, &self.network, &self.daemon.socket, extra)
    }

    fn with_prev(&self, version: &str, prev: &Value) -> String {
        with_prev(version, &self.network, &self.daemon.socket, prev)
    }
}

#[test]
fn add_check_del_against_a_real_daemon() {
    if !root_or_skip("add_check_del_against_a_real_daemon") {
        return;
    }
    let h = Host::new();
    let d = &h.daemon;
    let t = tag();
    let c = Container::new(&t, 1);
    let add = || c.cni("ADD", "eth0", "", &h.conf("1.0.0", ""));

    // ADD: the overlay /128 on the runtime's interface, the overlay route, the DNS view.
    let result = add().ok();
    let list = d.attachments();
    assert_eq!(list.len(), 1, "{list:?}");
    let a = &list[0];
    let ip = a["ipv6"].as_str().unwrap().to_owned();
    assert_eq!(a["identity"], c.derived().as_str(), "{a}");
    assert_eq!(a["container_id"], c.id.as_str(), "{a}");
    assert_eq!(a["network"], h.network.as_str(), "{a}");
    assert_eq!(a["interface"], "eth0", "{a}");
    assert_eq!(a["netns"], c.netns().as_str(), "{a}");
    assert_eq!(a["state"], "up", "{a}");
    assert_eq!(a["dns"], format!("[{}]:53", h.ipv6), "{a}");
    assert_eq!(
        result,
        json!({
            "cniVersion": "1.0.0",
            // podman's CNI backend refuses a container interface without a MAC.
            "interfaces": [{"name": "eth0", "mac": "00:00:00:00:00:00", "sandbox": c.netns()}],
            "ips": [{"address": format!("{ip}/128"), "interface": 0}],
            "routes": [{"dst": "fd00::/8"}],
            "dns": {"nameservers": [h.ipv6.as_str()], "search": ["meta"]}
        })
    );
    assert!(identities(d).contains(&c.derived()));
    // Inside the namespace: that address alone, the route, and a working path to the
    // host's identity (local delivery).
    let addrs = c.sh("ip -6 -o addr show dev eth0 scope global");
    assert!(addrs.contains(&format!("{ip}/128")), "{addrs}");
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
    let routes = c.sh("ip -6 route show dev eth0");
    assert!(routes.contains("fd00::/8"), "{routes}");
    assert!(ping(&c.ns, &h.ipv6), "the container cannot reach its host");

    // ADD again: the same answer, still one attachment.
    assert_eq!(add().ok(), result);
    assert_eq!(d.attachments().len(), 1);

    // CHECK with the cached result: fine, nothing printed.
    let check = || c.cni("CHECK", "eth0", "", &h.with_prev("1.0.0", &result));
    assert_eq!(check().ok(), Value::Null);
    // The address deleted inside the container: broken, code 100, saying what.
    let del = c.ns.sh(&format!("ip -6 addr del {ip}/128 dev eth0"));
    assert!(del.status.success(), "{del:?}");
    let broken = check().error(100);
    let msg = broken["msg"].as_str().unwrap();
    assert!(msg.starts_with("attachment broken"), "{broken}");

    // DEL: the attachment, its interface and the derived identity go; again is fine.
    let del = || c.cni("DEL", "eth0", "", &h.with_prev("1.0.0", &result));
    assert_eq!(del().ok(), Value::Null);
    assert!(d.attachments().is_empty(), "{:?}", d.attachments());
    assert!(!identities(d).contains(&c.derived()), "{:?}", identities(d));
    assert!(
        wait_for(Duration::from_secs(5), || !c
            .sh("ip -o link")
            .contains("eth0")),
        "the interface stayed: {}",
        c.sh("ip -o link")
    );
    assert_eq!(del().ok(), Value::Null);
    // Nothing is attached now: CHECK says the container is unknown.
    check().error(3);
    assert_eq!(identities(d), ["default"]);
}

#[test]
fn chained_after_a_bridge_like_plugin_and_a_named_identity() {
    if !root_or_skip("chained_after_a_bridge_like_plugin_and_a_named_identity") {
        return;
    }
    let h = Host::new();
    let d = &h.daemon;
    let c = Container::new(&tag(), 1);
    // What `bridge` would have made: a veth eth0 inside with its IPv4 (its peer, the
    // bridge's port, stays in the namespace too).
    let made = c.ns.sh("ip link add eth0 type veth peer name veth12ab && \
         ip addr add 198.18.251.5/24 dev eth0 && ip link set eth0 up");
    assert!(made.status.success(), "{made:?}");
    let prev = json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "mnbr0", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "veth12ab", "mac": "aa:bb:cc:dd:ee:02"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": c.netns()}
        ],
        "ips": [{"address": "198.18.251.5/24", "gateway": "198.18.251.1", "interface": 2}],
        "routes": [{"dst": "198.18.0.0/15", "gw": "198.18.251.1"}],
        "dns": {"nameservers": ["198.18.251.1"]}
    });
    let args = "IgnoreUnknown=1;METANET_IDENTITY=web";
    let result = c
        .cni("ADD", "eth0", args, &h.with_prev("1.1.0", &prev))
        .ok();
    let list = d.attachments();
    assert_eq!(list.len(), 1, "{list:?}");
    let a = &list[0];
    assert_eq!(a["identity"], "web", "{a}");
    // Every plugin of a chain gets the same CNI_IFNAME, and eth0 is the bridge's: ours
    // is beside it.
    assert_eq!(a["interface"], "mn-eth0", "{a}");
    let ip = a["ipv6"].as_str().unwrap();
    let mtu = a["mtu"].as_u64().unwrap();
    assert_eq!(
        result,
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "mnbr0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth12ab", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": c.netns()},
                {"name": "mn-eth0", "mac": "00:00:00:00:00:00", "sandbox": c.netns(), "mtu": mtu}
            ],
            "ips": [
                {"address": "198.18.251.5/24", "gateway": "198.18.251.1", "interface": 2},
                {"address": format!("{ip}/128"), "interface": 3}
            ],
            "routes": [{"dst": "198.18.0.0/15", "gw": "198.18.251.1"}, {"dst": "fd00::/8"}],
            "dns": {"nameservers": [h.ipv6.as_str(), "198.18.251.1"], "search": ["meta"]}
        })
    );
    // The bridge's interface is untouched; ours carries the /128.
    let v4 = c.sh("ip -4 -o addr show dev eth0");
    assert!(v4.contains("198.18.251.5/24"), "{v4}");
    let v6 = c.sh("ip -6 -o addr show dev mn-eth0 scope global");
    assert!(v6.contains(&format!("{ip}/128")), "{v6}");
    assert!(ping(&c.ns, &h.ipv6), "the container cannot reach its host");

    // ADD again with the same previous result: the same answer.
    let again = c
        .cni("ADD", "eth0", args, &h.with_prev("1.1.0", &prev))
        .ok();
    assert_eq!(again, result);
    assert_eq!(d.attachments().len(), 1);
    // CHECK and GC know the attachment by the runtime's interface name.
    let check = c.cni("CHECK", "eth0", args, &h.with_prev("1.1.0", &result));
    assert_eq!(check.ok(), Value::Null);
    let valid = format!(
        r#","cni.dev/valid-attachments":[{{"containerID":"{}","ifname":"eth0"}}]"#,
        c.id
    );
    assert_eq!(cni("GC", &[], &h.conf("1.1.0", &valid)).ok(), Value::Null);
    assert_eq!(d.attachments().len(), 1, "GC dropped a listed attachment");

    // DEL: the attachment goes, the named identity stays (its address is the name's),
    // and so does the bridge's interface.
    let del = c.cni("DEL", "eth0", args, &h.with_prev("1.1.0", &result));
    assert_eq!(del.ok(), Value::Null);
    assert!(d.attachments().is_empty());
    assert!(identities(d).contains(&"web".to_owned()));
    assert!(c.sh("ip -o link").contains("eth0"));
    assert!(!c.sh("ip -o link").contains("mn-eth0"));
}

#[test]
fn gc_detaches_only_what_the_runtime_no_longer_lists() {
    if !root_or_skip("gc_detaches_only_what_the_runtime_no_longer_lists") {
        return;
    }
    let h = Host::new();
    let d = &h.daemon;
    let t = tag();
    let cs: Vec<Container> = (1..=3).map(|n| Container::new(&t, n)).collect();
    for c in &cs {
        c.cni("ADD", "eth0", "", &h.conf("1.1.0", "")).ok();
    }
    // One attached by hand (`metanet attach`): not the runtime's, GC leaves it.
    let manual = Netns::new(format!("mncni-{t}-m"));
    d.cli_json(&["attach", "--netns", &manual.name, "--identity", "manual"]);
    assert_eq!(d.attachments().len(), 4);

    let valid = format!(
        r#","cni.dev/valid-attachments":[{{"containerID":"{}","ifname":"eth0"}}]"#,
        cs[1].id
    );
    // GC is 1.1 only.
    cni("GC", &[], &h.conf("1.0.0", &valid)).error(1);
    assert_eq!(d.attachments().len(), 4);
    assert_eq!(cni("GC", &[], &h.conf("1.1.0", &valid)).ok(), Value::Null);
    let left: Vec<String> = d
        .attachments()
        .iter()
        .map(|a| a["identity"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&cs[1].derived()), "{left:?}");
    assert!(left.contains(&"manual".to_owned()), "{left:?}");
    let ids = identities(d);
    assert!(ids.contains(&cs[1].derived()), "{ids:?}");
    for c in [&cs[0], &cs[2]] {
        assert!(!ids.contains(&c.derived()), "{ids:?}");
        assert!(
            wait_for(Duration::from_secs(5), || !c
                .sh("ip -o link")
                .contains("eth0")),
            "a collected attachment kept its interface"
        );
    }
    assert!(cs[1].sh("ip -o link").contains("eth0"));
}

#[test]
fn version_status_and_the_errors_a_runtime_sees() {
    if !root_or_skip("version_status_and_the_errors_a_runtime_sees") {
        return;
    }
    let h = Host::new();
    let d = &h.daemon;
    let c = Container::new(&tag(), 1);

    // VERSION: both versions spoken, whatever the config says.
    let v = cni("VERSION", &[], r#"{"cniVersion":"1.0.0"}"#).ok();
    assert_eq!(v["cniVersion"], "1.1.0");
    let supported = v["supportedVersions"].as_array().unwrap();
    assert!(supported.contains(&json!("1.0.0")), "{v}");
    assert!(supported.contains(&json!("1.1.0")), "{v}");

    // STATUS: fine with the daemon up; 50 for a socket nobody serves, whether the file
    // is missing or left behind by a listener that is gone.
    assert_eq!(cni("STATUS", &[], &h.conf("1.1.0", "")).ok(), Value::Null);
    let missing = h.tmp.0.join("nobody.sock");
    let stale = h.tmp.0.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    for socket in [&missing, &stale] {
        let e = cni("STATUS", &[], &conf("1.1.0", "n", socket, "")).error(50);
        assert!(
            e["msg"].as_str().unwrap().contains("metanetd unreachable"),
            "{e}"
        );
        // ADD with nobody there: try again later; DEL: nothing to undo, success (and
        // a note on stderr).
        c.cni("ADD", "eth0", "", &conf("1.0.0", "n", socket, ""))
            .error(11);
        let del = c.cni("DEL", "eth0", "", &conf("1.0.0", "n", socket, ""));
        assert_eq!(del.ok(), Value::Null);
        assert!(del.stderr.contains("nothing detached"), "{del:?}");
    }

    // Malformed JSON: 6. No CNI_NETNS for ADD: 4. A version not spoken: 1, in the
    // newest version's format.
    c.cni("ADD", "eth0", "", r#"{"cniVersion":"1.0.0","name":"#)
        .error(6);
    let no_netns = cni(
        "ADD",
        &[("CNI_CONTAINERID", &c.id), ("CNI_IFNAME", "eth0")],
        &h.conf("1.0.0", ""),
    )
    .error(4);
    assert!(
        no_netns["msg"].as_str().unwrap().contains("CNI_NETNS"),
        "{no_netns}"
    );
    let old = c.cni("ADD", "eth0", "", &h.conf("0.4.0", "")).error(1);
    assert!(old["msg"].as_str().unwrap().contains("0.4.0"), "{old}");
    assert_eq!(old["cniVersion"], "1.1.0");

    // None of that made anything: no attachment, no identity, no interface.
    assert!(d.attachments().is_empty(), "{:?}", d.attachments());
    assert_eq!(identities(d), ["default"]);
    let links = c.sh("ip -o link");
    assert_eq!(links.lines().count(), 1, "{links}");
}

#[test]
fn a_derived_identity_goes_with_its_namespace_even_without_del() {
    if !root_or_skip("a_derived_identity_goes_with_its_namespace_even_without_del") {
        return;
    }
    let h = Host::new();
    let d = &h.daemon;
    let c = Container::new(&tag(), 1);
    c.cni("ADD", "eth0", "", &h.conf("1.0.0", "")).ok();
    let derived = d.attachments()[0]["identity"].as_str().unwrap().to_owned();
    assert!(identities(d).contains(&derived));
    // The runtime never calls DEL (a crash, a reboot): the namespace just goes.
    drop(c);
    let gone = wait_for(Duration::from_secs(10), || {
        d.attachments().is_empty() && !identities(d).contains(&derived)
    });
    assert!(gone, "{:?} {:?}", d.attachments(), identities(d));
}
