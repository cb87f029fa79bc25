//! The systemd unit as shipped: metanetd runs with exactly the capability bounding set,
//! ambient capabilities and (non-root) user of `packaging/metanetd.service`, read from
//! that file, and still serves the `.meta` DNS view on port 53, connects and carries a
//! ping. The same daemon checks rights on its control socket: a member of its group
//! reads state and manages sessions, but key commands need root or an operator (exit 4).
//! Real daemons in namespaces, through `setpriv`; skipped when not root.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use metanet_tests::{
    bin, ping, root_or_skip, tcp_receiver, tcp_sender, transfer_intact, wait_for, Daemon, Pair,
    TempDir,
};

/// Numeric ids for the test: no user needs to exist for `setpriv`.
const DAEMON_UID: u32 = 64_901;
const GROUP_GID: u32 = 64_902;
const MEMBER_UID: u32 = 64_903;
const OPERATOR_UID: u32 = 64_904;

/// The values of `key=` lines in the unit (space-separated words, all lines joined).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

/// `CAP_NET_ADMIN` -> `net_admin`, as setpriv spells it.
fn setpriv_caps(caps: &[String]) -> String {
    let mut s = String::from("-all");
    for c in caps {
        s.push_str(",+");
        s.push_str(&c.trim_start_matches("CAP_").to_lowercase());
    }
    s
}

/// `setpriv` with the unit's user, group and capabilities, to run metanetd through.
fn unit_wrap(bounding: &[String], ambient: &[String]) -> Vec<String> {
    vec![
        "setpriv".to_owned(),
        format!("--reuid={DAEMON_UID}"),
        format!("--regid={GROUP_GID}"),
        "--clear-groups".to_owned(),
        format!("--bounding-set={}", setpriv_caps(bounding)),
        format!("--inh-caps={}", setpriv_caps(ambient)),
        format!("--ambient-caps={}", setpriv_caps(ambient)),
    ]
}

/// The kernel's capability number of `CAP_NAME` (the few the unit may name).
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_BROADCAST" => 11,
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        other => panic!("capability {other} in the unit: add it to this test"),
    }
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `metanet` as `uid` with supplementary group [`GROUP_GID`].
fn cli_as(uid: u32, metanet: &Path, socket: &Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["60", "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg(format!("--groups={GROUP_GID}"))
        .args(["--inh-caps=-all", "--bounding-set=-all"])
        .arg(metanet)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Debian's udev makes `/dev/net/tun` mode 0666 (the kernel checks CAP_NET_ADMIN on
/// TUNSETIFF); some container hosts leave it 0600, where no non-root daemon can open it.
/// Gives it the distribution's mode while any test of this file holds a guard, and puts
/// the old mode back when the last one drops (the tests run in parallel: one must not
/// restore the mode under another's daemon).
struct TunMode;

/// How many guards are alive, and the mode to restore after the last.
static TUN_MODE: std::sync::Mutex<(usize, Option<u32>)> = std::sync::Mutex::new((0, None));

impl TunMode {
    fn debian_default() -> Self {
        let mut state = TUN_MODE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.0 == 0 {
            let tun = Path::new("/dev/net/tun");
            let mode = std::fs::metadata(tun).unwrap().permissions().mode() & 0o777;
            if mode != 0o666 {
                std::fs::set_permissions(tun, std::fs::Permissions::from_mode(0o666)).unwrap();
                state.1 = Some(mode);
            }
        }
        state.0 += 1;
        TunMode
    }
}

impl Drop for TunMode {
    fn drop(&mut self) {
        let mut state = TUN_MODE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0 -= 1;
        if state.0 == 0 {
            if let Some(mode) = state.1.take() {
                let _ =
                    std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(mode));
            }
        }
    }
}

#[test]
fn daemon_under_the_units_privileges_serves_dns_connect_ping_and_checks_rights() {
    if !root_or_skip("daemon_under_the_units_privileges_serves_dns_connect_ping_and_checks_rights")
    {
        return;
    }
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/metanetd.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let bounding = unit_values(&unit, "CapabilityBoundingSet");
    let ambient = unit_values(&unit, "AmbientCapabilities");
    assert!(!bounding.is_empty(), "the unit keeps no capability?");
    assert!(
        !unit_values(&unit, "User").is_empty(),
        "the unit runs metanetd as root: this test expects a User="
    );

    let _tun = TunMode::debian_default();
    let (pair, tmp) = (Pair::new(), TempDir::new());
    // The daemon's binaries and files where an unprivileged uid can reach them.
    std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bindir = tmp.0.join("bin");
    std::fs::create_dir_all(&bindir).unwrap();
    let (metanetd, metanet) = (bindir.join("metanetd"), bindir.join("metanet"));
    std::fs::copy(bin("metanetd"), &metanetd).unwrap();
    std::fs::copy(bin("metanet"), &metanet).unwrap();
    let dir_a: PathBuf = tmp.0.join("a");
    std::fs::create_dir_all(&dir_a).unwrap();
    let config = tmp.0.join("a.toml");
    std::fs::write(&config, format!("operator-uids = [{OPERATOR_UID}]\n")).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let chown = Command::new("chown")
        .arg(format!("{DAEMON_UID}:{GROUP_GID}"))
        .arg(&dir_a)
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::set_permissions(&dir_a, std::fs::Permissions::from_mode(0o750)).unwrap();

    let wrap = unit_wrap(&bounding, &ambient);
    let mut a = Daemon::start_as(&pair.a, &dir_a, "mnua", &config, &[], &wrap, &metanetd);
    let b = Daemon::start(&pair.b, &tmp.0.join("b"), "mnub");

    // It runs as the unit says: not root, exactly the unit's bounding set.
    let pid = a.child.as_ref().unwrap().id();
    let uids = status_field(pid, "Uid");
    assert!(uids.starts_with(&DAEMON_UID.to_string()), "Uid: {uids}");
    let want: u64 = bounding.iter().map(|c| 1u64 << cap_bit(c)).sum();
    let bnd = u64::from_str_radix(&status_field(pid, "CapBnd"), 16).unwrap();
    assert_eq!(bnd, want, "CapBnd {bnd:x}, the unit says {want:x}");

    let (addr_a, ip_a) = a.identity();
    let (addr_b, ip_b) = b.identity();
    // Rights: a group member reads state and manages sessions...
    let ep_b = format!("{}:51820", pair.ip_b);
    let member = |args: &[&str]| cli_as(MEMBER_UID, &metanet, &a.socket, args);
    let o = member(&["status"]);
    assert!(o.status.success(), "member status: {}", text(&o));
    let o = member(&["connect", &addr_b, "--endpoint", &ep_b]);
    assert!(o.status.success(), "member connect: {}", text(&o));
    assert!(
        wait_for(Duration::from_secs(15), || ping(&pair.a, &ip_b)),
        "no ping A -> B under the unit's privileges: A {:?}\nB {:?}\n{}\n{}",
        a.request(r#"{"id":9,"method":"status"}"#)
            .map(|v| v["result"]["counters"].clone()),
        b.request(r#"{"id":9,"method":"status"}"#)
            .map(|v| v["result"]["counters"].clone()),
        String::from_utf8_lossy(
            &pair
                .a
                .sh(&format!(
                    "ip -6 addr; ip -6 route; ping -6 -c1 -W1 {ip_b} 2>&1; ls -l $(which ping); id"
                ))
                .stdout
        ),
        std::fs::read_to_string(&a.log).unwrap_or_default(),
    );
    assert!(ping(&pair.b, &ip_a), "no ping B -> A");
    // DNS: the view binds port 53 on the overlay address (needs CAP_NET_BIND_SERVICE).
    let dig = format!("dig +short +time=2 +tries=1 AAAA {addr_b}.meta @{ip_a}");
    let answered = wait_for(Duration::from_secs(10), || {
        String::from_utf8_lossy(&pair.a.sh(&dig).stdout).trim() == ip_b
    });
    assert!(
        answered,
        "the DNS view did not answer under the unit's privileges: {}\nlog: {}",
        String::from_utf8_lossy(&pair.a.sh(&dig).stdout),
        std::fs::read_to_string(&a.log).unwrap_or_default()
    );

    // ...but cannot take or make keys: exit 4, naming the right.
    for args in [
        &["id", "export", "default"][..],
        &["id", "new", "stolen"][..],
    ] {
        let o = member(args);
        assert_eq!(o.status.code(), Some(4), "member {args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("manage keys"),
            "member {args:?}: {}",
            text(&o)
        );
    }
    let o = member(&["id", "list"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("stolen"));
    // The configured operator and root may.
    let o = cli_as(OPERATOR_UID, &metanet, &a.socket, &["id", "new", "ops"]);
    assert!(o.status.success(), "operator id new: {}", text(&o));
    // A second identity's address is deprecated on the TUN: the kernel keeps the
    // default identity as the source, and B sees A's default address on a TCP stream.
    let route = pair.a.sh(&format!("ip -6 route get {ip_b}"));
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    assert!(
        route.contains(&format!("src {ip_a}")),
        "source choice: {route}"
    );
    let (receiver, out) = tcp_receiver(&pair.b, &tmp, &ip_b);
    let sender = tcp_sender(&pair.a, &ip_b, 1, 0.0, &tmp.0.join("progress"));
    assert_eq!(
        transfer_intact(sender, receiver, &out, 1),
        ip_a,
        "B saw another source"
    );
    let o = a.cli(&["id", "export", "default"]);
    assert!(o.status.success(), "root id export: {}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim().len(), 64);
    // Rotation keeps the address and the session comes back with the new key.
    let before = a.cli(&["--json", "id", "show"]);
    let o = a.cli(&["--json", "id", "rotate"]);
    assert!(o.status.success(), "id rotate: {}", text(&o));
    let old: serde_json::Value = serde_json::from_slice(&before.stdout).unwrap();
    let new: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(old["address"], new["address"]);
    assert_ne!(old["noise_key"], new["noise_key"]);
    assert_eq!(new["address"].as_str().unwrap(), addr_a);
    assert!(
        wait_for(Duration::from_secs(15), || ping(&pair.a, &ip_b)),
        "no ping after the noise key rotation: {}\nB: {}\n{:?}\n{:?}",
        std::fs::read_to_string(&a.log).unwrap_or_default(),
        std::fs::read_to_string(&b.log).unwrap_or_default(),
        a.request(r#"{"id":9,"method":"status"}"#),
        b.request(r#"{"id":9,"method":"status"}"#),
    );
    assert_eq!(a.stop(), Some(0), "metanetd did not stop cleanly");
}

#[test]
fn daemon_notifies_the_service_manager_and_logs_journal_priorities() {
    if !root_or_skip("daemon_notifies_the_service_manager_and_logs_journal_priorities") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let dir = tmp.0.join("a");
    std::fs::create_dir_all(&dir).unwrap();
    // The log file is the daemon's stderr; JOURNAL_STREAM names it as systemd would.
    let log = dir.join("metanetd.log");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let notify = tmp.0.join("notify");
    let server = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let wrap: Vec<String> = vec![
        "env".into(),
        format!("NOTIFY_SOCKET={}", notify.display()),
        "WATCHDOG_USEC=1000000".into(),
        format!("JOURNAL_STREAM={}:{}", meta.dev(), meta.ino()),
    ];
    let mut a = Daemon::start_as(
        &pair.a,
        &dir,
        "mnja",
        Path::new("/dev/null"),
        &[],
        &wrap,
        &bin("metanetd"),
    );
    let mut seen = Vec::new();
    let recv = |seen: &mut Vec<String>| {
        let mut buf = [0u8; 512];
        if let Ok(n) = server.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    let want = |seen: &Vec<String>, what: &str| seen.iter().any(|m| m.contains(what));
    // More than one ping: after the first, each needs the data plane's answer.
    let pings = |seen: &Vec<String>| seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    for _ in 0..20 {
        recv(&mut seen);
        if want(&seen, "READY=1") && pings(&seen) >= 3 {
            break;
        }
    }
    assert!(pings(&seen) >= 3, "the watchdog is not fed: {seen:?}");
    assert!(want(&seen, "READY=1"), "{seen:?}");
    assert!(want(&seen, "STATUS=serving 1 identities"), "{seen:?}");
    assert!(want(&seen, "WATCHDOG=1"), "no watchdog pings: {seen:?}");
    // A reload says so and comes back ready.
    a.reload();
    for _ in 0..10 {
        recv(&mut seen);
        if want(&seen, "RELOADING=1") {
            break;
        }
    }
    assert!(want(&seen, "RELOADING=1\nMONOTONIC_USEC="), "{seen:?}");
    assert_eq!(a.stop(), Some(0));
    for _ in 0..10 {
        recv(&mut seen);
        if want(&seen, "STOPPING=1") {
            break;
        }
    }
    assert!(want(&seen, "STOPPING=1"), "{seen:?}");
    // Journal lines: a priority prefix, no timestamp of our own.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>") && l.contains("metanetd ready")),
        "{text}"
    );
    assert!(
        text.lines().all(|l| l.starts_with('<')),
        "a line without priority: {text}"
    );
}

/// Attachments under the unit's privileges (CAP_NET_ADMIN, not root): `metanet attach`
/// run as root hands the daemon the namespace's descriptors; across a restart they
/// stay in the service manager's store (here the stand-in of `metanet_tests::fdstore`,
/// PID 1 not being systemd), so the interface never goes away and traffic goes on.
/// Without the store the daemon cannot enter the namespace (no CAP_SYS_ADMIN): the
/// attachment is listed as lost until attached again.
#[test]
fn attachments_under_the_units_privileges_survive_a_restart_through_the_fd_store() {
    if !root_or_skip(
        "attachments_under_the_units_privileges_survive_a_restart_through_the_fd_store",
    ) {
        return;
    }
    use metanet_tests::fdstore::{FdStore, LISTEN_WRAP};
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/metanetd.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(
        !unit_values(&unit, "FileDescriptorStoreMax").is_empty(),
        "the unit keeps no descriptor store: attachments would not survive a restart"
    );
    let bounding = unit_values(&unit, "CapabilityBoundingSet");
    let ambient = unit_values(&unit, "AmbientCapabilities");
    let _tun = TunMode::debian_default();
    let (pair, tmp) = (Pair::new(), TempDir::new());
    std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bindir = tmp.0.join("bin");
    std::fs::create_dir_all(&bindir).unwrap();
    let metanetd = bindir.join("metanetd");
    std::fs::copy(bin("metanetd"), &metanetd).unwrap();
    let dir_a: PathBuf = tmp.0.join("a");
    std::fs::create_dir_all(&dir_a).unwrap();
    let chown = Command::new("chown")
        .arg(format!("{DAEMON_UID}:{GROUP_GID}"))
        .arg(&dir_a)
        .status()
        .unwrap();
    assert!(chown.success());
    let store_dir = tmp.0.join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let mut store = FdStore::new(&store_dir);
    std::fs::set_permissions(&store.path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut wrap = unit_wrap(&bounding, &ambient);
    wrap.extend(LISTEN_WRAP.iter().map(|s| (*s).to_owned()));
    let none = Path::new("/dev/null");
    let start = |store: Option<&mut FdStore>| {
        Daemon::start_prepared(&pair.a, &dir_a, "mnua", none, &[], &wrap, &metanetd, |c| {
            if let Some(s) = store {
                s.pass(c);
            }
        })
    };
    let mut a = start(Some(&mut store));
    let c = metanet_tests::Netns::new(format!("mnc-{}-u", metanet_tests::tag()));
    let o = a.cli(&["--json", "attach", "--netns", &c.name, "--identity", "web"]);
    assert!(
        o.status.success(),
        "attach under the unit's privileges: {}",
        text(&o)
    );
    let (_, ip_a) = a.identity();
    assert!(ping(&c, &ip_a), "attached namespace -> host");
    let mut names = store.names();
    names.sort();
    assert_eq!(names, ["attach-web-nl", "attach-web-tun"]);
    let index = |c: &metanet_tests::Netns| {
        String::from_utf8_lossy(&c.sh("cat /sys/class/net/metanet0/ifindex").stdout)
            .trim()
            .to_owned()
    };
    let before = index(&c);
    assert!(!before.is_empty());

    // Restart with the store: the interface stayed while the daemon was down.
    a.stop();
    assert_eq!(index(&c), before, "the interface went away with the daemon");
    let mut a = start(Some(&mut store));
    assert!(
        wait_for(Duration::from_secs(10), || ping(&c, &ip_a)),
        "no traffic after a restart through the store: {}",
        std::fs::read_to_string(&a.log).unwrap_or_default()
    );
    assert_eq!(
        index(&c),
        before,
        "a new interface instead of the stored one"
    );
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(log.contains("the service manager's store"), "{log}");

    // Without the store (and without CAP_SYS_ADMIN to enter the namespace): lost.
    a.stop();
    drop(store);
    let a = start(None);
    let o = a.cli(&["--json", "attachments"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["state"], "lost", "{list}");
    // Attaching again brings it back.
    let o = a.cli(&["--json", "attach", "--netns", &c.name, "--identity", "web"]);
    assert!(o.status.success(), "re-attach: {}", text(&o));
    assert!(ping(&c, &ip_a), "re-attached namespace -> host");
}
