//! Attaching a network namespace to metanetd: the part every caller shares.
//!
//! The kernel fixes a TUN device's namespace when `/dev/net/tun` is opened, so whoever
//! is in the namespace opens it: [`open_in`] enters the namespace on a short-lived
//! thread (the process's own namespace is never changed), opens an unattached TUN and a
//! `NETLINK_ROUTE` socket there, and returns both. [`exchange`] then sends them to the
//! daemon with the `attach` request line (`SCM_RIGHTS`); the daemon creates the
//! interface and configures it through that netlink socket, so it needs nothing beyond
//! `CAP_NET_ADMIN`. Used by `metanet attach`, the CNI plugin and the daemon itself
//! (re-attachment after a restart, when it may enter namespaces).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use metanet_proto::control::{Request, Response};
use nix::fcntl::{open, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType};
use nix::sys::stat::Mode;

/// Where `ip netns` keeps its named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `statfs` magic of the namespace filesystem (`NSFS_MAGIC`).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Why the descriptors could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no network namespace at {0} (see `ip netns list`)")]
    NotFound(PathBuf),
    #[error("{0} is not a network namespace (give an `ip netns` name, /run/netns/NAME or /proc/PID/ns/net)")]
    NotNamespace(PathBuf),
    #[error(
        "entering the network namespace {0} needs root (CAP_SYS_ADMIN): run with sudo, or \
         inside the namespace (`ip netns exec NAME metanet attach ...`)"
    )]
    Permission(PathBuf),
    #[error("inside the namespace {path}: cannot open {what}: {source}")]
    Open {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
}

/// An `ip netns` name (no `/`) as its path under [`NETNS_RUN_DIR`]; a path as given.
pub fn resolve(netns: &str) -> PathBuf {
    if netns.contains('/') {
        PathBuf::from(netns)
    } else {
        Path::new(NETNS_RUN_DIR).join(netns)
    }
}

/// Whether `name` can be an `ip netns` name or a namespace path: not empty, no NUL.
pub fn valid_netns(netns: &str) -> bool {
    !netns.is_empty()
        && netns.len() <= 4096
        && !netns.contains('\0')
        && netns != "."
        && netns != ".."
}

/// The namespace's identity: device and inode of its nsfs file (what the kernel
/// compares when two paths name the same namespace).
pub fn namespace_id(path: &Path) -> Result<(u64, u64), Error> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(path.into()),
        std::io::ErrorKind::PermissionDenied => Error::Permission(path.into()),
        _ => Error::NotNamespace(path.into()),
    })?;
    let fs = nix::sys::statfs::statfs(path).map_err(|_| Error::NotNamespace(path.into()))?;
    #[allow(clippy::unnecessary_cast)] // the field's type differs between targets
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(Error::NotNamespace(path.into()));
    }
    Ok((meta.dev(), meta.ino()))
}

/// The network namespace the calling thread is in.
pub fn own_namespace() -> Result<(u64, u64), Error> {
    namespace_id(Path::new("/proc/thread-self/ns/net"))
}

/// What the daemon needs from inside a namespace: an unattached TUN and a netlink
/// socket, both opened there.
#[derive(Debug)]
pub struct Descriptors {
    pub tun: OwnedFd,
    pub netlink: OwnedFd,
}

impl Descriptors {
    /// Both, in the order the `attach` request carries them.
    pub fn raw(&self) -> [RawFd; 2] {
        [self.tun.as_raw_fd(), self.netlink.as_raw_fd()]
    }
}

/// Open the [`Descriptors`] inside the namespace at `path`: directly when this thread
/// is already in it (no privilege needed beyond opening `/dev/net/tun`), else from a
/// thread that enters it (CAP_SYS_ADMIN) and ends.
pub fn open_in(path: &Path) -> Result<Descriptors, Error> {
    in_namespace(path, || open_here(path)).and_then(|opened| opened)
}

/// Run `f` inside the network namespace at `path`: on this thread when it is already
/// in it, else on a thread that enters it (CAP_SYS_ADMIN) and ends, so the process's
/// own namespace is never changed. What `f` opens there stays in that namespace; what
/// it reads under `/proc/thread-self/net` is that namespace's.
pub fn in_namespace<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
    let target = namespace_id(path)?;
    if own_namespace().ok() == Some(target) {
        return Ok(f());
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(
                |e| match e {
                    nix::Error::EACCES | nix::Error::EPERM => Error::Permission(path.into()),
                    _ => Error::NotFound(path.into()),
                },
            )?;
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| match e {
                nix::Error::EINVAL => Error::NotNamespace(path.into()),
                _ => Error::Permission(path.into()),
            })?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(Error::NotNamespace(path.into())))
    })
}

fn open_here(path: &Path) -> Result<Descriptors, Error> {
    let fail = |what, e: nix::Error| Error::Open {
        path: path.into(),
        what,
        source: e.into(),
    };
    let tun = open(
        "/dev/net/tun",
        OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| fail("/dev/net/tun", e))?;
    let netlink = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| fail("a netlink socket", e))?;
    Ok(Descriptors { tun, netlink })
}

/// Why one request/response exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The daemon's answer is not a response line.
    #[error("{0}")]
    Protocol(String),
}

/// Send `request` as one line (with `fds` attached to it, `SCM_RIGHTS`) and read one
/// response line of at most `max_reply` bytes. The stream's timeouts bound both.
pub fn exchange(
    stream: &mut UnixStream,
    request: &Request,
    fds: &[RawFd],
    max_reply: u64,
) -> Result<Response, ExchangeError> {
    let mut line = serde_json::to_vec(request)
        .map_err(|e| ExchangeError::Protocol(format!("cannot encode request: {e}")))?;
    line.push(b'\n');
    if fds.is_empty() {
        stream.write_all(&line)?;
    } else {
        // The descriptors ride on the first byte; the rest of a long line follows.
        let iov = [std::io::IoSlice::new(&line)];
        let cmsg = [socket::ControlMessage::ScmRights(fds)];
        let sent = socket::sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            &cmsg,
            socket::MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(std::io::Error::from)?;
        stream.write_all(&line[sent..])?;
    }
    stream.flush()?;
    let mut reader = BufReader::new(Read::by_ref(stream).take(max_reply));
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf)?;
    if buf.last() != Some(&b'\n') {
        return Err(ExchangeError::Protocol(if buf.is_empty() {
            "connection closed without a reply".into()
        } else if buf.len() as u64 >= max_reply {
            format!("reply longer than {max_reply} bytes")
        } else {
            "reply not terminated by a newline".into()
        }));
    }
    serde_json::from_slice(&buf).map_err(|e| ExchangeError::Protocol(format!("invalid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_run_netns_paths_and_paths_stay() {
        assert_eq!(resolve("blue"), PathBuf::from("/run/netns/blue"));
        assert_eq!(resolve("/proc/1/ns/net"), PathBuf::from("/proc/1/ns/net"));
        assert!(!valid_netns(""));
        assert!(!valid_netns("a\0b"));
        assert!(valid_netns("blue"));
    }

    #[test]
    fn a_file_that_is_no_namespace_is_refused() {
        assert!(matches!(
            namespace_id(Path::new("/proc/self/status")),
            Err(Error::NotNamespace(_))
        ));
        assert!(matches!(
            namespace_id(Path::new("/run/netns/metanet-no-such-namespace")),
            Err(Error::NotFound(_))
        ));
        assert!(own_namespace().is_ok());
    }
}
