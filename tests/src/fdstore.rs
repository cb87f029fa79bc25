//! A stand-in for systemd's file descriptor store, which PID 1 keeps for a service
//! across restarts (these machines do not run systemd as PID 1). It speaks the same
//! protocol: the daemon sends `FDSTORE=1`/`FDNAME=` datagrams with descriptors
//! (`SCM_RIGHTS`) to `NOTIFY_SOCKET` and `FDSTOREREMOVE=1` to drop them; the next start
//! gets them at descriptor 3 onwards with `LISTEN_FDS`, `LISTEN_FDNAMES` and
//! `LISTEN_PID`.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The store: a notify socket and what it kept.
#[derive(Debug)]
pub struct FdStore {
    sock: UnixDatagram,
    pub path: PathBuf,
    kept: BTreeMap<String, OwnedFd>,
}

impl FdStore {
    /// A notify socket at `dir/notify.sock`.
    pub fn new(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        FdStore {
            sock,
            path,
            kept: BTreeMap::new(),
        }
    }

    /// Take in every message sent so far (a name stored again replaces the old one,
    /// as systemd keeps one entry per descriptor).
    pub fn collect(&mut self) {
        let mut buf = vec![0u8; 4096];
        loop {
            let mut fds = Vec::new();
            let n = match metanet_daemon::sys::recv_with_fds(
                self.sock.as_raw_fd(),
                &mut buf,
                &mut fds,
                8,
            ) {
                Ok(n) => n,
                Err(_) => return,
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let field = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(str::to_owned)
            };
            let Some(name) = field("FDNAME=") else {
                continue;
            };
            if field("FDSTORE=").as_deref() == Some("1") {
                if let Some(fd) = fds.into_iter().next() {
                    self.kept.insert(name, fd);
                }
            } else if field("FDSTOREREMOVE=").as_deref() == Some("1") {
                self.kept.remove(&name);
            }
        }
    }

    /// The names kept.
    pub fn names(&mut self) -> Vec<String> {
        self.collect();
        self.kept.keys().cloned().collect()
    }

    /// Give `cmd` (which must run `sh -c 'export LISTEN_PID=$$; exec "$0" "$@"' …`,
    /// see [`LISTEN_WRAP`]) the notify socket and the kept descriptors at 3 onwards.
    pub fn pass(&mut self, cmd: &mut Command) {
        self.collect();
        let names: Vec<String> = self.kept.keys().cloned().collect();
        let raw: Vec<i32> = self.kept.values().map(AsRawFd::as_raw_fd).collect();
        cmd.env("NOTIFY_SOCKET", &self.path)
            .env("LISTEN_FDS", raw.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"));
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2) on
        // descriptors this process holds; first moved out of 3.. so none is overwritten.
        unsafe {
            cmd.pre_exec(move || {
                let mut high = Vec::with_capacity(raw.len());
                for &fd in &raw {
                    let h = libc::fcntl(fd, libc::F_DUPFD, 1000);
                    if h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    high.push(h);
                }
                for (i, &h) in high.iter().enumerate() {
                    if libc::dup2(h, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(h);
                }
                Ok(())
            });
        }
    }
}

/// The wrapper that sets `LISTEN_PID` to the daemon's own pid (the shell's, which
/// `exec` hands to the daemon), as the service manager would.
pub const LISTEN_WRAP: [&str; 3] = ["sh", "-c", "export LISTEN_PID=$$; exec \"$0\" \"$@\""];
