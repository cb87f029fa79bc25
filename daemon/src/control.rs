//! The control socket server: newline-delimited JSON (`proto::control`), each request
//! forwarded to the main loop and answered in order. Lines are bounded; a bad line gets
//! an error response, never a crash.

use std::path::{Path, PathBuf};

use metanet_proto::control::{self, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// A request and where to send its answer.
pub type Job = (
    control::Command,
    oneshot::Sender<Result<control::Reply, control::Error>>,
);

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

/// Accept clients forever, forwarding requests to `jobs`.
pub async fn serve(listener: UnixListener, jobs: mpsc::Sender<Job>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let jobs = jobs.clone();
                tokio::spawn(async move {
                    if let Err(e) = client(stream, jobs).await {
                        tracing::debug!(error = %e, "control client ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "control accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn client(stream: UnixStream, jobs: mpsc::Sender<Job>) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut rd)
            .take(control::MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let response = if line.len() > control::MAX_LINE {
            bad(0, "request line too long")
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Err(e) => bad(id_of(&line), &format!("malformed request: {e}")),
                Ok(req) => {
                    let (tx, rx) = oneshot::channel();
                    if jobs.send((req.command, tx)).await.is_err() {
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
            }
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        wr.write_all(&out).await?;
        if line.len() > control::MAX_LINE {
            return Ok(());
        }
    }
}

fn bad(id: u64, message: &str) -> Response {
    Response {
        id,
        result: None,
        error: Some(control::Error {
            kind: control::ErrorKind::BadRequest,
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
