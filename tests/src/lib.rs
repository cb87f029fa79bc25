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
    if p.ends_with("deps") {
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
        run(Command::new("ip").args([
            "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns",
            &b.name,
        ]));
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
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("metanetd.sock");
        let state_dir = dir.join("state");
        let log = dir.join("metanetd.log");
        let child = ns
            .cmd(&bin("metanetd"))
            .arg("--config")
            .arg(config)
            .args(["--tun", tun])
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--socket")
            .arg(&socket)
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

    /// One control request; `None` if the daemon does not answer.
    pub fn request(&self, line: &str) -> Option<serde_json::Value> {
        let mut s = UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
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

    /// Stop with SIGTERM and wait (bounded); returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok().and_then(|s| s.code())
    }
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
