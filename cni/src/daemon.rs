//! metanetd's control socket as the plugin uses it: one connection per request, one
//! JSON line each way (`proto::control`), every step bounded by the configured timeout.
//!
//! The connect is bounded too: a daemon too busy to accept fills its backlog, and a
//! blocking connect would then hang the container runtime.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use metanet_proto::control::{self, AttachmentInfo, Command, Reply, Request};
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

/// Longest reply accepted, in bytes (an attachment list can be long, not unbounded).
const MAX_REPLY: u64 = 16 * 1024 * 1024;

/// How often a connect to a full backlog is tried again.
const CONNECT_RETRY: Duration = Duration::from_millis(20);

/// Why a request got no successful reply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    /// Nothing to talk to: no socket file, or nobody listening on it.
    #[error("metanetd unreachable at {path}: {why} (is metanetd running?)", path = .path.display())]
    NotRunning { path: PathBuf, why: String },
    /// The socket is there, but talking failed (timeout, permission, I/O).
    #[error("metanetd unreachable at {path}: {why}", path = .path.display())]
    Failed { path: PathBuf, why: String },
    /// The answer is not a response to the request.
    #[error("metanetd at {path} sent a malformed reply: {why}", path = .path.display())]
    Protocol { path: PathBuf, why: String },
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(control::Error),
}

/// A client for one daemon socket.
#[derive(Clone, Debug)]
pub(crate) struct Daemon {
    path: PathBuf,
    timeout: Duration,
}

impl Daemon {
    pub(crate) fn new(path: &Path, timeout: Duration) -> Self {
        Daemon {
            path: path.to_path_buf(),
            timeout,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Send `command` (with `fds` attached, `SCM_RIGHTS`) and return the successful reply.
    pub(crate) fn request(&self, command: Command, fds: &[RawFd]) -> Result<Reply, DaemonError> {
        let id = next_id();
        let mut stream = self.connect()?;
        let response =
            metanet_attach::exchange(&mut stream, &Request { id, command }, fds, MAX_REPLY)
                .map_err(|e| match e {
                    metanet_attach::ExchangeError::Io(e) => self.failed(io_why(&e, self.timeout)),
                    metanet_attach::ExchangeError::Protocol(why) => self.protocol(why),
                })?;
        if response.id != id {
            return Err(self.protocol(format!(
                "reply id {} does not match request id {id}",
                response.id
            )));
        }
        match (response.result, response.error) {
            (Some(reply), None) => Ok(reply),
            (None, Some(error)) => Err(DaemonError::Refused(error)),
            _ => Err(self.protocol("reply must hold exactly one of `result` and `error`".into())),
        }
    }

    /// Every attachment.
    pub(crate) fn attachments(&self) -> Result<Vec<AttachmentInfo>, DaemonError> {
        match self.request(Command::Attachments, &[])? {
            Reply::Attachments { attachments } => Ok(attachments),
            other => Err(self.unexpected("attachments", &other)),
        }
    }

    /// Send an `Attach` command with the namespace's descriptors.
    pub(crate) fn attach(
        &self,
        command: Command,
        fds: &[RawFd],
    ) -> Result<AttachmentInfo, DaemonError> {
        match self.request(command, fds)? {
            Reply::Attachment(info) => Ok(info),
            other => Err(self.unexpected("attachment", &other)),
        }
    }

    /// Send a command answered with `Done` (`Detach`).
    pub(crate) fn done(&self, command: Command) -> Result<(), DaemonError> {
        match self.request(command, &[])? {
            Reply::Done => Ok(()),
            other => Err(self.unexpected("done", &other)),
        }
    }

    /// Daemon status.
    pub(crate) fn status(&self) -> Result<control::Status, DaemonError> {
        match self.request(Command::Status, &[])? {
            Reply::Status(status) => Ok(status),
            other => Err(self.unexpected("status", &other)),
        }
    }

    fn connect(&self) -> Result<UnixStream, DaemonError> {
        let addr = UnixAddr::new(self.path.as_path())
            .map_err(|e| self.failed(format!("not a socket path: {e}")))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            // Non-blocking: a full backlog answers EAGAIN instead of blocking.
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )
            .map_err(|e| self.failed(format!("cannot create a socket: {e}")))?;
            match socket::connect(fd.as_raw_fd(), &addr) {
                Ok(()) => {
                    let stream = UnixStream::from(fd);
                    return stream
                        .set_nonblocking(false)
                        .and_then(|()| stream.set_read_timeout(Some(self.timeout)))
                        .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
                        .map(|()| stream)
                        .map_err(|e| self.failed(e.to_string()));
                }
                Err(Errno::EAGAIN) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(self.failed(format!(
                            "not accepting connections within {}s",
                            self.timeout.as_secs()
                        )));
                    }
                    std::thread::sleep(CONNECT_RETRY.min(deadline - now));
                }
                Err(e @ (Errno::ENOENT | Errno::ECONNREFUSED)) => {
                    return Err(DaemonError::NotRunning {
                        path: self.path.clone(),
                        why: std::io::Error::from(e).to_string(),
                    })
                }
                Err(e) => return Err(self.failed(std::io::Error::from(e).to_string())),
            }
        }
    }

    fn failed(&self, why: String) -> DaemonError {
        DaemonError::Failed {
            path: self.path.clone(),
            why,
        }
    }

    fn protocol(&self, why: String) -> DaemonError {
        DaemonError::Protocol {
            path: self.path.clone(),
            why,
        }
    }

    fn unexpected(&self, wanted: &str, got: &Reply) -> DaemonError {
        let got = serde_json::to_value(got)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str().map(str::to_owned)))
            .unwrap_or_else(|| "unknown".into());
        self.protocol(format!("expected a `{wanted}` reply, got `{got}`"))
    }
}

fn io_why(e: &std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("no answer within {}s", timeout.as_secs())
        }
        _ => e.to_string(),
    }
}

/// A request id unique within this process and unlikely to repeat across processes.
fn next_id() -> u64 {
    static COUNTER: AtomicU32 = AtomicU32::new(1);
    (u64::from(std::process::id()) << 32) | u64::from(COUNTER.fetch_add(1, Ordering::Relaxed))
}
