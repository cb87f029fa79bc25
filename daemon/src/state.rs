//! The state directory: identity key files (`identities/<name>.key`, mode 0600, written
//! atomically) and the name of the default identity. Same layout as the CLI uses
//! (docs/operations.md "State directory").

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use metanet_proto::{keyfile, Identity};

/// Name of the identity created on first start.
pub const DEFAULT_NAME: &str = "default";

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}): run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is invalid: {source}")]
    Key {
        path: PathBuf,
        source: keyfile::Error,
    },
    #[error("key file {0} is a symbolic link: metanetd reads only regular files it owns; replace the link with the file")]
    Symlink(PathBuf),
    #[error("key file {0} is not a regular file (a FIFO, device or directory): move it out of the state directory")]
    NotRegular(PathBuf),
    #[error("key file {0} is larger than a key file can be")]
    TooLarge(PathBuf),
    #[error(
        "key files {0} and {1} hold the same wallet key (the same address): remove one of them"
    )]
    SameWallet(PathBuf, PathBuf),
    #[error("identity name `{0}` is invalid: use 1-64 of a-z, 0-9, '-', '_'")]
    BadName(String),
    #[error("identity `{0}` already exists")]
    Exists(String),
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Open (and create, mode 0700) the state directory.
    pub fn open(root: &Path) -> Result<Self, Error> {
        let ids = root.join("identities");
        fs::create_dir_all(&ids).map_err(|source| Error::Io {
            path: ids.clone(),
            source,
        })?;
        for dir in [root, ids.as_path()] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
                Error::Io {
                    path: dir.into(),
                    source,
                }
            })?;
        }
        Ok(StateDir { root: root.into() })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every identity, `default` first (the host's own), the rest sorted by name;
    /// creates `default` when there is none.
    pub fn load_identities(&self) -> Result<Vec<(String, Identity)>, Error> {
        let dir = self.root.join("identities");
        let rd = fs::read_dir(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".key") {
                names.push(stem.to_owned());
            }
        }
        // `default` first: it stays the default identity whatever the others are called.
        names.sort_by(|a, b| (a != DEFAULT_NAME, a).cmp(&(b != DEFAULT_NAME, b)));
        self.remove_stale_temporaries();
        let mut out: Vec<(String, Identity)> = Vec::new();
        for name in names {
            let id = self.read(&name)?;
            if let Some((other, _)) = out.iter().find(|(_, o)| o.address() == id.address()) {
                return Err(Error::SameWallet(
                    self.key_path(other)?,
                    self.key_path(&name)?,
                ));
            }
            out.push((name, id));
        }
        if out.is_empty() {
            let id = Identity::generate(&random64()?);
            self.write(DEFAULT_NAME, &id, false)?;
            out.push((DEFAULT_NAME.to_owned(), id));
        }
        Ok(out)
    }

    /// Remove the temporary files a crash in [`write_private`] can leave (they may hold
    /// a secret): `.<file>.<pid>.<n>.tmp` in the state and identities directories.
    fn remove_stale_temporaries(&self) {
        for dir in [self.root.clone(), self.root.join("identities")] {
            let Ok(rd) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let path = entry.path();
                    match fs::remove_file(&path) {
                        Ok(()) => {
                            tracing::info!(path = %path.display(), "removed a temporary key file left by a crash")
                        }
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale temporary key file")
                        }
                    }
                }
            }
        }
    }

    /// Read one identity, refusing key files others can read.
    pub fn read(&self, name: &str) -> Result<Identity, Error> {
        let path = self.key_path(name)?;
        let bytes = read_private(&path)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::Key {
            path: path.clone(),
            source: keyfile::Error::Syntax { line: 1 },
        })?;
        keyfile::decode(text).map_err(|source| Error::Key { path, source })
    }

    /// Write an identity atomically with mode 0600 (temp file, fsync, rename, fsync dir).
    pub fn write(&self, name: &str, identity: &Identity, overwrite: bool) -> Result<(), Error> {
        let path = self.key_path(name)?;
        if !overwrite && path.exists() {
            return Err(Error::Exists(name.into()));
        }
        write_private(&path, keyfile::encode(identity).as_bytes())
    }

    /// The DHT node's libp2p key (`dht.key`, protobuf encoding, mode 0600), created on
    /// first use. It is not a wallet key, so the DHT node does not link identities.
    pub fn dht_key(&self) -> Result<libp2p::identity::Keypair, Error> {
        let path = self.root.join("dht.key");
        let bad = |why: String| Error::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
        };
        match read_private(&path) {
            Ok(bytes) => libp2p::identity::Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
                bad(format!(
                    "not a libp2p key ({e}): delete it to make a new one"
                ))
            }),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let seed = random64()?;
                let mut secret = [0u8; 32];
                secret.copy_from_slice(&seed[..32]);
                let key = libp2p::identity::Keypair::ed25519_from_bytes(secret)
                    .map_err(|e| bad(e.to_string()))?;
                let bytes = zeroize::Zeroizing::new(
                    key.to_protobuf_encoding().map_err(|e| bad(e.to_string()))?,
                );
                write_private(&path, &bytes)?;
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }

    /// Delete an identity's key file (and a wallet rotation it had pending).
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        let path = self.key_path(name)?;
        fs::remove_file(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        self.discard_pending(name)
    }

    /// The key a wallet rotation of `name` will move to (`NAME.key.next`, mode 0600):
    /// written before the rotation claim is submitted, so the new key exists on disk
    /// before the chain hands the address to it. Not loaded as an identity.
    fn pending_path(&self, name: &str) -> Result<PathBuf, Error> {
        let mut path = self.key_path(name)?.into_os_string();
        path.push(".next");
        Ok(path.into())
    }

    /// Whether `name` has a pending rotation key.
    pub fn has_pending(&self, name: &str) -> bool {
        self.pending_path(name)
            .is_ok_and(|p| fs::symlink_metadata(p).is_ok())
    }

    /// The names of the identities with a pending rotation key (`NAME.key.next`).
    pub fn pending_names(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(self.root.join("identities")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".key.next").map(str::to_owned)
            })
            .collect()
    }

    /// The pending rotation key of `name`, if one was written.
    pub fn read_pending(&self, name: &str) -> Result<Option<Identity>, Error> {
        let path = self.pending_path(name)?;
        if fs::symlink_metadata(&path).is_err() {
            return Ok(None);
        }
        let bytes = read_private(&path)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::Key {
            path: path.clone(),
            source: keyfile::Error::Syntax { line: 1 },
        })?;
        keyfile::decode(text)
            .map(Some)
            .map_err(|source| Error::Key { path, source })
    }

    /// Write the pending rotation key of `name` atomically (mode 0600).
    pub fn write_pending(&self, name: &str, identity: &Identity) -> Result<(), Error> {
        let path = self.pending_path(name)?;
        write_private(&path, keyfile::encode(identity).as_bytes())
    }

    /// The chain applied the rotation: the pending key becomes `name`'s key (one rename,
    /// so a crash leaves the old key or the new one).
    pub fn adopt_pending(&self, name: &str) -> Result<(), Error> {
        let (from, to) = (self.pending_path(name)?, self.key_path(name)?);
        fs::rename(&from, &to).map_err(|source| Error::Io {
            path: from.clone(),
            source,
        })?;
        let dir = to.parent().unwrap_or(Path::new("."));
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| Error::Io {
                path: dir.into(),
                source,
            })
    }

    /// Forget a pending rotation key (the chain refused it, or the identity is gone).
    pub fn discard_pending(&self, name: &str) -> Result<(), Error> {
        let path = self.pending_path(name)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    fn key_path(&self, name: &str) -> Result<PathBuf, Error> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(Error::BadName(name.into()));
        }
        Ok(self.root.join("identities").join(format!("{name}.key")))
    }
}

/// Longest key file read, in bytes (a key file is about 200).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Read a secret file: never through a symbolic link (`O_NOFOLLOW`), never blocking on a
/// FIFO (`O_NONBLOCK`, then only a regular file is read), never one that group or others
/// can read, and never more than `MAX_KEY_FILE` (64 KiB) bytes.
pub fn read_private(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    read_private_max(path, MAX_KEY_FILE)
}

/// [`read_private`] of a file of at most `max` bytes (group key states grow with the
/// group).
pub fn read_private_max(path: &Path, max: u64) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::Symlink(path.into()),
            _ => io(e),
        })?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(Error::NotRegular(path.into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Permissions {
            path: path.into(),
            mode,
        });
    }
    if meta.len() > max {
        return Err(Error::TooLarge(path.into()));
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(Error::TooLarge(path.into()));
    }
    Ok(bytes)
}

/// Write `bytes` to `path` atomically with mode 0600: a uniquely named temp file in the
/// same directory, fsync, rename over `path`, fsync the directory. A crash leaves either
/// the old file or the new one, never a torn one.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let io = |source, p: &Path| Error::Io {
        path: p.into(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file = path.file_name().unwrap_or_default().to_string_lossy();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{file}.{}.{n}.tmp", std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(e, &tmp));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io(e, path)
    })?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(e, dir))
}

/// 64 bytes from the OS for a new identity.
pub fn random64() -> Result<[u8; 64], Error> {
    let mut b = [0u8; 64];
    getrandom::fill(&mut b).map_err(|e| Error::Io {
        path: "getrandom".into(),
        source: std::io::Error::other(e),
    })?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("metanet-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn first_start_creates_default_and_restart_keeps_it() {
        let root = tmpdir("default");
        let s = StateDir::open(&root).unwrap();
        let first = s.load_identities().unwrap();
        assert_eq!(first[0].0, DEFAULT_NAME);
        let mode = fs::metadata(root.join("identities/default.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = StateDir::open(&root).unwrap().load_identities().unwrap();
        assert_eq!(again[0].1.address(), first[0].1.address());
        // Identities named before "default" do not take its place after a restart.
        s.write("c1", &Identity::generate(&[7; 64]), false).unwrap();
        let names: Vec<String> = s
            .load_identities()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["default", "c1"]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn readable_key_file_is_refused() {
        let root = tmpdir("perm");
        let s = StateDir::open(&root).unwrap();
        s.load_identities().unwrap();
        let key = root.join("identities/default.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            s.read(DEFAULT_NAME),
            Err(Error::Permissions { .. })
        ));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn symlinked_fifo_and_oversized_key_files_are_refused_without_echo() {
        let root = tmpdir("kinds");
        let s = StateDir::open(&root).unwrap();
        s.load_identities().unwrap();
        let ids = root.join("identities");
        // A symlink to a secret elsewhere: refused, and its target's text is not shown.
        let secret = root.join("secret.txt");
        fs::write(&secret, "password = \"hunter2\"\n").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&secret, ids.join("link.key")).unwrap();
        let e = s.read("link").unwrap_err();
        assert!(matches!(e, Error::Symlink(_)), "{e}");
        assert!(!e.to_string().contains("hunter2") && !e.to_string().contains("password"));
        fs::remove_file(ids.join("link.key")).unwrap();
        // A key file with a foreign key: the key's text is not echoed either.
        fs::write(ids.join("odd.key"), "password = \"hunter2\"\n").unwrap();
        fs::set_permissions(ids.join("odd.key"), fs::Permissions::from_mode(0o600)).unwrap();
        let e = s.read("odd").unwrap_err().to_string();
        assert!(!e.contains("hunter2") && !e.contains("password"), "{e}");
        fs::remove_file(ids.join("odd.key")).unwrap();
        // A FIFO: refused at once instead of blocking start-up.
        let fifo = ids.join("fifo.key");
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = s.clone();
        std::thread::spawn(move || tx.send(s2.load_identities().map(|_| ())).unwrap());
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("loading identities blocked on a FIFO");
        assert!(matches!(got, Err(Error::NotRegular(_))), "{got:?}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn stale_temporaries_are_removed_and_duplicate_wallets_named() {
        let root = tmpdir("stale");
        let s = StateDir::open(&root).unwrap();
        let first = s.load_identities().unwrap();
        let tmp = root.join("identities/.default.key.999.0.tmp");
        fs::write(&tmp, "secret").unwrap();
        s.load_identities().unwrap();
        assert!(
            !tmp.exists(),
            "a stale temporary key file survived start-up"
        );
        // Same wallet under two names.
        s.write("copy", &first[0].1, false).unwrap();
        let e = s.load_identities().unwrap_err();
        assert!(matches!(e, Error::SameWallet(..)), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("default.key") && text.contains("copy.key"),
            "{text}"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn dht_key_is_private_and_kept() {
        let root = tmpdir("dht");
        let s = StateDir::open(&root).unwrap();
        let a = s.dht_key().unwrap();
        let mode = fs::metadata(root.join("dht.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(s.dht_key().unwrap().public(), a.public());
        fs::write(root.join("dht.key"), b"garbage").unwrap();
        assert!(s.dht_key().is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
