//! The control socket client: one connection per request, one JSON line each way.
//!
//! A [`Client`] connects to metanetd's Unix socket, writes one [`control::Request`]
//! line, reads one [`control::Response`] line and checks that it echoes the request's
//! id. It never retries and never starts the daemon; when the daemon is missing or the
//! socket is closed to us, the error says what to do next. Everything the daemon can
//! be asked is in `proto::control`; this module adds nothing to that contract.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use metanet_proto::control::{self, Command, IdentityInfo, PeerInfo, Reply, Request};

/// Where metanetd listens unless told otherwise.
pub(crate) const DEFAULT_SOCKET: &str = "/run/metanet/metanetd.sock";

/// How long to wait for the daemon's reply. `connect` may wait for a handshake.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest reply accepted, in bytes. Peer lists can be long, but not unbounded.
pub(crate) const MAX_REPLY: u64 = 16 * 1024 * 1024;

/// Why a request did not get a successful reply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No socket file, or nobody listening on it.
    #[error(
        "metanetd is not running (no socket at {path}): start it with \
         `systemctl start metanetd` or `metanetd --socket {path}`",
        path = .path.display()
    )]
    NotRunning { path: PathBuf },
    /// The socket exists but we may not connect to it.
    #[error(
        "permission denied on {path}: run as root or add yourself to group metanet",
        path = .path.display()
    )]
    PermissionDenied { path: PathBuf },
    /// The daemon did not answer in time.
    #[error(
        "metanetd at {path} did not answer within {secs}s: check `systemctl status metanetd`",
        path = .path.display(),
        secs = .timeout.as_secs()
    )]
    Timeout { path: PathBuf, timeout: Duration },
    /// Any other failure to talk to the socket.
    #[error("talking to metanetd at {path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered something that is not a valid response to our request.
    #[error(
        "metanetd at {path} sent a malformed reply ({why}): is it the same version as \
         this metanet?",
        path = .path.display()
    )]
    Protocol { path: PathBuf, why: String },
    /// The daemon refused the request; its message says why.
    #[error("{0}")]
    Daemon(control::Error),
}

/// A client for one daemon socket.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client for the socket at `path`. Nothing is opened until a request is made.
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        Client {
            path: path.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Use `timeout` for each write and read instead of [`DEFAULT_TIMEOUT`].
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Send `command` and return the daemon's successful reply.
    pub(crate) fn request(&self, command: Command) -> Result<Reply, Error> {
        self.request_with_fds(command, &[])
    }

    /// Send `command` with descriptors attached (`SCM_RIGHTS`: `attach` carries the
    /// namespace's TUN and netlink socket) and return the daemon's successful reply.
    pub(crate) fn request_with_fds(
        &self,
        command: Command,
        fds: &[std::os::fd::RawFd],
    ) -> Result<Reply, Error> {
        let id = next_id();
        let mut stream = self.connect()?;
        let response =
            metanet_attach::exchange(&mut stream, &Request { id, command }, fds, MAX_REPLY)
                .map_err(|e| match e {
                    metanet_attach::ExchangeError::Io(e) => self.io(e),
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
            (None, Some(error)) => Err(Error::Daemon(error)),
            _ => Err(self.protocol("reply must hold exactly one of `result` and `error`".into())),
        }
    }

    /// Daemon status.
    pub(crate) fn status(&self) -> Result<control::Status, Error> {
        match self.request(Command::Status)? {
            Reply::Status(status) => Ok(status),
            other => Err(self.unexpected("status", &other)),
        }
    }

    /// All peers.
    pub(crate) fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        match self.request(Command::Peers)? {
            Reply::Peers { peers } => Ok(peers),
            other => Err(self.unexpected("peers", &other)),
        }
    }

    /// The relay's state, the relays in use, the NAT as seen by others.
    pub(crate) fn relay_status(&self) -> Result<metanet_proto::control::RelayInfo, Error> {
        match self.request(Command::RelayStatus)? {
            Reply::Relay(info) => Ok(info),
            other => Err(self.unexpected("relay_status", &other)),
        }
    }

    /// All local identities.
    pub(crate) fn identities(&self) -> Result<Vec<IdentityInfo>, Error> {
        match self.request(Command::IdList)? {
            Reply::Identities { identities } => Ok(identities),
            other => Err(self.unexpected("id_list", &other)),
        }
    }

    /// Send a command whose answer is one identity (`IdShow`, `IdNew`, `IdImport`).
    pub(crate) fn identity(&self, command: Command) -> Result<IdentityInfo, Error> {
        match self.request(command)? {
            Reply::Identity(info) => Ok(info),
            other => Err(self.unexpected("an identity", &other)),
        }
    }

    /// The wallet secret of identity `name`, as hex.
    pub(crate) fn export(&self, name: &str) -> Result<zeroize::Zeroizing<String>, Error> {
        match self.request(Command::IdExport { name: name.into() })? {
            Reply::Secret { secret_hex, .. } => Ok(zeroize::Zeroizing::new(secret_hex)),
            other => Err(self.unexpected("id_export", &other)),
        }
    }

    /// Send a command whose answer carries nothing (`IdRemove`, `Disconnect`).
    pub(crate) fn done(&self, command: Command) -> Result<(), Error> {
        match self.request(command)? {
            Reply::Done => Ok(()),
            other => Err(self.unexpected("done", &other)),
        }
    }

    /// The verified registry record of an address or overlay IPv6.
    pub(crate) fn record(
        &self,
        target: metanet_proto::Target,
    ) -> Result<control::RecordInfo, Error> {
        match self.request(Command::Resolve { target })? {
            Reply::Record(record) => Ok(record),
            other => Err(self.unexpected("resolve", &other)),
        }
    }

    /// Send a command whose answer is one chain name (`NameShow`, `NameRegister`,
    /// `NameTransfer`).
    pub(crate) fn name(&self, command: Command) -> Result<control::NameInfo, Error> {
        match self.request(command)? {
            Reply::Name(info) => Ok(info),
            other => Err(self.unexpected("a name", &other)),
        }
    }

    /// Registered chain names.
    pub(crate) fn names(&self, mine: bool) -> Result<Vec<control::NameInfo>, Error> {
        match self.request(Command::NameList { mine })? {
            Reply::Names { names } => Ok(names),
            other => Err(self.unexpected("name_list", &other)),
        }
    }

    /// Revoke an identity's key on the chain: (identity, address, block).
    pub(crate) fn revoke(&self, name: Option<String>) -> Result<(String, String, u64), Error> {
        match self.request(Command::IdRevoke { name })? {
            Reply::Revoked {
                identity,
                address,
                block,
            } => Ok((identity, address, block)),
            other => Err(self.unexpected("id_revoke", &other)),
        }
    }

    /// `id rotate --wallet`: answered once the rotation claim is applied.
    pub(crate) fn rotate_wallet(&self, name: Option<String>) -> Result<WalletRotation, Error> {
        match self.request(Command::IdRotate { name, wallet: true })? {
            Reply::WalletRotated {
                identity,
                from,
                address,
                ipv6,
                block,
            } => Ok(WalletRotation {
                identity,
                from,
                address,
                ipv6,
                block,
            }),
            other => Err(self.unexpected("id_rotate", &other)),
        }
    }

    /// Connect to a peer.
    pub(crate) fn connect_peer(&self, command: Command) -> Result<PeerInfo, Error> {
        match self.request(command)? {
            Reply::Connected(peer) => Ok(peer),
            other => Err(self.unexpected("connect", &other)),
        }
    }

    fn connect(&self) -> Result<UnixStream, Error> {
        use std::io::ErrorKind;
        let stream = UnixStream::connect(&self.path).map_err(|e| match e.kind() {
            // A missing file and a stale file nobody listens on mean the same to a user.
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => Error::NotRunning {
                path: self.path.clone(),
            },
            ErrorKind::PermissionDenied => Error::PermissionDenied {
                path: self.path.clone(),
            },
            _ => self.io(e),
        })?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| self.io(e))?;
        Ok(stream)
    }

    fn io(&self, e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Timeout {
                path: self.path.clone(),
                timeout: self.timeout,
            },
            _ => Error::Io {
                path: self.path.clone(),
                source: e,
            },
        }
    }

    fn protocol(&self, why: String) -> Error {
        Error::Protocol {
            path: self.path.clone(),
            why,
        }
    }

    fn unexpected(&self, wanted: &str, got: &Reply) -> Error {
        let got = serde_json::to_value(got)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str().map(str::to_owned)))
            .unwrap_or_else(|| "unknown".into());
        self.protocol(format!("expected a `{wanted}` reply, got `{got}`"))
    }
}

/// A request id unique within this process and unlikely to repeat across processes.
fn next_id() -> u64 {
    static COUNTER: AtomicU32 = AtomicU32::new(1);
    (u64::from(std::process::id()) << 32) | u64::from(COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::thread;

    use metanet_proto::control::Response;

    use super::*;
    use crate::testutil::TempDir;

    /// A fake daemon: accepts one connection, reads one line, answers with whatever
    /// `answer` makes of the request (raw bytes, so malformed replies can be sent).
    fn serve_once(
        dir: &TempDir,
        answer: impl FnOnce(Request) -> Vec<u8> + Send + 'static,
    ) -> (PathBuf, thread::JoinHandle<Request>) {
        let path = dir.path().join("ctl.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.ends_with('\n'), "request must be one line");
            let request: Request = serde_json::from_str(&line).unwrap();
            (&stream).write_all(&answer(request.clone())).unwrap();
            request
        });
        (path, handle)
    }

    fn line(response: &Response) -> Vec<u8> {
        let mut v = serde_json::to_vec(response).unwrap();
        v.push(b'\n');
        v
    }

    #[test]
    fn sends_one_line_and_reads_matching_reply() {
        let dir = TempDir::new();
        let (path, server) = serve_once(&dir, |req| {
            line(&Response {
                id: req.id,
                result: Some(Reply::Peers { peers: vec![] }),
                error: None,
            })
        });
        let peers = Client::new(&path).peers().unwrap();
        assert!(peers.is_empty());
        assert_eq!(server.join().unwrap().command, Command::Peers);
    }

    #[test]
    fn daemon_error_is_passed_through() {
        let dir = TempDir::new();
        let (path, server) = serve_once(&dir, |req| {
            line(&Response {
                id: req.id,
                result: None,
                error: Some(control::Error {
                    kind: control::ErrorKind::NotFound,
                    message: "no identity `x`".into(),
                }),
            })
        });
        let err = Client::new(&path)
            .identity(Command::IdShow {
                name: Some("x".into()),
            })
            .unwrap_err();
        match err {
            Error::Daemon(e) => assert_eq!(e.kind, control::ErrorKind::NotFound),
            other => panic!("unexpected {other:?}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn mismatched_id_is_refused() {
        let dir = TempDir::new();
        let (path, server) = serve_once(&dir, |req| {
            line(&Response {
                id: req.id.wrapping_add(1),
                result: Some(Reply::Done),
                error: None,
            })
        });
        let err = Client::new(&path).request(Command::Status).unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
        assert!(err.to_string().contains("does not match"));
        server.join().unwrap();
    }

    #[test]
    fn malformed_and_truncated_replies_are_refused() {
        for raw in [&b"not json\n"[..], b"{\"id\":1,\"result\":", b""] {
            let dir = TempDir::new();
            let (path, server) = serve_once(&dir, move |_| raw.to_vec());
            let err = Client::new(&path).request(Command::Status).unwrap_err();
            assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
            server.join().unwrap();
        }
    }

    #[test]
    fn wrong_reply_type_is_refused() {
        let dir = TempDir::new();
        let (path, server) = serve_once(&dir, |req| {
            line(&Response {
                id: req.id,
                result: Some(Reply::Done),
                error: None,
            })
        });
        let err = Client::new(&path).status().unwrap_err();
        assert!(err.to_string().contains("got `done`"), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn silent_daemon_times_out() {
        let dir = TempDir::new();
        let path = dir.path().join("ctl.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let err = Client::new(&path)
            .with_timeout(Duration::from_millis(100))
            .request(Command::Status)
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        drop(listener);
    }

    #[test]
    fn missing_or_stale_socket_means_not_running() {
        let dir = TempDir::new();
        let missing = dir.path().join("missing.sock");
        let err = Client::new(&missing).request(Command::Status).unwrap_err();
        assert!(matches!(err, Error::NotRunning { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("systemctl start metanetd"), "{text}");
        assert!(text.contains(&missing.display().to_string()), "{text}");

        // A socket file left behind by a dead daemon: nobody listens.
        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let err = Client::new(&stale).request(Command::Status).unwrap_err();
        assert!(matches!(err, Error::NotRunning { .. }), "{err:?}");
    }

    #[test]
    fn closed_socket_means_permission_denied() {
        use std::os::unix::fs::PermissionsExt;
        if crate::testutil::is_root() {
            eprintln!("skipped: root ignores socket permissions");
            return;
        }
        let dir = TempDir::new();
        let path = dir.path().join("ctl.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        let err = Client::new(&path).request(Command::Status).unwrap_err();
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
        assert!(err.to_string().contains("group metanet"));
    }
}

/// The outcome of `id rotate --wallet`, as `--json` prints it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct WalletRotation {
    pub identity: String,
    pub from: String,
    pub address: String,
    pub ipv6: String,
    pub block: u64,
}
