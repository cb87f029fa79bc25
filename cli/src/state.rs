//! Direct access to metanetd's state directory, for identity commands run while the
//! daemon is not running.
//!
//! Layout (shared with the daemon, docs/cli.md "State directory"):
//!
//! ```text
//! <state-dir>/identities/<name>.key   key file (proto::keyfile), mode 0600
//! <state-dir>/default-identity        optional: the default identity's name
//! ```
//!
//! Key files are written atomically (temporary file in the same directory, created with
//! mode 0600, fsync, rename, fsync of the directory), so a crash leaves either the old
//! file or the new one. A key file readable by group or others is refused, never
//! silently used or fixed. This module only moves bytes and checks modes; the file
//! format is `proto::keyfile`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use metanet_proto::control::IdentityInfo;
use metanet_proto::{identity, keyfile, Identity};
use zeroize::Zeroizing;

/// Where metanetd keeps its state unless told otherwise.
pub(crate) const DEFAULT_DIR: &str = "/var/lib/metanet";
/// Name of the default identity when `default-identity` does not say otherwise.
pub(crate) const DEFAULT_NAME: &str = "default";
/// Longest identity name.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// Largest key file read, in bytes; real ones are under 200.
const MAX_KEY_FILE: u64 = 4096;
const IDENTITIES: &str = "identities";
const DEFAULT_FILE: &str = "default-identity";
const KEY_SUFFIX: &str = ".key";

/// Why a state directory operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("invalid identity name `{0}`: use 1-64 characters from a-z 0-9 - _")]
    BadName(String),
    #[error(
        "no identity `{name}` in {dir}: list them with `metanet id list` or create it \
         with `metanet id new {name}`",
        dir = .dir.display()
    )]
    NotFound { name: String, dir: PathBuf },
    #[error(
        "identity `{name}` exists already ({path}): pick another name, or remove it first \
         with `metanet id rm {name}`",
        path = .path.display()
    )]
    AlreadyExists { name: String, path: PathBuf },
    #[error(
        "key file {path} is readable by group or others (mode {mode:04o}); refusing to use \
         it: run `chmod 600 {path}`, and treat the key as exposed",
        path = .path.display()
    )]
    Insecure { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} is not a regular file (a symbolic link, FIFO or device is never read)",
        path = .path.display()
    )]
    NotAFile { path: PathBuf },
    #[error("key file {path} is malformed: {source}", path = .path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: keyfile::Error,
    },
    #[error(
        "`{name}` is the only identity and metanetd needs one: create another with \
         `metanet id new NAME` first"
    )]
    LastIdentity { name: String },
    #[error(
        "{path} names `{found}`, which is not a valid identity name: write a name from \
         `metanet id list` into it, or remove it to use `default`",
        path = .path.display()
    )]
    BadDefault { path: PathBuf, found: String },
    #[error("cannot {action} {path}: {source}{hint}", path = .path.display(), hint = io_hint(.source))]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A state directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// The state directory at `dir` (not touched until used).
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Store { dir: dir.into() }
    }

    /// The key file of identity `name` (which must be valid).
    pub(crate) fn key_path(&self, name: &str) -> PathBuf {
        self.identities_dir().join(format!("{name}{KEY_SUFFIX}"))
    }

    /// The default identity's name: the content of `default-identity`, else `default`.
    pub(crate) fn default_name(&self) -> Result<String, Error> {
        let path = self.dir.join(DEFAULT_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let name = text.trim();
                validate_name(name).map_err(|_| Error::BadDefault {
                    found: name.into(),
                    path: path.clone(),
                })?;
                Ok(name.into())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DEFAULT_NAME.into()),
            Err(source) => Err(Error::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Names of all identities, sorted. A missing directory holds none.
    pub(crate) fn list(&self) -> Result<Vec<String>, Error> {
        let dir = self.identities_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    action: "list",
                    path: dir,
                    source,
                })
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                action: "list",
                path: dir.clone(),
                source,
            })?;
            // Temporary files and strays are not identities.
            if let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|f| f.strip_suffix(KEY_SUFFIX))
                .filter(|n| validate_name(n).is_ok())
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Load identity `name`, refusing key files readable by group or others.
    pub(crate) fn read(&self, name: &str) -> Result<Identity, Error> {
        validate_name(name)?;
        let path = self.key_path(name);
        let text = match read_secret_file(&path) {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    name: name.into(),
                    dir: self.identities_dir(),
                })
            }
            other => other?,
        };
        keyfile::decode(&text).map_err(|source| Error::Malformed { path, source })
    }

    /// Store a new identity `name`; refuses to replace an existing one.
    pub(crate) fn create(&self, name: &str, identity: &Identity) -> Result<PathBuf, Error> {
        validate_name(name)?;
        let dir = self.identities_dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| Error::Io {
                action: "create",
                path: dir.clone(),
                source,
            })?;
        let path = self.key_path(name);
        if fs::symlink_metadata(&path).is_ok() {
            return Err(Error::AlreadyExists {
                name: name.into(),
                path,
            });
        }
        write_atomic(&path, keyfile::encode(identity).as_bytes()).map_err(|source| Error::Io {
            action: "write",
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Delete identity `name`. The default identity cannot go while it is the only one.
    pub(crate) fn remove(&self, name: &str) -> Result<PathBuf, Error> {
        validate_name(name)?;
        let path = self.key_path(name);
        if fs::symlink_metadata(&path).is_err() {
            return Err(Error::NotFound {
                name: name.into(),
                dir: self.identities_dir(),
            });
        }
        if self.list()? == [name] && self.default_name()? == name {
            return Err(Error::LastIdentity { name: name.into() });
        }
        fs::remove_file(&path).map_err(|source| Error::Io {
            action: "remove",
            path: path.clone(),
            source,
        })?;
        sync_dir(&self.identities_dir()).map_err(|source| Error::Io {
            action: "sync",
            path: self.identities_dir(),
            source,
        })?;
        Ok(path)
    }

    fn identities_dir(&self) -> PathBuf {
        self.dir.join(IDENTITIES)
    }
}

/// Check that `name` can be a file name in the state directory and nothing more.
pub(crate) fn validate_name(name: &str) -> Result<(), Error> {
    // The daemon accepts exactly these names; anything else in `identities/` would stop
    // it from starting.
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.into()))
    }
}

/// The public facts of an identity, as the daemon reports them.
pub(crate) fn identity_info(name: &str, identity: &Identity, default: bool) -> IdentityInfo {
    let address = identity.address();
    IdentityInfo {
        name: name.into(),
        address: address.to_string(),
        ipv6: address.ipv6(),
        public_key: identity::hex(&identity.public_key().to_bytes()),
        default,
        services: Vec::new(),
        endpoints: Vec::new(),
        hidden: false,
        noise_key: Some(identity::hex(&identity.noise().public_key().0)),
    }
}

/// Read a secret file, refusing one that group or others may read.
pub(crate) fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, Error> {
    let io_err = |action, source| Error::Io {
        action,
        path: path.to_owned(),
        source,
    };
    // Never through a symbolic link, and never blocking on a FIFO (only a regular
    // file is read below).
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => Error::NotAFile {
                path: path.to_owned(),
            },
            _ => io_err("open", e),
        })?;
    let meta = file.metadata().map_err(|e| io_err("stat", e))?;
    if !meta.is_file() {
        return Err(Error::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::Insecure {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| io_err("read", e))?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(io_err(
            "read",
            io::Error::new(io::ErrorKind::InvalidData, "file too large for a key file"),
        ));
    }
    Ok(text)
}

/// Replace `path` with `contents` atomically, mode 0600: a reader sees the old file or
/// the new one, never a part, and a crash after return cannot lose the new one.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(io::Error::other)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        u64::from_le_bytes(nonce)
    ));
    let result = (|| {
        // create_new: never follow or reuse something already at the temporary name.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            ": run as root, or pass --state-dir DIR for a directory you own"
        }
        _ => "",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::testutil::TempDir;

    fn identity(seed: u8) -> Identity {
        Identity::generate(&[seed; 64])
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn create_writes_0600_and_reads_back() {
        let tmp = TempDir::new();
        let store = Store::new(tmp.path().join("state"));
        let id = identity(1);
        let path = store.create("default", &id).unwrap();
        assert_eq!(path, tmp.path().join("state/identities/default.key"));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&tmp.path().join("state/identities")), 0o700);
        let back = store.read("default").unwrap();
        assert_eq!(back.address(), id.address());
        assert_eq!(back.noise().secret(), id.noise().secret());
        // No temporary file is left behind.
        let entries: Vec<_> = fs::read_dir(tmp.path().join("state/identities"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["default.key"]);
    }

    #[test]
    fn create_refuses_to_replace() {
        let tmp = TempDir::new();
        let store = Store::new(tmp.path());
        store.create("a", &identity(1)).unwrap();
        let err = store.create("a", &identity(2)).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
        assert_eq!(
            store.read("a").unwrap().address(),
            identity(1).address(),
            "the old key must survive"
        );
    }

    #[test]
    fn atomic_write_replaces_with_0600_even_over_a_looser_file() {
        let tmp = TempDir::new();
        let path = tmp.path().join("secret");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn readable_by_others_is_refused() {
        let tmp = TempDir::new();
        let store = Store::new(tmp.path());
        let path = store.create("a", &identity(1)).unwrap();
        for loose in [0o640, 0o604, 0o644, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(loose)).unwrap();
            let err = store.read("a").unwrap_err();
            assert!(
                matches!(err, Error::Insecure { mode, .. } if mode == loose),
                "{err:?}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(store.read("a").is_ok(), "owner-only read is fine");
    }

    #[test]
    fn symlinks_and_fifos_are_refused_without_blocking() {
        let tmp = TempDir::new();
        let store = Store::new(tmp.path());
        let target = store.create("real", &identity(1)).unwrap();
        let link = store.key_path("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = store.read("link").unwrap_err();
        assert!(matches!(err, Error::NotAFile { .. }), "{err:?}");
        assert!(!err.to_string().contains("wallet"), "{err}");
        let fifo = store.key_path("fifo");
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = store.read("fifo").unwrap_err();
        assert!(matches!(err, Error::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn list_and_remove() {
        let tmp = TempDir::new();
        let store = Store::new(tmp.path());
        assert!(store.list().unwrap().is_empty(), "missing dir holds none");
        store.create("default", &identity(1)).unwrap();
        store.create("b", &identity(2)).unwrap();
        // Strays and temporaries are not identities.
        fs::write(tmp.path().join("identities/.b.key.tmp-1"), "").unwrap();
        fs::write(tmp.path().join("identities/notes.txt"), "").unwrap();
        assert_eq!(store.list().unwrap(), ["b", "default"]);

        store.remove("b").unwrap();
        assert_eq!(store.list().unwrap(), ["default"]);
        assert!(matches!(
            store.remove("b").unwrap_err(),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            store.read("b").unwrap_err(),
            Error::NotFound { .. }
        ));
        // The last identity, being the default, stays.
        assert!(matches!(
            store.remove("default").unwrap_err(),
            Error::LastIdentity { .. }
        ));
    }

    #[test]
    fn default_name_comes_from_file() {
        let tmp = TempDir::new();
        let store = Store::new(tmp.path());
        assert_eq!(store.default_name().unwrap(), "default");
        fs::write(tmp.path().join("default-identity"), "work\n").unwrap();
        assert_eq!(store.default_name().unwrap(), "work");
        fs::write(tmp.path().join("default-identity"), "../etc/passwd\n").unwrap();
        assert!(matches!(
            store.default_name().unwrap_err(),
            Error::BadDefault { .. }
        ));
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for good in ["default", "work-2", "a_b", "0", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn malformed_key_file_names_the_path() {
        let tmp = TempDir::new();
        let store = Store::new(tmp.path());
        let path = store.key_path("x");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_atomic(&path, b"garbage").unwrap();
        let err = store.read("x").unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }));
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn info_matches_identity() {
        let id = identity(3);
        let info = identity_info("x", &id, true);
        assert_eq!(info.address, id.address().to_string());
        assert_eq!(info.ipv6, id.address().ipv6());
        assert_eq!(info.public_key.len(), 64);
        assert!(info
            .public_key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
}
