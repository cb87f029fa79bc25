//! The operations: `ADD`, `DEL`, `CHECK`, `GC`, `STATUS`, `VERSION`, each over the
//! parsed environment and stdin (so the tests run them against a fake daemon).
//!
//! The daemon is atomic: an `Attach` that fails leaves nothing behind, so nothing here
//! undoes anything; the namespace's descriptors close when they go out of scope.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use metanet_proto::control::{AttachmentInfo, Command, ErrorKind};

use crate::daemon::{Daemon, DaemonError};
use crate::inspect;
use crate::spec::{self, code, CniResult, Config, Error, Ours};

/// The `CNI_*` variables that matter (`CNI_PATH` does not: no plugin is called).
#[derive(Clone, Debug, Default)]
pub(crate) struct Env {
    pub(crate) command: Option<String>,
    pub(crate) container_id: Option<String>,
    pub(crate) netns: Option<String>,
    pub(crate) ifname: Option<String>,
    pub(crate) args: Option<String>,
}

impl Env {
    /// Read them from the process environment (code 4 for one that is not UTF-8).
    pub(crate) fn from_process() -> Result<Env, Error> {
        let var = |name: &str| match std::env::var(name) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::new(
                code::INVALID_ENV,
                format!("{name} is not valid UTF-8"),
            )),
        };
        Ok(Env {
            command: var("CNI_COMMAND")?,
            container_id: var("CNI_CONTAINERID")?,
            netns: var("CNI_NETNS")?,
            ifname: var("CNI_IFNAME")?,
            args: var("CNI_ARGS")?,
        })
    }

    fn required<'a>(name: &str, value: &'a Option<String>) -> Result<&'a str, Error> {
        match value.as_deref() {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(Error::new(code::INVALID_ENV, format!("{name} is not set"))),
        }
    }

    fn container_id(&self) -> Result<&str, Error> {
        let id = Self::required("CNI_CONTAINERID", &self.container_id)?;
        if !spec::valid_container_id(id) {
            return Err(Error::new(
                code::INVALID_ENV,
                format!("CNI_CONTAINERID {id:?} is not a container id"),
            ));
        }
        Ok(id)
    }

    fn netns(&self) -> Result<&str, Error> {
        let netns = Self::required("CNI_NETNS", &self.netns)?;
        if !metanet_attach::valid_netns(netns) {
            return Err(Error::new(
                code::INVALID_ENV,
                format!("CNI_NETNS {netns:?} is not a namespace path"),
            ));
        }
        Ok(netns)
    }

    fn ifname(&self) -> Result<&str, Error> {
        let name = Self::required("CNI_IFNAME", &self.ifname)?;
        // The kernel's rules (dev_valid_name): at most 15 bytes, no `/`, `:` or space.
        let valid = name.len() <= 15
            && name != "."
            && name != ".."
            && !name
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control());
        if !valid {
            return Err(Error::new(
                code::INVALID_ENV,
                format!("CNI_IFNAME {name:?} is not an interface name"),
            ));
        }
        Ok(name)
    }

    fn cni_args(&self) -> Result<Vec<(String, String)>, Error> {
        spec::parse_cni_args(self.args.as_deref().unwrap_or(""))
    }
}

/// Run the operation `env` names on the configuration in `stdin`: what to print on
/// success (nothing for all but `ADD` and `VERSION`), or the error.
pub(crate) fn run(env: &Env, stdin: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let command = env.command.as_deref().unwrap_or_default();
    if command == "VERSION" {
        return Ok(Some(spec::version_info()));
    }
    if !matches!(command, "ADD" | "DEL" | "CHECK" | "GC" | "STATUS") {
        return Err(Error::new(
            code::INVALID_ENV,
            format!("CNI_COMMAND {command:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"),
        ));
    }
    let config = Config::parse(stdin)?;
    let daemon = Daemon::new(&config.socket, Duration::from_secs(config.timeout));
    match command {
        "ADD" => add(env, &config, &daemon).map(Some),
        "DEL" => del(env, &config, &daemon).map(|()| None),
        "CHECK" => check(env, &config, &daemon).map(|()| None),
        "GC" => gc(&config, &daemon).map(|()| None),
        _ => status(&config, &daemon).map(|()| None),
    }
}

/// Whether `a` was made for container `id` on network `network`.
fn is_for(a: &AttachmentInfo, id: &str, network: &str) -> bool {
    a.container_id.as_deref() == Some(id) && a.network.as_deref() == Some(network)
}

/// Longest interface name the kernel takes, in bytes.
const MAX_IFNAME: usize = 15;

/// The interface made for the runtime's `CNI_IFNAME`: that name, unless an earlier
/// plugin of the chain already made it inside the container (every plugin of a chain
/// is handed the same `CNI_IFNAME`, and `bridge` makes it a veth): then
/// [`chained_interface`].
fn our_interface(ifname: &str, prev: Option<&CniResult>) -> String {
    let taken = prev.is_some_and(|p| {
        p.interfaces
            .iter()
            .any(|i| i.name == ifname && i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
    });
    if taken {
        chained_interface(ifname)
    } else {
        ifname.to_owned()
    }
}

/// Our interface beside the runtime's `ifname` made by an earlier plugin: `mn-` and
/// the name, cut to [`MAX_IFNAME`] bytes.
fn chained_interface(ifname: &str) -> String {
    let mut name = format!("mn-{ifname}");
    while name.len() > MAX_IFNAME {
        name.pop();
    }
    name
}

/// Whether `a` is the interface made for the runtime's `ifname`, alone or chained
/// (`CHECK` and `GC` get no result of the previous plugins to tell which).
fn is_for_interface(a: &AttachmentInfo, ifname: &str) -> bool {
    a.interface == ifname || a.interface == chained_interface(ifname)
}

/// Whether two namespace paths name one namespace.
fn same_namespace(a: &str, b: &Path) -> bool {
    Path::new(a) == b
        || matches!(
            (metanet_attach::namespace_id(Path::new(a)), metanet_attach::namespace_id(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

fn add(env: &Env, config: &Config, daemon: &Daemon) -> Result<Vec<u8>, Error> {
    let id = env.container_id()?;
    let netns = env.netns()?;
    let ifname = env.ifname()?;
    let identity = config.identity(&env.cni_args()?, id)?;
    let prev = config.prev_result()?;
    let interface = our_interface(ifname, prev.as_ref());
    let path = metanet_attach::resolve(netns);
    let network = config.name.as_str();

    let attachments = daemon.attachments().map_err(daemon_error)?;
    if let Some(a) = attachments
        .iter()
        .find(|a| is_for(a, id, network) && a.interface == interface)
    {
        if a.state == "up" && a.identity == identity.name && same_namespace(&a.netns, &path) {
            // ADD again: the same answer.
            return Ok(result(config, prev, netns, a));
        }
        // Lost, broken, another namespace or another identity: attach afresh.
        daemon
            .done(Command::Detach {
                identity: None,
                container_id: Some(id.to_owned()),
                network: Some(network.to_owned()),
                remove_identity: a.identity != identity.name
                    && a.identity == spec::derive_identity(id),
            })
            .map_err(daemon_error)?;
    }

    let descriptors = metanet_attach::open_in(&path).map_err(namespace_error)?;
    let info = daemon
        .attach(
            Command::Attach {
                netns: path.to_string_lossy().into_owned(),
                identity: identity.name,
                interface: Some(interface),
                container_id: Some(id.to_owned()),
                network: Some(network.to_owned()),
                ephemeral: identity.derived,
            },
            &descriptors.raw(),
        )
        .map_err(daemon_error)?;
    Ok(result(config, prev, netns, &info))
}

fn result(config: &Config, prev: Option<CniResult>, netns: &str, a: &AttachmentInfo) -> Vec<u8> {
    let ours = Ours {
        interface: &a.interface,
        sandbox: netns,
        ipv6: a.ipv6,
        mtu: a.mtu,
        nameserver: a.dns.map(|d| d.ip()),
    };
    CniResult::merged(&config.cni_version, prev, &ours).to_json()
}

fn del(env: &Env, config: &Config, daemon: &Daemon) -> Result<(), Error> {
    let id = env.container_id()?;
    let network = config.name.as_str();
    // An override ADD would have refused was never attached: not derived either way.
    let derived = env
        .cni_args()
        .and_then(|args| config.identity(&args, id))
        .is_ok_and(|i| i.derived);
    let note = |e: &DaemonError| {
        eprintln!(
            "metanet-cni: DEL {id}: {e}; nothing detached (metanetd drops attachments whose \
             namespace is gone on its own)"
        );
    };
    let attachments = match daemon.attachments() {
        Ok(list) => list,
        Err(e @ DaemonError::NotRunning { .. }) => {
            note(&e);
            return Ok(());
        }
        Err(e) => return Err(daemon_error(e)),
    };
    // The identity goes with the container only when it is the container's own: by
    // this configuration and by the name the daemon holds (a DEL missing the CNI_ARGS
    // its ADD had must not delete a named identity's key).
    let own = spec::derive_identity(id);
    let remove_identity = derived
        && attachments
            .iter()
            .filter(|a| is_for(a, id, network))
            .all(|a| a.identity == own);
    match daemon.done(Command::Detach {
        identity: None,
        container_id: Some(id.to_owned()),
        network: Some(network.to_owned()),
        remove_identity,
    }) {
        Ok(()) => Ok(()),
        Err(e @ DaemonError::NotRunning { .. }) => {
            note(&e);
            Ok(())
        }
        Err(DaemonError::Refused(e)) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(daemon_error(e)),
    }
}

fn check(env: &Env, config: &Config, daemon: &Daemon) -> Result<(), Error> {
    let id = env.container_id()?;
    let netns = env.netns()?;
    let ifname = env.ifname()?;
    let network = config.name.as_str();
    let Some(prev) = config.prev_result()? else {
        return Err(Error::new(
            code::INVALID_CONFIG,
            "CHECK without prevResult (the runtime passes the result of ADD)",
        ));
    };
    let attachments = daemon.attachments().map_err(daemon_error)?;
    let Some(a) = attachments
        .iter()
        .find(|a| is_for(a, id, network) && is_for_interface(a, ifname))
    else {
        return Err(Error::new(
            code::UNKNOWN_CONTAINER,
            format!("no metanet attachment for container {id} on network {network} ({ifname})"),
        ));
    };
    let broken = |why: String| Error::new(code::BROKEN, format!("attachment broken: {why}"));
    if a.state != "up" {
        return Err(broken(format!(
            "metanetd reports it `{}` (DEL and ADD it again)",
            a.state
        )));
    }
    if !prev.has_address(a.ipv6) {
        return Err(broken(format!(
            "the result of ADD does not hold {}/128, the address of identity {}",
            a.ipv6, a.identity
        )));
    }
    let path = metanet_attach::resolve(netns);
    if !same_namespace(&a.netns, &path) {
        return Err(broken(format!(
            "metanetd attached the namespace {}, not {netns}",
            a.netns
        )));
    }
    metanet_attach::in_namespace(&path, || inspect::check_here(&a.interface, a.ipv6))
        .map_err(namespace_error)?
        .map_err(broken)
}

fn gc(config: &Config, daemon: &Daemon) -> Result<(), Error> {
    needs_1_1(config, "GC")?;
    let valid = config.valid_attachments()?;
    let network = config.name.as_str();
    let attachments = daemon.attachments().map_err(daemon_error)?;
    // Detach names a container, not one interface of it: a container with any valid
    // attachment on this network stays whole.
    let mut stale: BTreeMap<&str, bool> = BTreeMap::new();
    let mut in_use: Vec<&str> = Vec::new();
    for a in &attachments {
        let Some(id) = a.container_id.as_deref() else {
            continue;
        };
        if a.network.as_deref() != Some(network) {
            continue;
        }
        if valid
            .iter()
            .any(|v| v.container_id == id && is_for_interface(a, &v.ifname))
        {
            in_use.push(id);
        } else {
            let own = a.identity == spec::derive_identity(id);
            stale.entry(id).and_modify(|r| *r &= own).or_insert(own);
        }
    }
    let mut failed: Vec<DaemonError> = Vec::new();
    for (id, remove_identity) in stale {
        if in_use.contains(&id) {
            eprintln!(
                "metanet-cni: GC: container {id} has an unlisted interface on {network} \
                 besides a listed one; left attached"
            );
            continue;
        }
        if let Err(e) = daemon.done(Command::Detach {
            identity: None,
            container_id: Some(id.to_owned()),
            network: Some(network.to_owned()),
            remove_identity,
        }) {
            eprintln!("metanet-cni: GC: detaching container {id}: {e}");
            failed.push(e);
        }
    }
    let count = failed.len();
    match failed.into_iter().next() {
        None => Ok(()),
        Some(first) => {
            let e = daemon_error(first);
            let details = format!("{count} stale attachment(s) could not be detached");
            Err(e.details(details))
        }
    }
}

fn status(config: &Config, daemon: &Daemon) -> Result<(), Error> {
    needs_1_1(config, "STATUS")?;
    daemon.status().map(drop).map_err(|e| {
        let why = match e {
            DaemonError::NotRunning { why, .. } | DaemonError::Failed { why, .. } => why,
            DaemonError::Protocol { why, .. } => format!("malformed reply: {why}"),
            DaemonError::Refused(e) => e.message,
        };
        Error::new(
            code::UNAVAILABLE,
            format!("metanetd unreachable at {}: {why}", daemon.path().display()),
        )
    })
}

fn needs_1_1(config: &Config, op: &str) -> Result<(), Error> {
    if config.cni_version == "1.0.0" {
        return Err(Error::new(
            code::INCOMPATIBLE_VERSION,
            format!("{op} is a CNI 1.1.0 operation; the configuration says cniVersion 1.0.0"),
        ));
    }
    Ok(())
}

/// A daemon failure as a CNI error: 11 when it could not be reached (try again), 5
/// when it refused (its message) or answered nonsense.
fn daemon_error(e: DaemonError) -> Error {
    match e {
        DaemonError::Refused(e) => {
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            Error::new(code::IO, e.message).details(format!("metanetd refused: {kind}"))
        }
        e @ DaemonError::Protocol { .. } => Error::new(code::IO, e.to_string()),
        e @ (DaemonError::NotRunning { .. } | DaemonError::Failed { .. }) => {
            Error::new(code::TRY_AGAIN, e.to_string())
        }
    }
}

/// A namespace that cannot be entered or used: 3 when it is gone (the container with
/// it), 4 when `CNI_NETNS` is no namespace, 5 otherwise.
fn namespace_error(e: metanet_attach::Error) -> Error {
    let code = match e {
        metanet_attach::Error::NotFound(_) => code::UNKNOWN_CONTAINER,
        metanet_attach::Error::NotNamespace(_) => code::INVALID_ENV,
        metanet_attach::Error::Permission(_) | metanet_attach::Error::Open { .. } => code::IO,
    };
    Error::new(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use metanet_proto::control::{self, Reply, Request, Response};
    use serde_json::Value;

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "metanet-cni-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    type Handler = dyn Fn(&Command) -> Result<Reply, control::Error> + Send;

    /// A fake metanetd: answers each request line with `handler`'s reply and records
    /// the commands; [`Fake::finish`] stops it.
    struct Fake {
        socket: PathBuf,
        seen: Arc<Mutex<Vec<Command>>>,
        thread: std::thread::JoinHandle<()>,
        _dir: TempDir,
    }

    impl Fake {
        fn new(
            handler: impl Fn(&Command) -> Result<Reply, control::Error> + Send + 'static,
        ) -> Fake {
            let dir = TempDir::new();
            let socket = dir.0.join("ctl.sock");
            let listener = UnixListener::bind(&socket).unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            let handler: Box<Handler> = Box::new(handler);
            let thread = std::thread::spawn(move || loop {
                let (stream, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).unwrap();
                if line.is_empty() {
                    return;
                }
                let request: Request = serde_json::from_str(&line).unwrap();
                log.lock().unwrap().push(request.command.clone());
                let (result, error) = match handler(&request.command) {
                    Ok(reply) => (Some(reply), None),
                    Err(e) => (None, Some(e)),
                };
                let mut out = serde_json::to_vec(&Response {
                    id: request.id,
                    result,
                    error,
                })
                .unwrap();
                out.push(b'\n');
                (&stream).write_all(&out).unwrap();
            });
            Fake {
                socket,
                seen,
                thread,
                _dir: dir,
            }
        }

        fn finish(self) -> Vec<Command> {
            drop(UnixStream::connect(&self.socket).unwrap());
            self.thread.join().unwrap();
            let seen = self.seen.lock().unwrap().clone();
            seen
        }
    }

    fn conf(version: &str, socket: &Path, extra: &str) -> Vec<u8> {
        format!(
            r#"{{"cniVersion":"{version}","name":"metanet","type":"metanet-cni","socket":"{}","timeout":2{extra}}}"#,
            socket.display()
        )
        .into_bytes()
    }

    fn env(command: &str) -> Env {
        Env {
            command: Some(command.into()),
            container_id: Some("ABC123".into()),
            netns: Some("/proc/self/ns/net".into()),
            ifname: Some("metanet0".into()),
            args: None,
        }
    }

    fn attachment(id: &str, ifname: &str, identity: &str, state: &str) -> AttachmentInfo {
        AttachmentInfo {
            identity: identity.into(),
            address: "mn1xyz".into(),
            ipv6: "fd12:3456::1".parse().unwrap(),
            netns: "/proc/self/ns/net".into(),
            interface: ifname.into(),
            mtu: 1376,
            state: state.into(),
            container_id: Some(id.into()),
            network: Some("metanet".into()),
            dns: Some("[fd12:3456::53]:53".parse().unwrap()),
            tx_packets: 0,
            rx_packets: 0,
            spoofed: 0,
        }
    }

    fn list(attachments: Vec<AttachmentInfo>) -> Result<Reply, control::Error> {
        Ok(Reply::Attachments { attachments })
    }

    fn refused(kind: control::ErrorKind, message: &str) -> control::Error {
        control::Error {
            kind,
            message: message.into(),
        }
    }

    fn missing_socket() -> PathBuf {
        std::env::temp_dir().join("metanet-cni-test-no-such.sock")
    }

    #[test]
    fn version_needs_nothing() {
        let out = run(
            &Env {
                command: Some("VERSION".into()),
                ..Env::default()
            },
            b"",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out.unwrap()).unwrap();
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["1.0.0", "1.1.0"])
        );
    }

    #[test]
    fn unknown_command_and_missing_variables_are_code_4() {
        let config = conf("1.0.0", &missing_socket(), "");
        assert_eq!(
            run(&env("FROB"), &config).unwrap_err().code,
            code::INVALID_ENV
        );
        for (var, e) in [
            (
                "CNI_CONTAINERID",
                Env {
                    container_id: None,
                    ..env("ADD")
                },
            ),
            (
                "CNI_NETNS",
                Env {
                    netns: Some(String::new()),
                    ..env("ADD")
                },
            ),
            (
                "CNI_IFNAME",
                Env {
                    ifname: None,
                    ..env("ADD")
                },
            ),
        ] {
            let err = run(&e, &config).unwrap_err();
            assert_eq!(err.code, code::INVALID_ENV);
            assert!(err.msg.contains(var), "{}", err.msg);
        }
        let e = Env {
            ifname: Some("a/b".into()),
            ..env("ADD")
        };
        assert_eq!(run(&e, &config).unwrap_err().code, code::INVALID_ENV);
        let e = Env {
            args: Some("junk".into()),
            ..env("ADD")
        };
        assert_eq!(run(&e, &config).unwrap_err().code, code::INVALID_ENV);
        // The configuration comes first for all but VERSION.
        assert_eq!(run(&env("ADD"), b"{").unwrap_err().code, code::DECODE);
    }

    #[test]
    fn add_again_returns_the_existing_attachment() {
        let fake = Fake::new(|c| match c {
            Command::Attachments => list(vec![
                attachment("OTHER", "metanet0", "c-other", "up"),
                attachment("ABC123", "metanet0", "c-abc123", "up"),
            ]),
            _ => Err(refused(control::ErrorKind::BadRequest, "unexpected")),
        });
        let out = run(&env("ADD"), &conf("1.0.0", &fake.socket, ""))
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "metanet0", "mac": "00:00:00:00:00:00", "sandbox": "/proc/self/ns/net"}],
                "ips": [{"address": "fd12:3456::1/128", "interface": 0}],
                "routes": [{"dst": "fd00::/8"}],
                "dns": {"nameservers": ["fd12:3456::53"], "search": ["meta"]}
            })
        );
        assert_eq!(fake.finish(), vec![Command::Attachments]);
    }

    /// Whether this process may open `/dev/net/tun` (ADD opens it in the namespace).
    fn can_open_tun() -> bool {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .is_ok()
    }

    #[test]
    fn add_attaches_and_merges_into_the_previous_result() {
        if !can_open_tun() {
            eprintln!("skipped: cannot open /dev/net/tun");
            return;
        }
        let fake = Fake::new(|c| match c {
            Command::Attachments => list(vec![attachment("ABC123", "metanet0", "web", "lost")]),
            Command::Detach { .. } => Ok(Reply::Done),
            Command::Attach { identity, .. } => Ok(Reply::Attachment(attachment(
                "ABC123", "metanet0", identity, "up",
            ))),
            _ => Err(refused(control::ErrorKind::BadRequest, "unexpected")),
        });
        let prev = r#","prevResult":{"cniVersion":"1.1.0",
            "interfaces":[{"name":"eth0","sandbox":"/proc/self/ns/net"}],
            "ips":[{"address":"198.18.210.5/24","interface":0}]}"#;
        let e = Env {
            args: Some("IgnoreUnknown=1;METANET_IDENTITY=web".into()),
            ..env("ADD")
        };
        let out = run(&e, &conf("1.1.0", &fake.socket, prev))
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["interfaces"][1]["name"], "metanet0");
        assert_eq!(v["interfaces"][1]["mtu"], 1376);
        assert_eq!(
            v["ips"][1],
            serde_json::json!({"address":"fd12:3456::1/128","interface":1})
        );
        assert_eq!(v["ips"][0]["address"], "198.18.210.5/24");
        let seen = fake.finish();
        assert_eq!(seen.len(), 3, "{seen:?}");
        // The lost attachment is dropped first; `web` was not derived, so it stays.
        assert_eq!(
            seen[1],
            Command::Detach {
                identity: None,
                container_id: Some("ABC123".into()),
                network: Some("metanet".into()),
                remove_identity: false,
            }
        );
        assert_eq!(
            seen[2],
            Command::Attach {
                netns: "/proc/self/ns/net".into(),
                identity: "web".into(),
                interface: Some("metanet0".into()),
                container_id: Some("ABC123".into()),
                network: Some("metanet".into()),
                ephemeral: false,
            }
        );
    }

    #[test]
    fn chained_after_a_plugin_that_made_the_interface_ours_is_beside_it() {
        let prev = |name: &str, sandbox: Option<&str>| CniResult {
            interfaces: vec![spec::Interface {
                name: name.into(),
                sandbox: sandbox.map(str::to_owned),
                ..Default::default()
            }],
            ..Default::default()
        };
        // Alone, or after a plugin that made another interface: the runtime's name.
        assert_eq!(our_interface("eth0", None), "eth0");
        assert_eq!(
            our_interface("eth0", Some(&prev("eth1", Some("/run/netns/x")))),
            "eth0"
        );
        // A host-side interface of that name does not count.
        assert_eq!(our_interface("eth0", Some(&prev("eth0", None))), "eth0");
        assert_eq!(our_interface("eth0", Some(&prev("eth0", Some("")))), "eth0");
        // After `bridge`, which made eth0 in the container.
        assert_eq!(
            our_interface("eth0", Some(&prev("eth0", Some("/run/netns/x")))),
            "mn-eth0"
        );
        assert_eq!(chained_interface("abcdefghijklmno"), "mn-abcdefghijkl");
        let a = attachment("ABC123", "mn-eth0", "c-abc123", "up");
        assert!(is_for_interface(&a, "eth0") && is_for_interface(&a, "mn-eth0"));
        assert!(!is_for_interface(&a, "eth1"));
    }

    #[test]
    fn add_maps_daemon_failures() {
        let err = run(&env("ADD"), &conf("1.0.0", &missing_socket(), "")).unwrap_err();
        assert_eq!(err.code, code::TRY_AGAIN);
        assert!(err.msg.contains("metanetd unreachable"), "{}", err.msg);

        let fake = Fake::new(|_| Err(refused(control::ErrorKind::Internal, "disk full")));
        let err = run(&env("ADD"), &conf("1.0.0", &fake.socket, "")).unwrap_err();
        assert_eq!((err.code, err.msg.as_str()), (code::IO, "disk full"));
        assert_eq!(err.details, "metanetd refused: internal");
        fake.finish();

        // A namespace that is gone: the container with it.
        let fake = Fake::new(|_| list(vec![]));
        let e = Env {
            netns: Some("/run/netns/metanet-cni-test-none".into()),
            ..env("ADD")
        };
        let err = run(&e, &conf("1.0.0", &fake.socket, "")).unwrap_err();
        assert_eq!(err.code, code::UNKNOWN_CONTAINER);
        assert_eq!(fake.finish(), vec![Command::Attachments]);
    }

    #[test]
    fn del_is_idempotent_and_removes_only_derived_identities() {
        // No daemon: still success.
        assert_eq!(
            run(&env("DEL"), &conf("1.0.0", &missing_socket(), "")),
            Ok(None)
        );
        // Nor netns nor ifname needed.
        let e = Env {
            netns: None,
            ifname: None,
            ..env("DEL")
        };
        assert_eq!(run(&e, &conf("1.0.0", &missing_socket(), "")), Ok(None));

        let detach = |remove_identity| Command::Detach {
            identity: None,
            container_id: Some("ABC123".into()),
            network: Some("metanet".into()),
            remove_identity,
        };
        let daemon_with = |identity: &'static str| {
            Fake::new(move |c| match c {
                Command::Attachments => {
                    list(vec![attachment("ABC123", "metanet0", identity, "up")])
                }
                _ => Ok(Reply::Done),
            })
        };
        let fake = daemon_with("c-abc123");
        assert_eq!(run(&env("DEL"), &conf("1.0.0", &fake.socket, "")), Ok(None));
        assert_eq!(fake.finish(), vec![Command::Attachments, detach(true)]);

        let fake = daemon_with("web");
        let e = Env {
            args: Some("METANET_IDENTITY=web".into()),
            ..env("DEL")
        };
        assert_eq!(run(&e, &conf("1.0.0", &fake.socket, "")), Ok(None));
        assert_eq!(fake.finish()[1], detach(false));

        // A DEL without the CNI_ARGS its ADD had: the daemon's name decides.
        let fake = daemon_with("web");
        assert_eq!(run(&env("DEL"), &conf("1.0.0", &fake.socket, "")), Ok(None));
        assert_eq!(fake.finish()[1], detach(false));

        // Nothing attached: still a Detach (harmless), still success.
        let fake = Fake::new(|c| match c {
            Command::Attachments => list(vec![]),
            _ => Err(refused(control::ErrorKind::NotFound, "no such attachment")),
        });
        assert_eq!(run(&env("DEL"), &conf("1.0.0", &fake.socket, "")), Ok(None));
        fake.finish();

        // A daemon that fails for real: the runtime should retry.
        let fake = Fake::new(|c| match c {
            Command::Attachments => list(vec![]),
            _ => Err(refused(control::ErrorKind::Internal, "cannot remove")),
        });
        let err = run(&env("DEL"), &conf("1.0.0", &fake.socket, "")).unwrap_err();
        assert_eq!(err.code, code::IO);
        fake.finish();
    }

    #[test]
    fn check_reports_what_is_wrong() {
        let prev = r#","prevResult":{"cniVersion":"1.0.0",
            "interfaces":[{"name":"metanet0","sandbox":"/proc/self/ns/net"}],
            "ips":[{"address":"fd12:3456::1/128","interface":0}]}"#;
        let err = run(&env("CHECK"), &conf("1.0.0", &missing_socket(), "")).unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);
        let err = run(&env("CHECK"), &conf("1.0.0", &missing_socket(), prev)).unwrap_err();
        assert_eq!(err.code, code::TRY_AGAIN);

        let with = |state: &'static str, ifname: &'static str| {
            Fake::new(move |_| list(vec![attachment("ABC123", ifname, "c-abc123", state)]))
        };
        let fake = with("up", "other0");
        let err = run(&env("CHECK"), &conf("1.0.0", &fake.socket, prev)).unwrap_err();
        assert_eq!(err.code, code::UNKNOWN_CONTAINER);
        fake.finish();

        let fake = with("lost", "metanet0");
        let err = run(&env("CHECK"), &conf("1.0.0", &fake.socket, prev)).unwrap_err();
        assert_eq!(err.code, code::BROKEN);
        assert!(err.msg.starts_with("attachment broken: "), "{}", err.msg);
        assert!(err.msg.contains("`lost`"), "{}", err.msg);
        fake.finish();

        // A cached result without the attachment's address.
        let fake = with("up", "metanet0");
        let stale = prev.replace("fd12:3456::1/128", "fd12:3456::9/128");
        let err = run(&env("CHECK"), &conf("1.0.0", &fake.socket, &stale)).unwrap_err();
        assert_eq!(err.code, code::BROKEN);
        fake.finish();

        // Up as far as the daemon knows, but this namespace has no such interface.
        let fake = with("up", "metanet0");
        let err = run(&env("CHECK"), &conf("1.0.0", &fake.socket, prev)).unwrap_err();
        assert_eq!(err.code, code::BROKEN);
        assert!(err.msg.contains("metanet0"), "{}", err.msg);
        fake.finish();

        // Chained beside the runtime's interface: found by the runtime's name, and the
        // interface looked at is ours.
        let fake = with("up", "mn-metanet0");
        let err = run(&env("CHECK"), &conf("1.0.0", &fake.socket, prev)).unwrap_err();
        assert_eq!(err.code, code::BROKEN);
        assert!(err.msg.contains("mn-metanet0"), "{}", err.msg);
        fake.finish();
    }

    #[test]
    fn gc_detaches_what_is_not_listed() {
        let on = |network: &str, a: AttachmentInfo| AttachmentInfo {
            network: Some(network.into()),
            ..a
        };
        let fake = Fake::new(move |c| match c {
            Command::Attachments => list(vec![
                attachment("keep", "metanet0", "c-keep", "up"),
                attachment("gone", "metanet0", "c-gone", "up"),
                attachment("named", "metanet0", "web", "lost"),
                // Listed under another interface: the container stays whole.
                attachment("multi", "metanet0", "c-multi", "up"),
                attachment("multi", "metanet1", "c-multi", "up"),
                // Chained after bridge: listed by the runtime's name.
                attachment("chained", "mn-eth0", "c-chained", "up"),
                on(
                    "othernet",
                    attachment("foreign", "metanet0", "c-foreign", "up"),
                ),
                AttachmentInfo {
                    container_id: None,
                    ..attachment("", "metanet0", "manual", "up")
                },
            ]),
            _ => Ok(Reply::Done),
        });
        let valid = r#","cni.dev/valid-attachments":[
            {"containerID":"keep","ifname":"metanet0"},
            {"containerID":"multi","ifname":"metanet1"},
            {"containerID":"chained","ifname":"eth0"}]"#;
        assert_eq!(
            run(&env("GC"), &conf("1.1.0", &fake.socket, valid)),
            Ok(None)
        );
        let detach = |id: &str, remove_identity| Command::Detach {
            identity: None,
            container_id: Some(id.into()),
            network: Some("metanet".into()),
            remove_identity,
        };
        assert_eq!(
            fake.finish(),
            vec![
                Command::Attachments,
                detach("gone", true),
                detach("named", false)
            ]
        );

        // 1.1 only, and never without the list.
        let fake = Fake::new(|_| list(vec![]));
        let err = run(&env("GC"), &conf("1.0.0", &fake.socket, valid)).unwrap_err();
        assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
        let err = run(&env("GC"), &conf("1.1.0", &fake.socket, "")).unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);
        assert!(fake.finish().is_empty());

        let err = run(&env("GC"), &conf("1.1.0", &missing_socket(), valid)).unwrap_err();
        assert_eq!(err.code, code::TRY_AGAIN);
    }

    #[test]
    fn status_is_50_when_the_daemon_is_not_there() {
        let err = run(&env("STATUS"), &conf("1.1.0", &missing_socket(), "")).unwrap_err();
        assert_eq!(err.code, code::UNAVAILABLE);
        assert!(
            err.msg.starts_with(&format!(
                "metanetd unreachable at {}: ",
                missing_socket().display()
            )),
            "{}",
            err.msg
        );
        let err = run(&env("STATUS"), &conf("1.0.0", &missing_socket(), "")).unwrap_err();
        assert_eq!(err.code, code::INCOMPATIBLE_VERSION);

        let fake = Fake::new(|_| {
            Ok(serde_json::from_value(serde_json::json!({
                "type": "status", "version": "0.1.0", "interface": "metanet0", "port": 4242,
                "identities": [], "peers": [], "counters": {}
            }))
            .unwrap())
        });
        assert_eq!(
            run(&env("STATUS"), &conf("1.1.0", &fake.socket, "")),
            Ok(None)
        );
        assert_eq!(fake.finish(), vec![Command::Status]);

        let fake = Fake::new(|_| Err(refused(control::ErrorKind::Internal, "starting")));
        let err = run(&env("STATUS"), &conf("1.1.0", &fake.socket, "")).unwrap_err();
        assert_eq!(err.code, code::UNAVAILABLE);
        assert!(err.msg.ends_with(": starting"), "{}", err.msg);
        fake.finish();
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let dir = TempDir::new();
        let socket = dir.0.join("ctl.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        // A repeated key: the last one counts.
        let config = conf("1.0.0", &socket, r#","timeout":1"#);
        let started = std::time::Instant::now();
        let err = run(&env("ADD"), &config).unwrap_err();
        assert_eq!(err.code, code::TRY_AGAIN);
        assert!(err.msg.contains("no answer within 1s"), "{}", err.msg);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
