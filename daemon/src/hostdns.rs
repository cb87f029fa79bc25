//! Pointing the host's resolver at the `.meta` DNS view (`dns-system`), so every
//! application on the host resolves `.meta` names, and undoing it on a clean stop.
//!
//! - `resolved`: systemd-resolved over D-Bus (`org.freedesktop.resolve1.Manager`):
//!   the view as the TUN link's DNS server, `~meta` as its routing-only domain, the link
//!   never the default route; `RevertLink` on stop. The calls go through `busctl`,
//!   which ships with systemd wherever resolved runs: no D-Bus client in the daemon.
//! - `hosts`: a managed block in the hosts file (`<ipv6> <name>.meta` for the local
//!   identities, the peers and the chain's names), rewritten atomically when it
//!   changes; the rest of the file is kept byte for byte; removed on stop.
//! - `resolvconf`: `resolvconf -a <tun>.metanet` with the view as nameserver and
//!   `search meta`; `resolvconf -d` on stop.
//! - `auto`: the first of those the host has; nothing in a network namespace other
//!   than the host's (the host's resolver could not reach the view there).
//!
//! Failures never stop the daemon: they show in `metanet status` and the log.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::DnsSystem;

/// First line of the managed block in the hosts file.
pub const BEGIN: &str = "# BEGIN metanet (managed by metanetd, do not edit)";
/// Last line of the managed block.
pub const END: &str = "# END metanet";
/// Most lines in the managed block; further names are left out (and logged once).
pub const MAX_HOSTS_ENTRIES: usize = 4096;
/// Largest hosts file metanetd rewrites.
const MAX_HOSTS_FILE: u64 = 4 << 20;
/// How long one `busctl` or `resolvconf` run may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the integration needs to know about the daemon.
#[derive(Debug, Clone)]
pub struct Context {
    /// The TUN interface name.
    pub tun: String,
    /// The TUN's interface index.
    pub ifindex: u32,
    /// Where the DNS view listens.
    pub listen: SocketAddr,
    /// Whether the view is serving (resolved and resolvconf need it; hosts does not).
    pub serving: bool,
    /// The hosts file for `hosts`.
    pub hosts_file: PathBuf,
}

/// The integration in effect and its state.
#[derive(Debug)]
pub struct HostDns {
    system: DnsSystem,
    state: Result<(), String>,
    ctx: Context,
    /// `hosts`: we added a final newline to a file that had none (removed again on stop).
    added_newline: bool,
    /// `hosts`: the entries last written.
    written: Option<BTreeSet<(String, Ipv6Addr)>>,
    /// `hosts`: whether the entry cap was already logged.
    capped: bool,
}

impl HostDns {
    /// No integration (before `start`, and after `stop`).
    pub fn off() -> HostDns {
        HostDns {
            system: DnsSystem::Off,
            state: Ok(()),
            ctx: Context {
                tun: String::new(),
                ifindex: 0,
                listen: SocketAddr::from((Ipv6Addr::UNSPECIFIED, 53)),
                serving: false,
                hosts_file: PathBuf::new(),
            },
            added_newline: false,
            written: None,
            capped: false,
        }
    }

    /// Apply `requested` (`auto` resolved to what the host has).
    pub fn start(requested: DnsSystem, ctx: Context) -> HostDns {
        let system = match requested {
            DnsSystem::Auto => choose_auto(&Probe::host()),
            other => other,
        };
        let mut h = HostDns {
            system,
            state: Ok(()),
            ctx,
            added_newline: false,
            written: None,
            capped: false,
        };
        h.state = match system {
            DnsSystem::Resolved => h.resolved_apply(),
            DnsSystem::Resolvconf => h.resolvconf_apply(),
            // The block is written by the first `update_hosts`.
            DnsSystem::Hosts | DnsSystem::Auto | DnsSystem::Off => Ok(()),
        };
        match &h.state {
            Ok(()) if system != DnsSystem::Off => {
                tracing::info!(
                    system = system.name(),
                    "host resolver: .meta names for applications"
                )
            }
            Ok(()) => tracing::info!(
                requested = requested.name(),
                "host resolver left alone: query the DNS view directly"
            ),
            Err(e) => {
                tracing::warn!(system = system.name(), error = %e, "host resolver integration failed")
            }
        }
        h
    }

    /// The integration in effect (`resolved`, `hosts`, `resolvconf`, `off`).
    pub fn system(&self) -> &'static str {
        self.system.name()
    }

    /// `active`, `failed: <error>` or `off`.
    pub fn state(&self) -> String {
        match (&self.state, self.system) {
            (_, DnsSystem::Off) => "off".into(),
            (Ok(()), _) => "active".into(),
            (Err(e), _) => format!("failed: {e}"),
        }
    }

    /// With `hosts`: make the managed block list `entries` (name with `.meta`, IPv6).
    /// Cheap when nothing changed; also repairs a block someone else removed.
    pub fn update_hosts(&mut self, entries: BTreeSet<(String, Ipv6Addr)>) {
        if self.system != DnsSystem::Hosts {
            return;
        }
        if entries.len() > MAX_HOSTS_ENTRIES && !self.capped {
            self.capped = true;
            tracing::warn!(
                names = entries.len(),
                max = MAX_HOSTS_ENTRIES,
                "hosts file: too many names, the rest are left out"
            );
        }
        let block = hosts_block(&entries);
        let result = edit_hosts(&self.ctx.hosts_file, |old| {
            let (new, added) = splice_block(old, &block)?;
            self.added_newline |= added;
            Ok(new)
        });
        if let Err(e) = &result {
            if self.state.is_ok() {
                tracing::warn!(file = %self.ctx.hosts_file.display(), error = %e, "hosts file not updated");
            }
        } else if self.written.as_ref() != Some(&entries) {
            tracing::debug!(names = entries.len(), "hosts file updated");
        }
        self.written = Some(entries);
        self.state = result;
    }

    /// Undo what `start` and `update_hosts` did (clean stop, or a reload that changes
    /// the integration).
    pub fn stop(&mut self) {
        let result = match self.system {
            DnsSystem::Resolved if self.state.is_ok() => self.resolved_revert(),
            DnsSystem::Resolvconf if self.state.is_ok() => run_tool(
                "resolvconf",
                &["-d".into(), resolvconf_record(&self.ctx.tun)],
                None,
            ),
            DnsSystem::Hosts => {
                let added = self.added_newline;
                edit_hosts(&self.ctx.hosts_file, |old| {
                    Ok(remove_block(old, added)?.unwrap_or_else(|| old.to_vec()))
                })
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(system = self.system(), error = %e, "host resolver not restored");
        }
        self.system = DnsSystem::Off;
    }

    fn resolved_apply(&self) -> Result<(), String> {
        if !self.ctx.serving {
            return Err("the DNS view is not serving".into());
        }
        for call in resolved_calls(self.ctx.ifindex, self.ctx.listen) {
            if let Err(e) = run_tool("busctl", &call, None) {
                let _ = self.resolved_revert();
                let hint = if e.contains("authentication") || e.contains("Access denied") {
                    " (a user other than root needs the polkit rule in docs/operations.md)"
                } else {
                    ""
                };
                return Err(format!("systemd-resolved: {e}{hint}"));
            }
        }
        Ok(())
    }

    fn resolved_revert(&self) -> Result<(), String> {
        run_tool("busctl", &resolved_revert_call(self.ctx.ifindex), None)
    }

    fn resolvconf_apply(&self) -> Result<(), String> {
        if !self.ctx.serving {
            return Err("the DNS view is not serving".into());
        }
        let entry = resolvconf_entry(self.ctx.listen)?;
        run_tool(
            "resolvconf",
            &["-a".into(), resolvconf_record(&self.ctx.tun)],
            Some(entry.as_bytes()),
        )
    }
}

/// What `auto` looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probe {
    /// metanetd runs in a network namespace other than the host's.
    pub foreign_netns: bool,
    /// `/run/systemd/resolve` exists.
    pub resolved: bool,
    /// The system bus accepts connections and `busctl` is installed.
    pub dbus: bool,
    /// `resolvconf` is installed.
    pub resolvconf: bool,
}

impl Probe {
    /// Look at this host.
    pub fn host() -> Probe {
        Probe {
            foreign_netns: in_foreign_netns(),
            resolved: Path::new("/run/systemd/resolve").exists(),
            dbus: std::os::unix::net::UnixStream::connect("/run/dbus/system_bus_socket").is_ok()
                && find_tool("busctl").is_some(),
            resolvconf: find_tool("resolvconf").is_some(),
        }
    }
}

/// `auto`: resolved where it runs and D-Bus is reachable, else resolvconf where it is
/// installed, else the hosts file; off outside the host's network namespace.
pub fn choose_auto(p: &Probe) -> DnsSystem {
    if p.foreign_netns {
        DnsSystem::Off
    } else if p.resolved && p.dbus {
        DnsSystem::Resolved
    } else if p.resolvconf {
        DnsSystem::Resolvconf
    } else {
        DnsSystem::Hosts
    }
}

/// Whether this process's network namespace is not the host's: it is one that
/// `ip netns add` named (under `/run/netns`), or differs from PID 1's (when that can
/// be read).
fn in_foreign_netns() -> bool {
    let ns = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let Some(own) = ns(Path::new("/proc/self/ns/net")) else {
        return false;
    };
    if ns(Path::new("/proc/1/ns/net")).is_some_and(|init| init != own) {
        return true;
    }
    std::fs::read_dir("/run/netns")
        .map(|dir| dir.flatten().any(|e| ns(&e.path()) == Some(own)))
        .unwrap_or(false)
}

const RESOLVE1: [&str; 3] = [
    "org.freedesktop.resolve1",
    "/org/freedesktop/resolve1",
    "org.freedesktop.resolve1.Manager",
];

/// `busctl` arguments of one Manager method call.
fn resolve1_call(method: &str, signature: &str, args: Vec<String>) -> Vec<String> {
    let mut call = vec![
        "call".to_owned(),
        format!("--timeout={}", TOOL_TIMEOUT.as_secs()),
    ];
    call.extend(RESOLVE1.iter().map(|s| (*s).to_owned()));
    call.push(method.into());
    call.push(signature.into());
    call.extend(args);
    call
}

/// The `busctl` calls that hook the view into systemd-resolved for link `ifindex`:
/// its DNS server (`SetLinkDNS`, or `SetLinkDNSEx` for a port other than 53), the
/// routing-only domain `~meta` (`SetLinkDomains`), and never the default route
/// (`SetLinkDefaultRoute`), so other names never reach the view.
pub fn resolved_calls(ifindex: u32, listen: SocketAddr) -> Vec<Vec<String>> {
    let link = ifindex.to_string();
    let (family, bytes) = match listen.ip() {
        IpAddr::V4(v4) => ("2", v4.octets().to_vec()),
        IpAddr::V6(v6) => ("10", v6.octets().to_vec()),
    };
    let mut server = vec![
        link.clone(),
        "1".into(),
        family.into(),
        bytes.len().to_string(),
    ];
    server.extend(bytes.iter().map(u8::to_string));
    let dns = if listen.port() == 53 {
        resolve1_call("SetLinkDNS", "ia(iay)", server)
    } else {
        server.extend([listen.port().to_string(), String::new()]);
        resolve1_call("SetLinkDNSEx", "ia(iayqs)", server)
    };
    vec![
        dns,
        resolve1_call(
            "SetLinkDomains",
            "ia(sb)",
            vec![
                link.clone(),
                "1".into(),
                crate::dns::DOMAIN.into(),
                "true".into(),
            ],
        ),
        resolve1_call("SetLinkDefaultRoute", "ib", vec![link, "false".into()]),
    ]
}

/// The `busctl` call that drops everything set for link `ifindex`.
pub fn resolved_revert_call(ifindex: u32) -> Vec<String> {
    resolve1_call("RevertLink", "i", vec![ifindex.to_string()])
}

/// The resolvconf record name of the TUN `tun`.
pub fn resolvconf_record(tun: &str) -> String {
    format!("{tun}.metanet")
}

/// What `resolvconf -a` reads: the view as nameserver, `meta` as search domain. A
/// resolv.conf cannot name a port.
pub fn resolvconf_entry(listen: SocketAddr) -> Result<String, String> {
    if listen.port() != 53 {
        return Err(format!(
            "resolvconf cannot name port {}: dns-listen must use port 53",
            listen.port()
        ));
    }
    Ok(format!(
        "nameserver {}\nsearch {}\n",
        listen.ip(),
        crate::dns::DOMAIN
    ))
}

/// The executable `name` in `PATH` or the usual system directories.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Run `tool args` with `stdin`, bounded by [`TOOL_TIMEOUT`]; the error says what the
/// tool said.
fn run_tool(tool: &str, args: &[String], stdin: Option<&[u8]>) -> Result<(), String> {
    let path = find_tool(tool).ok_or_else(|| format!("{tool} is not installed"))?;
    let mut child = Command::new(&path)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input);
    }
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{tool} did not finish within {TOOL_TIMEOUT:?}"));
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    if let Some(mut err) = child.stderr.take() {
        use std::io::Read;
        let _ = (&mut err).take(512).read_to_string(&mut said);
    }
    let said = said.trim();
    Err(if said.is_empty() {
        format!(
            "{tool} {} failed ({status})",
            args.first().map_or("", |s| s)
        )
    } else {
        format!("{tool}: {said}")
    })
}

/// The managed block for `entries` (at most [`MAX_HOSTS_ENTRIES`] lines; names that a
/// hosts file cannot hold are left out).
pub fn hosts_block(entries: &BTreeSet<(String, Ipv6Addr)>) -> Vec<u8> {
    let mut b = format!("{BEGIN}\n");
    for (name, ip) in entries
        .iter()
        .filter(|(n, _)| !n.is_empty() && n.bytes().all(hosts_name_byte))
        .take(MAX_HOSTS_ENTRIES)
    {
        b.push_str(&format!("{ip}\t{name}\n"));
    }
    b.push_str(END);
    b.push('\n');
    b.into_bytes()
}

fn hosts_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

/// Where the managed block is in `file`: from the start of its BEGIN line to after its
/// END line. An unterminated block is an error (nothing is touched).
fn find_block(file: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut start = None;
    let mut pos = 0;
    while pos < file.len() {
        let end = file[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(file.len(), |i| pos + i + 1);
        let line = file[pos..end]
            .strip_suffix(b"\n")
            .unwrap_or(&file[pos..end]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match start {
            None if line == BEGIN.as_bytes() => start = Some(pos),
            Some(s) if line == END.as_bytes() => return Ok(Some((s, end))),
            _ => {}
        }
        pos = end;
    }
    match start {
        Some(_) => Err(format!("`{BEGIN}` without `{END}`: fix the file by hand")),
        None => Ok(None),
    }
}

/// `file` with its managed block replaced by `block`, or `block` appended; also
/// whether a final newline had to be added before it.
pub fn splice_block(file: &[u8], block: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let mut out = Vec::with_capacity(file.len() + block.len() + 1);
    if let Some((s, e)) = find_block(file)? {
        out.extend_from_slice(&file[..s]);
        out.extend_from_slice(block);
        out.extend_from_slice(&file[e..]);
        return Ok((out, false));
    }
    out.extend_from_slice(file);
    let added = !file.is_empty() && !file.ends_with(b"\n");
    if added {
        out.push(b'\n');
    }
    out.extend_from_slice(block);
    Ok((out, added))
}

/// `file` without its managed block (`None`: it has none). `added_newline`: the final
/// newline before a block at the end was ours, and goes too.
pub fn remove_block(file: &[u8], added_newline: bool) -> Result<Option<Vec<u8>>, String> {
    let Some((s, e)) = find_block(file)? else {
        return Ok(None);
    };
    let mut start = s;
    if added_newline && e == file.len() && s > 0 && file[s - 1] == b'\n' {
        start -= 1;
    }
    let mut out = file[..start].to_vec();
    out.extend_from_slice(&file[e..]);
    Ok(Some(out))
}

/// Read the hosts file at `path` (through a symbolic link), transform it with `edit`,
/// and when that changes it, replace it atomically: a temporary file in the same
/// directory with the original's mode and owner, fsync, rename. A missing file is
/// read as empty.
pub fn edit_hosts(
    path: &Path,
    edit: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<(), String> {
    let shown = path.display();
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let (old, meta) = match std::fs::metadata(&real) {
        Ok(m) if !m.is_file() => return Err(format!("{shown} is not a regular file")),
        Ok(m) if m.len() > MAX_HOSTS_FILE => {
            return Err(format!("{shown} is larger than {MAX_HOSTS_FILE} bytes"))
        }
        Ok(m) => (
            std::fs::read(&real).map_err(|e| format!("cannot read {shown}: {e}"))?,
            Some(m),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), None),
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    };
    let new = edit(&old)?;
    if new == old {
        return Ok(());
    }
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "hosts".into());
    let tmp = real.with_file_name(format!(".{name}.metanet.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mode = meta
            .as_ref()
            .map_or(0o644, |m| m.permissions().mode() & 0o7777);
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(m) = &meta {
            // Keep the owner where we may (root may; others keep theirs).
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
        }
        f.write_all(&new)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &real)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {shown}: {e}")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entries(names: &[(&str, &str)]) -> BTreeSet<(String, Ipv6Addr)> {
        names
            .iter()
            .map(|(n, ip)| ((*n).to_owned(), ip.parse().unwrap()))
            .collect()
    }

    const FOREIGN: &[u8] =
        b"127.0.0.1\tlocalhost\n# a comment \xff (not UTF-8)\n::1 localhost ip6-localhost\n";

    #[test]
    fn the_block_is_inserted_replaced_and_removed_leaving_the_rest_untouched() {
        let one = hosts_block(&entries(&[("mn1a.meta", "fd00::1")]));
        assert_eq!(
            String::from_utf8(one.clone()).unwrap(),
            format!("{BEGIN}\nfd00::1\tmn1a.meta\n{END}\n")
        );
        let (with, added) = splice_block(FOREIGN, &one).unwrap();
        assert!(!added);
        assert!(with.starts_with(FOREIGN));
        assert!(with.ends_with(&one));
        // Replaced in place, also in the middle of foreign lines.
        let middle = [&with[..], b"10.0.0.1 later\n"].concat();
        let two = hosts_block(&entries(&[
            ("alice.meta", "fd00::2"),
            ("mn1a.meta", "fd00::1"),
        ]));
        let (replaced, _) = splice_block(&middle, &two).unwrap();
        assert_eq!(replaced, [FOREIGN, &two[..], b"10.0.0.1 later\n"].concat());
        // Idempotent.
        assert_eq!(splice_block(&replaced, &two).unwrap().0, replaced);
        // Removed: the foreign bytes come back exactly.
        let removed = remove_block(&replaced, false).unwrap().unwrap();
        assert_eq!(removed, [FOREIGN, b"10.0.0.1 later\n"].concat());
        assert_eq!(remove_block(FOREIGN, false).unwrap(), None);
    }

    #[test]
    fn a_file_without_a_final_newline_gets_it_back_exactly() {
        let file = b"127.0.0.1 localhost";
        let block = hosts_block(&entries(&[("mn1a.meta", "fd00::1")]));
        let (with, added) = splice_block(file, &block).unwrap();
        assert!(added);
        assert_eq!(with, [&file[..], b"\n", &block[..]].concat());
        assert_eq!(remove_block(&with, added).unwrap().unwrap(), file);
        // An empty or missing file holds just the block.
        assert_eq!(splice_block(b"", &block).unwrap(), (block.clone(), false));
        assert_eq!(remove_block(&block, false).unwrap().unwrap(), b"");
    }

    #[test]
    fn an_unterminated_block_is_left_alone_and_odd_names_are_left_out() {
        let broken = format!("127.0.0.1 localhost\n{BEGIN}\nfd00::1 x.meta\n");
        let block = hosts_block(&BTreeSet::new());
        assert!(splice_block(broken.as_bytes(), &block)
            .unwrap_err()
            .contains(END));
        assert!(remove_block(broken.as_bytes(), false).is_err());
        let odd = hosts_block(&entries(&[("a b.meta", "fd00::1"), ("x#.meta", "fd00::2")]));
        assert_eq!(odd, format!("{BEGIN}\n{END}\n").into_bytes());
        let many: BTreeSet<_> = (0..MAX_HOSTS_ENTRIES + 10)
            .map(|i| (format!("n{i}.meta"), Ipv6Addr::LOCALHOST))
            .collect();
        let lines = hosts_block(&many).iter().filter(|&&b| b == b'\n').count();
        assert_eq!(lines, MAX_HOSTS_ENTRIES + 2);
    }

    #[test]
    fn the_file_is_replaced_atomically_keeping_its_mode() {
        let dir = std::env::temp_dir().join(format!("metanet-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        std::fs::write(&path, FOREIGN).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        let block = hosts_block(&entries(&[("mn1a.meta", "fd00::1")]));
        edit_hosts(&path, |old| Ok(splice_block(old, &block)?.0)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_ne!(meta.ino(), ino, "renamed into place, not written over");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            [FOREIGN, &block[..]].concat()
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary left"
        );
        edit_hosts(&path, |old| Ok(remove_block(old, false)?.unwrap())).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), FOREIGN);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn auto_prefers_resolved_then_resolvconf_then_hosts_and_stays_off_in_a_namespace() {
        let all = Probe {
            foreign_netns: false,
            resolved: true,
            dbus: true,
            resolvconf: true,
        };
        assert_eq!(choose_auto(&all), DnsSystem::Resolved);
        let no_bus = Probe { dbus: false, ..all };
        assert_eq!(choose_auto(&no_bus), DnsSystem::Resolvconf);
        let bare = Probe::default();
        assert_eq!(choose_auto(&bare), DnsSystem::Hosts);
        let netns = Probe {
            foreign_netns: true,
            ..all
        };
        assert_eq!(choose_auto(&netns), DnsSystem::Off);
    }

    #[test]
    fn resolved_calls_name_the_link_the_server_and_the_routing_domain() {
        let calls = resolved_calls(7, "[fd00::1]:53".parse().unwrap());
        let head = |c: &[String]| c[..6].join(" ");
        assert_eq!(
            head(&calls[0]),
            "call --timeout=5 org.freedesktop.resolve1 /org/freedesktop/resolve1 \
             org.freedesktop.resolve1.Manager SetLinkDNS"
        );
        let mut server = vec!["ia(iay)", "7", "1", "10", "16", "253"];
        server.extend(["0"; 14]);
        server.push("1");
        assert_eq!(calls[0][6..], server);
        assert_eq!(
            calls[1][5..],
            ["SetLinkDomains", "ia(sb)", "7", "1", "meta", "true"]
        );
        assert_eq!(calls[2][5..], ["SetLinkDefaultRoute", "ib", "7", "false"]);
        // Another port needs SetLinkDNSEx (port and server name after the address).
        let ex = resolved_calls(3, "198.18.0.1:5353".parse().unwrap());
        assert_eq!(
            ex[0][5..],
            [
                "SetLinkDNSEx",
                "ia(iayqs)",
                "3",
                "1",
                "2",
                "4",
                "198",
                "18",
                "0",
                "1",
                "5353",
                ""
            ]
        );
        assert_eq!(resolved_revert_call(7)[5..], ["RevertLink", "i", "7"]);
    }

    #[test]
    fn resolvconf_entry_names_the_view_and_the_search_domain() {
        assert_eq!(resolvconf_record("metanet0"), "metanet0.metanet");
        assert_eq!(
            resolvconf_entry("[fd00::1]:53".parse().unwrap()).unwrap(),
            "nameserver fd00::1\nsearch meta\n"
        );
        assert!(resolvconf_entry("[fd00::1]:5353".parse().unwrap()).is_err());
    }
}
