//! Harness for black-box tests: network namespaces joined by veth pairs, real
//! `metanetd` processes inside them, and their control sockets. Everything created is
//! removed on drop, also when a test fails; every wait is bounded.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod chain;
pub mod fdstore;
pub mod nat;
pub mod podman;

/// Whether we may create namespaces; prints why a test is skipped otherwise.
pub fn root_or_skip(test: &str) -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.is_ok_and(|u| u == "0") {
        return true;
    }
    eprintln!("SKIP {test}: needs root for network namespaces (CI runs it as root)");
    false
}

/// Path of a workspace binary (built by `cargo test` for this package's dependencies).
pub fn bin(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") || p.ends_with("examples") {
        p.pop();
    }
    let path = p.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace` before the tests",
        path.display()
    );
    path
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for names of namespaces and links.
pub fn tag() -> String {
    format!(
        "{:x}{}",
        std::process::id() % 0xffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A veth pair: `a_dev` in namespace `a_ns`, `b_dev` in namespace `b_ns`.
pub fn veth(a_dev: &str, a_ns: &str, b_dev: &str, b_ns: &str) {
    run(Command::new("ip").args([
        "link", "add", a_dev, "netns", a_ns, "type", "veth", "peer", "name", b_dev, "netns", b_ns,
    ]));
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Self {
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Netns { name }
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    pub fn sh(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Whatever a test left running inside (a sender whose `timeout` wrapper was
        // killed, a capture) goes with the namespace.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ip netns pids {0} 2>/dev/null | xargs -r kill -9 2>/dev/null; true",
                self.name
            ))
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: A at 198.18.x.1, B at 198.18.x.2 (/24).
#[derive(Debug)]
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
    pub ip_a: String,
    pub ip_b: String,
    pub dev_a: String,
}

impl Pair {
    pub fn new() -> Self {
        let t = tag();
        let net = 100 + COUNTER.load(Ordering::Relaxed) % 100;
        let a = Netns::new(format!("mnt-{t}-a"));
        let b = Netns::new(format!("mnt-{t}-b"));
        let (va, vb) = (format!("mv{t}a"), format!("mv{t}b"));
        veth(&va, &a.name, &vb, &b.name);
        let (ip_a, ip_b) = (format!("198.18.{net}.1"), format!("198.18.{net}.2"));
        run(Command::new("ip").args([
            "-n",
            &a.name,
            "addr",
            "add",
            &format!("{ip_a}/24"),
            "dev",
            &va,
        ]));
        run(Command::new("ip").args([
            "-n",
            &b.name,
            "addr",
            "add",
            &format!("{ip_b}/24"),
            "dev",
            &vb,
        ]));
        run(Command::new("ip").args(["-n", &a.name, "link", "set", &va, "up"]));
        run(Command::new("ip").args(["-n", &b.name, "link", "set", &vb, "up"]));
        Pair {
            a,
            b,
            ip_a,
            ip_b,
            dev_a: va,
        }
    }
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

/// Hosts on one Ethernet segment: a bridge in its own namespace and one namespace per
/// host, host `i` at `198.18.<net>.<i + 1>/24` on its interface `eth0`.
#[derive(Debug)]
pub struct Lan {
    pub hosts: Vec<Netns>,
    pub ips: Vec<String>,
    pub net: u32,
    /// Declared last: dropped after the hosts.
    pub switch: Netns,
}

impl Lan {
    pub fn new(n: usize) -> Self {
        let t = tag();
        let net = 200 + COUNTER.load(Ordering::Relaxed) % 50;
        let switch = Netns::new(format!("mnt-{t}-sw"));
        run(Command::new("ip").args(["-n", &switch.name, "link", "add", "br0", "type", "bridge"]));
        run(Command::new("ip").args(["-n", &switch.name, "link", "set", "br0", "up"]));
        let mut hosts = Vec::new();
        let mut ips = Vec::new();
        for i in 0..n {
            let ns = Netns::new(format!("mnt-{t}-h{i}"));
            let port = format!("mp{t}{i}");
            veth("eth0", &ns.name, &port, &switch.name);
            run(Command::new("ip").args([
                "-n",
                &switch.name,
                "link",
                "set",
                &port,
                "master",
                "br0",
                "up",
            ]));
            let ip = format!("198.18.{net}.{}", i + 1);
            run(Command::new("ip").args([
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]));
            run(Command::new("ip").args(["-n", &ns.name, "link", "set", "eth0", "up"]));
            hosts.push(ns);
            ips.push(ip);
        }
        Lan {
            hosts,
            ips,
            net,
            switch,
        }
    }
}

/// A running `metanetd`, killed (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Start metanetd in `ns` with its files under `dir`, and wait for its socket.
    pub fn start(ns: &Netns, dir: &Path, tun: &str) -> Self {
        Self::start_with_config(ns, dir, tun, Path::new("/dev/null"))
    }

    /// Like [`Daemon::start`], reading the config file `config` (flags still override).
    pub fn start_with_config(ns: &Netns, dir: &Path, tun: &str, config: &Path) -> Self {
        Self::start_with(ns, dir, tun, config, &[])
    }

    /// Like [`Daemon::start_with_config`], with extra flags (e.g. `--bootstrap`).
    pub fn start_with(ns: &Netns, dir: &Path, tun: &str, config: &Path, extra: &[&str]) -> Self {
        Self::start_as(ns, dir, tun, config, extra, &[], &bin("metanetd"))
    }

    /// Like [`Daemon::start_with`], with `metanetd` (the binary `daemon`) run through
    /// the command `wrap` (e.g. `setpriv` with its flags) inside the namespace.
    pub fn start_as(
        ns: &Netns,
        dir: &Path,
        tun: &str,
        config: &Path,
        extra: &[&str],
        wrap: &[String],
        daemon: &Path,
    ) -> Self {
        Self::start_prepared(ns, dir, tun, config, extra, wrap, daemon, |_| {})
    }

    /// Like [`Daemon::start_as`], with `prepare` applied to the command before it is
    /// spawned (environment, descriptors: [`fdstore::FdStore::pass`]).
    #[allow(clippy::too_many_arguments)]
    pub fn start_prepared(
        ns: &Netns,
        dir: &Path,
        tun: &str,
        config: &Path,
        extra: &[&str],
        wrap: &[String],
        daemon: &Path,
        prepare: impl FnOnce(&mut Command),
    ) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("metanetd.sock");
        let state_dir = dir.join("state");
        let log = dir.join("metanetd.log");
        let mut cmd = match wrap.split_first() {
            Some((program, args)) => {
                let mut c = ns.cmd(Path::new(program));
                c.args(args).arg(daemon);
                c
            }
            None => ns.cmd(daemon),
        };
        prepare(&mut cmd);
        let child = cmd
            .arg("--config")
            .arg(config)
            .args(["--tun", tun])
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child: Some(child),
            socket,
            state_dir,
            log,
        };
        let ok = wait_for(Duration::from_secs(10), || {
            d.request(r#"{"id":1,"method":"status"}"#).is_some()
        });
        assert!(
            ok,
            "metanetd did not come up: {}",
            std::fs::read_to_string(&d.log).unwrap_or_default()
        );
        d
    }

    /// Send SIGHUP (reload the config file), as `systemctl reload` would.
    pub fn reload(&self) {
        let pid = self
            .child
            .as_ref()
            .expect("daemon stopped")
            .id()
            .to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success(), "kill -HUP {pid} failed");
    }

    /// One control request; `None` if the daemon does not answer.
    pub fn request(&self, line: &str) -> Option<serde_json::Value> {
        self.request_within(line, Duration::from_secs(5))
    }

    /// [`Daemon::request`] waiting up to `limit` for the answer (a `connect` answers
    /// once the session is up, after handshake retries when packets are lost).
    pub fn request_within(&self, line: &str, limit: Duration) -> Option<serde_json::Value> {
        let mut s = UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(limit)).ok()?;
        s.write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).ok()?;
        serde_json::from_str(&reply).ok()
    }

    /// (address, ipv6) of the default identity.
    pub fn identity(&self) -> (String, String) {
        let v = self
            .request(r#"{"id":2,"method":"id_show","params":{"name":null}}"#)
            .unwrap();
        let r = &v["result"];
        (
            r["address"].as_str().unwrap().to_owned(),
            r["ipv6"].as_str().unwrap().to_owned(),
        )
    }

    pub fn connect(&self, address: &str, endpoint: &str) -> serde_json::Value {
        let line = format!(
            r#"{{"id":3,"method":"connect","params":{{"address":"{address}","endpoint":"{endpoint}","identity":null}}}}"#
        );
        self.request(&line).unwrap()
    }

    /// One of the counters in `status` (`counters`: an object of name → value); 0 if
    /// absent.
    pub fn counter(&self, name: &str) -> u64 {
        let v = self.request(r#"{"id":5,"method":"status"}"#).unwrap();
        v["result"]["counters"][name].as_u64().unwrap_or(0)
    }

    /// Run the `metanet` command line against this daemon's socket (bounded by
    /// `timeout`, well above the command's own 30 s limit).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("60")
            .arg(bin("metanet"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// The JSON of `metanet --json <args>` against this daemon, asserting it succeeded.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "metanet {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `metanet attachments --json`.
    pub fn attachments(&self) -> Vec<serde_json::Value> {
        self.cli_json(&["attachments"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Stop with SIGTERM and wait (bounded); returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        terminate(self.child.take()?, Duration::from_secs(5))
    }
}

/// Stop `child` with SIGTERM, wait up to `grace` for it to exit, then SIGKILL; returns
/// its exit code.
pub fn terminate(mut child: Child, grace: Duration) -> Option<i32> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok().and_then(|s| s.code())
}

/// Start `cmd` with no standard input and its output discarded.
pub fn spawn_silent(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Poll `f` every 50 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(format!("metanet-it-{}", tag()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Three pings to `ip` from `ns` (bounded): whether any was answered.
pub fn ping(ns: &Netns, ip: &str) -> bool {
    ns.sh(&format!("ping -6 -c 3 -i 0.2 -W 2 {ip}"))
        .status
        .success()
}

/// A TCP receiver in `ns` on `[ip]:5001`: it accepts one connection, hashes all it
/// reads and then writes "peer-address bytes sha256" to the returned file. Returns once
/// it listens.
pub fn tcp_receiver(ns: &Netns, tmp: &TempDir, ip: &str) -> (Child, PathBuf) {
    let out = tmp.0.join("recv.txt");
    let server = format!(
        "import socket,hashlib\ns=socket.socket(socket.AF_INET6)\ns.bind(('{ip}',5001))\ns.listen(1)\n\
         open('{o}.ready','w').close()\nc,peer=s.accept()\nh=hashlib.sha256();n=0\n\
         while True:\n  d=c.recv(1<<20)\n  if not d: break\n  h.update(d);n+=len(d)\n\
         open('{o}','w').write(peer[0]+' '+str(n)+' '+h.hexdigest())\n",
        o = out.display()
    );
    let srv = ns
        .cmd(Path::new("timeout"))
        .args(["120", "python3", "-c", &server])
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || tmp
        .0
        .join("recv.txt.ready")
        .exists()));
    (srv, out)
}

/// A TCP sender in `ns` to `[ip]:5001`: `mib` distinct 1 MiB blocks, sleeping `pause_s`
/// after each and writing how many it has handed to the socket to `progress`. It
/// prints the SHA-256 of all it sent.
pub fn tcp_sender(ns: &Netns, ip: &str, mib: u32, pause_s: f64, progress: &Path) -> Child {
    let client = format!(
        "import socket,hashlib,os,time\nc=socket.create_connection(('{ip}',5001))\n\
         h=hashlib.sha256()\nblk=os.urandom(1<<20)\nfor i in range({mib}):\n  \
         b=bytes([i%256])+blk[1:]\n  h.update(b);c.sendall(b)\n  \
         open('{p}','w').write(str(i+1))\n  time.sleep({pause_s})\n\
         c.close()\nprint(h.hexdigest())\n",
        p = progress.display()
    );
    ns.cmd(Path::new("timeout"))
        .args(["120", "python3", "-c", &client])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for sender and receiver (both bounded by `timeout`) and check that all `mib`
/// MiB arrived with the hash sent; returns the peer address the receiver saw.
pub fn transfer_intact(sender: Child, mut receiver: Child, out: &Path, mib: u32) -> String {
    let sent = sender.wait_with_output().unwrap();
    assert!(
        sent.status.success(),
        "sender failed: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let sent_hash = String::from_utf8_lossy(&sent.stdout).trim().to_owned();
    let _ = receiver.wait();
    let got = std::fs::read_to_string(out).unwrap();
    let parts: Vec<&str> = got.split_whitespace().collect();
    assert_eq!(parts[1], (u64::from(mib) << 20).to_string(), "byte count");
    assert_eq!(parts[2], sent_hash, "content hash");
    parts[0].to_owned()
}

/// UDP port of the daemons in the DHT setups.
pub const DHT_UDP_PORT: u16 = 51820;
/// DHT (TCP) port of the daemons in the DHT setups.
pub const DHT_PORT: u16 = 51821;

/// A segment of `n` hosts ([`Lan`]), each running metanetd; host 0 is the DHT bootstrap
/// node of the rest.
#[derive(Debug)]
pub struct DhtNet {
    pub daemons: Vec<Daemon>,
    pub lan: Lan,
    pub tmp: TempDir,
}

impl DhtNet {
    /// Start the daemons (`config(i)` gives host `i`'s config file text) and wait until
    /// every one has joined the DHT.
    pub fn start(n: usize, config: impl Fn(usize) -> String) -> DhtNet {
        let lan = Lan::new(n);
        let tmp = TempDir::new();
        let boot = format!("/ip4/{}/tcp/{DHT_PORT}", lan.ips[0]);
        let mut daemons = Vec::new();
        for i in 0..n {
            let dir = tmp.0.join(format!("h{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let cfg = dir.join("metanetd.toml");
            std::fs::write(&cfg, config(i)).unwrap();
            let extra: Vec<&str> = if i == 0 {
                vec![]
            } else {
                vec!["--bootstrap", &boot]
            };
            daemons.push(Daemon::start_with(
                &lan.hosts[i],
                &dir,
                &format!("mnd{i}"),
                &cfg,
                &extra,
            ));
        }
        let net = DhtNet { daemons, lan, tmp };
        for (i, d) in net.daemons.iter().enumerate() {
            assert!(
                wait_for(Duration::from_secs(20), || dht_peers(d) >= 1),
                "host {i} did not join the DHT: {}",
                log(d)
            );
        }
        net
    }

    /// Host `i`'s address and overlay IPv6.
    pub fn addr(&self, i: usize) -> (String, String) {
        self.daemons[i].identity()
    }

    /// Wait until host `from` resolves host `to` with an endpoint at `ip`.
    pub fn resolves(&self, from: usize, to: usize, ip: &str, limit: Duration) -> bool {
        let (addr, _) = self.addr(to);
        let want = format!("{ip}:{DHT_UDP_PORT}");
        wait_for(limit, || {
            resolve(&self.daemons[from], &addr).is_some_and(|r| {
                r["endpoints"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|x| x == want.as_str()))
            })
        })
    }
}

/// How many DHT peers `d` has, per `status` (0 when it does not answer).
pub fn dht_peers(d: &Daemon) -> u64 {
    d.request(r#"{"id":7,"method":"status"}"#)
        .and_then(|v| v["result"]["dht"]["peers"].as_u64())
        .unwrap_or(0)
}

/// Everything `d` logged so far.
pub fn log(d: &Daemon) -> String {
    std::fs::read_to_string(&d.log).unwrap_or_default()
}

/// `metanet resolve <target> --json` through `d`, or `None` when it fails.
pub fn resolve(d: &Daemon, target: &str) -> Option<serde_json::Value> {
    let out = d.cli(&["--json", "resolve", target]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}
