//! podman with a configuration of its own: private storage and run roots, a private CNI
//! network directory and plugin directory (`metanet-cni` beside the reference plugins in
//! `/usr/lib/cni`), a busybox root filesystem per container (no image is pulled), and
//! the two workarounds this kind of machine needs (open-file limits crun may not raise;
//! hybrid cgroups). Containers, CNI bridges and host-local IPAM state made through it
//! go on drop, and `net.ipv4.ip_forward` (which `bridge` with `isGateway` turns on) is
//! put back once the last [`Podman`] of the process is gone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use crate::{bin, root_or_skip, TempDir};

/// Where the reference CNI plugins live (Debian's containernetworking-plugins).
pub const CNI_PLUGINS: &str = "/usr/lib/cni";

/// The busybox the root filesystems are made of (Debian's busybox-static).
const BUSYBOX: &str = "/bin/busybox";

/// The applets linked in each root filesystem.
const APPLETS: [&str; 15] = [
    "sh", "ip", "ping", "ping6", "sleep", "ls", "cat", "echo", "hostname", "ifconfig", "route",
    "ps", "nslookup", "wget", "grep",
];

/// Root, podman, busybox and the reference plugins, or a message saying why `test` is
/// skipped.
pub fn podman_or_skip(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    let podman = Command::new("timeout")
        .args(["20", "podman", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = if !podman {
        Some("podman")
    } else if !Path::new(BUSYBOX).is_file() {
        Some(BUSYBOX)
    } else if !Path::new(CNI_PLUGINS).join("bridge").is_file() {
        Some("the reference CNI plugins (/usr/lib/cni/bridge)")
    } else {
        None
    };
    if let Some(what) = missing {
        eprintln!(
            "SKIP {test}: {what} is not installed (apt-get install podman crun busybox-static \
             containernetworking-plugins)"
        );
        return false;
    }
    true
}

/// How many [`Podman`]s are alive, and `net.ipv4.ip_forward` from before the first.
static FORWARDING: Mutex<(usize, Option<String>)> = Mutex::new((0, None));

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Private podman state under a scratch directory; see the module documentation.
#[derive(Debug)]
pub struct Podman {
    containers: Vec<String>,
    networks: Vec<String>,
    bridges: Vec<String>,
    /// Declared last: removed after everything above.
    pub dir: TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        let dir = TempDir::new();
        let d = &dir.0;
        for sub in ["cni-bin", "cni-net.d", "storage", "run", "tmp", "rootfs"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::os::unix::fs::symlink(bin("metanet-cni"), d.join("cni-bin/metanet-cni")).unwrap();
        // crun cannot raise RLIMIT_NOFILE here ("setrlimit RLIMIT_NOFILE: Operation not
        // permitted"), so the limits are set to what is allowed; the engine's temporary
        // directory (/run/libpod by default) is ours too.
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 tmp_dir = \"{tmp}\"\n\
                 [network]\nnetwork_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{bin}\", \"{CNI_PLUGINS}\"]\nnetwork_config_dir = \"{net}\"\n",
                tmp = d.join("tmp").display(),
                bin = d.join("cni-bin").display(),
                net = d.join("cni-net.d").display(),
            ),
        )
        .unwrap();
        hybrid_cgroups();
        let mut fw = FORWARDING.lock().unwrap();
        if fw.0 == 0 {
            fw.1 = std::fs::read_to_string(IP_FORWARD).ok();
        }
        fw.0 += 1;
        drop(fw);
        Podman {
            containers: Vec::new(),
            networks: Vec::new(),
            bridges: Vec::new(),
            dir,
        }
    }

    /// `podman <args>` with this configuration, bounded.
    pub fn podman(&self, args: &[&str]) -> Output {
        let d = &self.dir.0;
        Command::new("timeout")
            .arg("120")
            .arg("podman")
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .output()
            .unwrap()
    }

    /// A CNI network `name` made of `plugins` (their JSON objects), config version 1.0.0.
    pub fn network(&mut self, name: &str, plugins: &[serde_json::Value]) {
        let list = serde_json::json!({ "cniVersion": "1.0.0", "name": name, "plugins": plugins });
        std::fs::write(
            self.dir
                .0
                .join("cni-net.d")
                .join(format!("{name}.conflist")),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .unwrap();
        self.networks.push(name.to_owned());
    }

    /// A network of `metanet-cni` alone, attaching to the daemon at `socket`.
    pub fn standalone(&mut self, name: &str, socket: &Path) {
        self.network(name, &[metanet(socket)]);
    }

    /// A network of the reference `bridge` (on `bridge`, host-local addresses from
    /// `subnet`, the gateway on the bridge, no masquerade) with `metanet-cni` chained
    /// after it.
    pub fn bridged(&mut self, name: &str, bridge: &str, subnet: &str, socket: &Path) {
        let br = serde_json::json!({
            "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
            "ipam": { "type": "host-local", "ranges": [[{ "subnet": subnet }]] }
        });
        self.network(name, &[br, metanet(socket)]);
        self.bridges.push(bridge.to_owned());
    }

    /// `podman run -d` of `/bin/sleep` as `name` on `network` (with `extra` flags) in a
    /// root filesystem of its own; returns the container id.
    pub fn run(&mut self, name: &str, network: &str, extra: &[&str]) -> String {
        let rootfs = self.rootfs(name);
        let rootfs = rootfs.to_str().unwrap();
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        args.extend_from_slice(extra);
        args.extend(["--rootfs", rootfs, "/bin/sleep", "600"]);
        self.containers.push(name.to_owned());
        let out = self.podman(&args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `/bin/sh -c script` inside container `name`.
    pub fn exec(&self, name: &str, script: &str) -> Output {
        self.podman(&["exec", name, "/bin/sh", "-c", script])
    }

    /// `podman rm -f` (no grace period: `sleep` as PID 1 ignores SIGTERM).
    pub fn rm(&mut self, name: &str) -> Output {
        self.containers.retain(|c| c != name);
        self.podman(&["rm", "-f", "-t", "0", name])
    }

    /// A busybox root filesystem for container `name`.
    fn rootfs(&self, name: &str) -> PathBuf {
        let r = self.dir.0.join("rootfs").join(name);
        for sub in ["bin", "proc", "sys", "dev", "etc", "tmp", "run"] {
            std::fs::create_dir_all(r.join(sub)).unwrap();
        }
        std::fs::copy(BUSYBOX, r.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
        }
        r
    }
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.containers) {
            let _ = self.rm(&name);
        }
        for bridge in &self.bridges {
            let _ = Command::new("timeout")
                .args(["20", "ip", "link", "del", bridge])
                .output();
        }
        // host-local's leases, and results a failed DEL may have left in libcni's cache.
        for network in &self.networks {
            let _ = std::fs::remove_dir_all(Path::new("/var/lib/cni/networks").join(network));
            if let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") {
                for e in entries.flatten() {
                    if e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{network}-"))
                    {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        let mut fw = FORWARDING.lock().unwrap_or_else(|e| e.into_inner());
        fw.0 -= 1;
        if fw.0 == 0 {
            if let Some(before) = fw.1.take() {
                let _ = std::fs::write(IP_FORWARD, before);
            }
            // libcni's directories, when nothing else is in them.
            for dir in ["networks", "results", ""] {
                let _ = std::fs::remove_dir(Path::new("/var/lib/cni").join(dir));
            }
        }
    }
}

/// `metanet-cni`'s entry in a conflist.
fn metanet(socket: &Path) -> serde_json::Value {
    serde_json::json!({ "type": "metanet-cni", "socket": socket })
}

/// crun refuses to run on hybrid cgroups while the unified hierarchy has controllers
/// ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"): mount
/// the one it has (hugetlb, here) as a v1 hierarchy, which takes it off cgroup2. Once,
/// and left as it is (cgroups in use cannot be unmounted).
fn hybrid_cgroups() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let out = Command::new("timeout")
        .args([
            "20",
            "sh",
            "-c",
            "c=$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null); \
             [ -z \"$c\" ] || for x in $c; do mkdir -p /sys/fs/cgroup/$x && \
             mount -t cgroup -o $x cgroup /sys/fs/cgroup/$x || exit 1; done",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cannot take the controllers off cgroup2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    *done = true;
}
