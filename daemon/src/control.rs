//! The control socket server: newline-delimited JSON (`proto::control`), each request
//! forwarded to the main loop and answered in order. Lines are bounded; a bad line gets
//! an error response, never a crash. Clients are capped ([`Limits`]) and an idle client
//! is closed, so connections that say nothing cannot lock the socket out.
//!
//! Every request is checked against the caller's credentials (`SO_PEERCRED`,
//! `SO_PEERGROUPS`) before it reaches the daemon: see [`Right`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use metanet_proto::control::{self, Request, Response};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// A request, the descriptors that came with it (`SCM_RIGHTS`; only `attach` uses
/// them, the others are closed) and where to send its answer.
pub type Job = (
    control::Command,
    Vec<OwnedFd>,
    oneshot::Sender<Result<control::Reply, control::Error>>,
);

/// Descriptors a client may have in flight (an `attach` carries two).
const FDS_PER_CLIENT: usize = 4;

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("another metanetd is already serving {0}: stop it first, or pick another --socket")]
    InUse(PathBuf),
    #[error("cannot create control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Bind the socket (mode 0660), replacing a stale file but never a live daemon's.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::InUse(path.into()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    Ok(listener)
}

/// What a control client may do. Opening the socket (mode 0660, group `metanet`) is
/// what [`Right::ReadState`] and [`Right::ManageSessions`] take; the others need uid 0
/// or an operator ([`Access`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Status, peers, identities' public parts, names, resolving, ping.
    ReadState,
    /// Connect and disconnect peers.
    ManageSessions,
    /// Read or change keys, or change what the daemon publishes.
    ManageKeys,
    /// Submit chain transactions paid by the funding account.
    SpendGas,
}

impl Right {
    /// The right `cmd` needs.
    pub fn of(cmd: &control::Command) -> Right {
        use control::Command as C;
        match cmd {
            C::Status
            | C::Peers
            | C::IdList
            | C::IdShow { .. }
            | C::Resolve { .. }
            | C::NameShow { .. }
            | C::NameList { .. }
            | C::RelayStatus
            | C::PolicyShow
            | C::Attachments
            | C::GroupList { .. }
            | C::GroupShow { .. }
            | C::GroupLog { .. } => Right::ReadState,
            C::Connect { .. } | C::Disconnect { .. } => Right::ManageSessions,
            C::IdNew { .. }
            | C::IdRemove { .. }
            | C::IdImport { .. }
            | C::IdExport { .. }
            | C::IdRotate { .. }
            | C::IdRevoke { .. }
            // An attachment lets a namespace speak as the identity (and may create it).
            | C::Attach { .. }
            | C::Detach { .. } => Right::ManageKeys,
            C::NameRegister { .. }
            | C::NameTransfer { .. }
            | C::GroupCreate { .. }
            | C::GroupAdd { .. }
            | C::GroupRemove { .. }
            | C::GroupAdmin { .. } => Right::SpendGas,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Right::ReadState => "read state",
            Right::ManageSessions => "manage sessions",
            Right::ManageKeys => "manage keys",
            Right::SpendGas => "spend gas",
        }
    }
}

/// Who holds the operator rights ([`Right::ManageKeys`], [`Right::SpendGas`]) besides
/// uid 0: config `operator-uids` and `operator-groups` (resolved to gids at start and
/// at every reload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub operator_uids: Vec<u32>,
    pub operator_gids: Vec<u32>,
}

/// The credentials of a connected client, read once when it connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Access {
    /// Whether `caller` holds `right`; the refusal names the missing right and the fix.
    pub fn check(&self, caller: &Caller, right: Right) -> Result<(), control::Error> {
        let operator = caller.uid == 0
            || self.operator_uids.contains(&caller.uid)
            || std::iter::once(&caller.gid)
                .chain(&caller.groups)
                .any(|g| self.operator_gids.contains(g));
        match right {
            Right::ReadState | Right::ManageSessions => Ok(()),
            Right::ManageKeys | Right::SpendGas if operator => Ok(()),
            Right::ManageKeys | Right::SpendGas => Err(control::Error {
                kind: control::ErrorKind::Forbidden,
                message: format!(
                    "permission denied: \"{}\" needs root or an operator (uid {} is neither): \
                     run it with sudo, or add the user to `operator-uids` or one of its groups \
                     to `operator-groups` in metanetd.toml",
                    right.describe(),
                    caller.uid
                ),
            }),
        }
    }
}

/// The gid of group `name` in `/etc/group`, or `name` itself when it is a number.
pub fn gid_of(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse() {
        return Some(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
    })
}

/// Bounds on control clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Clients connected at once; one more is answered with an error and closed.
    pub max_clients: usize,
    /// A client that sends no complete request for this long is closed.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 128,
            idle: Duration::from_secs(30),
        }
    }
}

/// Accept clients forever, forwarding requests they may make to `jobs`.
pub async fn serve(
    listener: UnixListener,
    jobs: mpsc::Sender<Job>,
    access: Arc<RwLock<Access>>,
    limits: Limits,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_clients));
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tokio::spawn(refuse(stream));
                    continue;
                };
                let caller = match credentials(&stream) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "control client without credentials");
                        continue;
                    }
                };
                let jobs = jobs.clone();
                let access = access.clone();
                tokio::spawn(async move {
                    if let Err(e) = client(stream, jobs, caller, access, limits.idle).await {
                        tracing::debug!(error = %e, "control client ended");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                // EMFILE and friends repeat as fast as we retry: one warning a minute.
                let now = tokio::time::Instant::now();
                if last_warning.is_none_or(|t| now - t > Duration::from_secs(60)) {
                    tracing::warn!(error = %e, "control accept failed");
                    last_warning = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn credentials(stream: &UnixStream) -> std::io::Result<Caller> {
    let cred = stream.peer_cred()?;
    Ok(Caller {
        uid: cred.uid(),
        gid: cred.gid(),
        groups: crate::sys::peer_groups(stream)?,
    })
}

/// Answer a client over the cap with one error line, then close it.
async fn refuse(mut stream: UnixStream) {
    let mut out = serde_json::to_vec(&bad_kind(
        0,
        control::ErrorKind::Timeout,
        "too many control clients: try again shortly",
    ))
    .unwrap_or_default();
    out.push(b'\n');
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
}

async fn client(
    mut stream: UnixStream,
    jobs: mpsc::Sender<Job>,
    caller: Caller,
    access: Arc<RwLock<Access>>,
    idle: Duration,
) -> std::io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // One line (newline included), or `None` when it grew past the limit.
        let line = loop {
            if let Some(at) = pending.iter().position(|&b| b == b'\n') {
                break Some(pending.drain(..=at).collect::<Vec<u8>>());
            }
            if pending.len() > control::MAX_LINE {
                break None;
            }
            let read = async {
                loop {
                    stream.readable().await?;
                    let fd = stream.as_raw_fd();
                    match stream.try_io(Interest::READABLE, || {
                        crate::sys::recv_with_fds(fd, &mut chunk, &mut fds, FDS_PER_CLIENT)
                    }) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        other => return other,
                    }
                }
            };
            let Ok(n) = tokio::time::timeout(idle, read).await else {
                return Ok(()); // idle: close
            };
            let n = n?;
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&chunk[..n]);
        };
        let Some(line) = line else {
            let mut out = serde_json::to_vec(&bad(0, "request line too long")).unwrap_or_default();
            out.push(b'\n');
            stream.write_all(&out).await?;
            return Ok(());
        };
        // Descriptors travel with the line they came with; a request that takes none
        // closes them here.
        let passed = std::mem::take(&mut fds);
        let allowed = |req: &Request| {
            let access = access
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            access.check(&caller, Right::of(&req.command))
        };
        let response = match serde_json::from_slice::<Request>(&line) {
            Err(e) => bad(id_of(&line), &format!("malformed request: {e}")),
            Ok(req) => match allowed(&req) {
                Err(error) => Response {
                    id: req.id,
                    result: None,
                    error: Some(error),
                },
                Ok(()) => {
                    let (tx, rx) = oneshot::channel();
                    if jobs.send((req.command, passed, tx)).await.is_err() {
                        return Ok(());
                    }
                    match rx.await {
                        Ok(Ok(result)) => Response {
                            id: req.id,
                            result: Some(result),
                            error: None,
                        },
                        Ok(Err(error)) => Response {
                            id: req.id,
                            result: None,
                            error: Some(error),
                        },
                        Err(_) => return Ok(()),
                    }
                }
            },
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        stream.write_all(&out).await?;
    }
}

fn bad(id: u64, message: &str) -> Response {
    bad_kind(id, control::ErrorKind::BadRequest, message)
}

fn bad_kind(id: u64, kind: control::ErrorKind, message: &str) -> Response {
    Response {
        id,
        result: None,
        error: Some(control::Error {
            kind,
            message: message.into(),
        }),
    }
}

fn id_of(line: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    fn caller(uid: u32, gid: u32, groups: Vec<u32>) -> Caller {
        Caller { uid, gid, groups }
    }

    #[test]
    fn rights_follow_the_command_and_the_caller() {
        let access = Access {
            operator_uids: vec![1000],
            operator_gids: vec![4242],
        };
        let member = caller(2000, 2000, vec![999]);
        let status = control::Command::Status;
        let export = control::Command::IdExport { name: "x".into() };
        let register = control::Command::NameRegister {
            name: "n".into(),
            identity: None,
        };
        assert!(access.check(&member, Right::of(&status)).is_ok());
        let connect = control::Command::Connect {
            address: metanet_proto::Target::parse("alice").unwrap(),
            endpoint: None,
            identity: None,
        };
        assert!(access.check(&member, Right::of(&connect)).is_ok());
        let e = access.check(&member, Right::of(&export)).unwrap_err();
        assert_eq!(e.kind, control::ErrorKind::Forbidden);
        assert!(e.message.contains("manage keys"), "{}", e.message);
        let e = access.check(&member, Right::of(&register)).unwrap_err();
        assert!(e.message.contains("spend gas"), "{}", e.message);
        for ok in [
            caller(0, 0, vec![]),
            caller(1000, 1000, vec![]),
            caller(3000, 4242, vec![]),
            caller(3000, 3000, vec![7, 4242]),
        ] {
            assert!(access.check(&ok, Right::of(&export)).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn idle_clients_are_closed_and_extra_clients_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("metanet-ctl-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let path = dir.join("s.sock");
            let listener = bind(&path).unwrap();
            let (tx, mut rx) = mpsc::channel::<Job>(4);
            let limits = Limits {
                max_clients: 2,
                idle: Duration::from_millis(300),
            };
            tokio::spawn(serve(listener, tx, Default::default(), limits));
            tokio::spawn(async move {
                while let Some((_, _, reply)) = rx.recv().await {
                    let _ = reply.send(Ok(control::Reply::Done));
                }
            });
            let a = UnixStream::connect(&path).await.unwrap();
            let _b = UnixStream::connect(&path).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            // A third client over the cap gets one error line, then EOF.
            let c = UnixStream::connect(&path).await.unwrap();
            let mut lines = BufReader::new(c).lines();
            let line = tokio::time::timeout(Duration::from_secs(2), lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(line.contains("too many control clients"), "{line}");
            // An idle client is closed after the idle time.
            let mut a = BufReader::new(a);
            let mut buf = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(2), a.read_until(b'\n', &mut buf))
                .await
                .expect("idle client was not closed")
                .unwrap();
            assert_eq!(n, 0);
            // Its slot is free again: a new client is served.
            tokio::time::sleep(Duration::from_millis(400)).await;
            let d = UnixStream::connect(&path).await.unwrap();
            let (rd, mut wr) = d.into_split();
            wr.write_all(b"{\"id\":7,\"method\":\"status\"}\n")
                .await
                .unwrap();
            let mut lines = BufReader::new(rd).lines();
            let line = tokio::time::timeout(Duration::from_secs(2), lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(line.contains("\"id\":7") && line.contains("done"), "{line}");
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}
