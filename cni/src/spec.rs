//! The CNI specification's side of the plugin (spec 1.0.0 and 1.1.0): what the runtime
//! hands over and what goes back.
//!
//! [`Config`] is the network configuration on stdin, [`CniResult`] the success result
//! (and a previous plugin's `prevResult`), [`Error`] the error object and its code.
//! Here too, because they are pure and tested alone: `CNI_ARGS` parsing, the identity
//! name a container gets, the version check, the `GC` list, and merging our interface
//! into a previous plugin's result. Nothing here talks to the daemon or the kernel.

use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The newest version spoken; what `VERSION` reports.
pub(crate) const LATEST: &str = "1.1.0";

/// Every configuration version accepted.
pub(crate) const SUPPORTED: [&str; 2] = ["1.0.0", LATEST];

/// Where metanetd listens unless the configuration says otherwise.
pub(crate) const DEFAULT_SOCKET: &str = "/run/metanet/metanetd.sock";

/// Seconds each step of a daemon request may take unless configured.
pub(crate) const DEFAULT_TIMEOUT: u64 = 10;

/// Longest accepted `timeout`, seconds.
const MAX_TIMEOUT: u64 = 3600;

/// The `CNI_ARGS` key naming the identity.
pub(crate) const IDENTITY_ARG: &str = "METANET_IDENTITY";

/// The route every attachment carries: the whole overlay.
pub(crate) const OVERLAY_ROUTE: &str = "fd00::/8";

/// The DNS search domain of overlay names.
pub(crate) const SEARCH_DOMAIN: &str = "meta";

/// The `mac` reported for our interface. A TUN has no hardware address, but podman's
/// CNI backend (containers/common `CNIResultToStatus`) parses the `mac` of every
/// interface with a `sandbox` and fails the whole `podman run` on an absent one
/// ("invalid MAC address"); the all-zero address is what the kernel would show.
pub(crate) const TUN_MAC: &str = "00:00:00:00:00:00";

/// Longest identity name derived from a container id (`c-` included).
const DERIVED_LEN: usize = 26;

/// Longest identity name.
const MAX_IDENTITY: usize = 64;

/// The error codes used, by the spec's numbers.
pub(crate) mod code {
    /// Incompatible CNI version.
    pub(crate) const INCOMPATIBLE_VERSION: u32 = 1;
    /// Container unknown or does not exist.
    pub(crate) const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub(crate) const INVALID_ENV: u32 = 4;
    /// I/O failure (here: the daemon refused, or answered nonsense).
    pub(crate) const IO: u32 = 5;
    /// Failed to decode content.
    pub(crate) const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub(crate) const INVALID_CONFIG: u32 = 7;
    /// Try again later (the daemon is not there or did not answer).
    pub(crate) const TRY_AGAIN: u32 = 11;
    /// `STATUS`: the plugin is not available.
    pub(crate) const UNAVAILABLE: u32 = 50;
    /// Plugin-specific: `CHECK` found the attachment broken.
    pub(crate) const BROKEN: u32 = 100;
}

/// A CNI error: code, message, optional details. Printed on stdout as the spec's error
/// object, exit status 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub(crate) struct Error {
    pub(crate) code: u32,
    pub(crate) msg: String,
    pub(crate) details: String,
}

impl Error {
    pub(crate) fn new(code: u32, msg: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub(crate) fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    fn config(msg: impl Into<String>) -> Self {
        Error::new(code::INVALID_CONFIG, msg)
    }

    /// The error object, in `version`'s format (the same for 1.0.0 and 1.1.0).
    pub(crate) fn to_json(&self, version: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        let out = Out {
            cni_version: version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        // A struct of strings and a number always serializes.
        serde_json::to_vec(&out).unwrap_or_default()
    }
}

/// The version an error is reported in: the configuration's when it is one we speak,
/// else the newest.
pub(crate) fn reply_version(stdin: &[u8]) -> &'static str {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            let requested = v.get("cniVersion")?.as_str()?.to_owned();
            SUPPORTED.into_iter().find(|s| *s == requested)
        })
        .unwrap_or(LATEST)
}

/// `VERSION`'s answer.
pub(crate) fn version_info() -> Vec<u8> {
    serde_json::json!({ "cniVersion": LATEST, "supportedVersions": SUPPORTED })
        .to_string()
        .into_bytes()
}

/// Refuse a configuration version not in [`SUPPORTED`] (code 1).
pub(crate) fn check_version(version: &str) -> Result<(), Error> {
    if SUPPORTED.contains(&version) {
        Ok(())
    } else {
        Err(Error::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {version:?} is not supported (supported: {})",
                SUPPORTED.join(", ")
            ),
        ))
    }
}

/// The network configuration on stdin. Unknown fields are ignored; `type` is the
/// runtime's business.
#[derive(Debug, Deserialize)]
pub(crate) struct Config {
    #[serde(rename = "cniVersion")]
    pub(crate) cni_version: String,
    /// The network's name: attachments are labelled with it (`GC` works per network).
    pub(crate) name: String,
    /// metanetd's control socket.
    #[serde(default = "default_socket")]
    pub(crate) socket: PathBuf,
    /// One identity for every container (rarely what you want).
    #[serde(default)]
    pub(crate) identity: Option<String>,
    /// Seconds each step of a daemon request may take.
    #[serde(default = "default_timeout")]
    pub(crate) timeout: u64,
    /// The previous plugin's result (chained), or the cached result (`CHECK`); parsed
    /// only where it is used, so that `DEL` never fails on it.
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<Value>,
    #[serde(default)]
    args: Option<Value>,
    /// `GC`: the attachments still in use.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Value>,
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT
}

impl Config {
    /// Parse and check stdin: code 6 for what is not JSON, 1 for a version not spoken,
    /// 7 for anything else wrong.
    pub(crate) fn parse(stdin: &[u8]) -> Result<Config, Error> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            Error::new(
                code::DECODE,
                format!("cannot decode the network configuration: {e}"),
            )
        })?;
        let Some(object) = value.as_object() else {
            return Err(Error::config(
                "the network configuration is not a JSON object",
            ));
        };
        match object.get("cniVersion") {
            None => return Err(Error::config("the network configuration has no cniVersion")),
            Some(Value::String(v)) => check_version(v)?,
            Some(_) => return Err(Error::config("cniVersion is not a string")),
        }
        let config: Config = serde_json::from_value(value)
            .map_err(|e| Error::config(format!("invalid network configuration: {e}")))?;
        if !valid_network_name(&config.name) {
            return Err(Error::config(format!(
                "invalid network name {:?}: a letter or digit, then letters, digits, `_`, `.`, `-`",
                config.name
            )));
        }
        if config.socket.as_os_str().is_empty() {
            return Err(Error::config("`socket` is empty"));
        }
        if !(1..=MAX_TIMEOUT).contains(&config.timeout) {
            return Err(Error::config(format!(
                "`timeout` must be 1..={MAX_TIMEOUT} seconds, not {}",
                config.timeout
            )));
        }
        Ok(config)
    }

    /// The previous result, if any (code 7 when it is not a result).
    pub(crate) fn prev_result(&self) -> Result<Option<CniResult>, Error> {
        match &self.prev_result {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| Error::config(format!("invalid prevResult: {e}"))),
        }
    }

    /// `GC`'s list of attachments in use. Required: without it every attachment of the
    /// network would look unused.
    pub(crate) fn valid_attachments(&self) -> Result<Vec<ValidAttachment>, Error> {
        let Some(v) = &self.valid_attachments else {
            return Err(Error::config(
                "GC without cni.dev/valid-attachments: refusing to guess which attachments are in use",
            ));
        };
        serde_json::from_value(v.clone())
            .map_err(|e| Error::config(format!("invalid cni.dev/valid-attachments: {e}")))
    }

    /// The identity name for `container_id`, from the first of: `CNI_ARGS`
    /// `METANET_IDENTITY`, `runtimeConfig.metanet.identity`, `args.cni.metanet_identity`,
    /// the configuration's `identity`; else derived from the container id.
    pub(crate) fn identity(
        &self,
        cni_args: &[(String, String)],
        container_id: &str,
    ) -> Result<Identity, Error> {
        let explicit = |name: &str, source: &str| {
            if valid_identity(name) {
                Ok(Identity {
                    name: name.to_owned(),
                    derived: false,
                })
            } else {
                Err(Error::config(format!(
                    "invalid identity name {name:?} (from {source}): 1 to {MAX_IDENTITY} of a-z, 0-9, `_`, `-`"
                )))
            }
        };
        if let Some((_, v)) = cni_args.iter().find(|(k, _)| k == IDENTITY_ARG) {
            return explicit(v, "CNI_ARGS");
        }
        if let Some(v) = nested_str(&self.runtime_config, &["metanet", "identity"])? {
            return explicit(v, "runtimeConfig.metanet.identity");
        }
        if let Some(v) = nested_str(&self.args, &["cni", "metanet_identity"])? {
            return explicit(v, "args.cni.metanet_identity");
        }
        if let Some(v) = &self.identity {
            return explicit(v, "the configuration's `identity`");
        }
        Ok(Identity {
            name: derive_identity(container_id),
            derived: true,
        })
    }
}

/// The string at `path` inside `root`, when every step exists; code 7 when the last one
/// is there but is not a string.
fn nested_str<'a>(root: &'a Option<Value>, path: &[&str]) -> Result<Option<&'a str>, Error> {
    let mut at = match root {
        Some(v) => v,
        None => return Ok(None),
    };
    for key in path {
        match at.get(key) {
            Some(v) => at = v,
            None => return Ok(None),
        }
    }
    match at {
        Value::String(s) => Ok(Some(s)),
        Value::Null => Ok(None),
        _ => Err(Error::config(format!("{} is not a string", path.join(".")))),
    }
}

/// Whose identity a container speaks as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) name: String,
    /// Made up from the container id: the container's own, removed with it.
    pub(crate) derived: bool,
}

/// Identity names: 1 to 64 of `a-z0-9_-`.
pub(crate) fn valid_identity(name: &str) -> bool {
    (1..=MAX_IDENTITY).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `c-` and the container id, lowercased, anything outside `a-z0-9_-` made `-`,
/// [`DERIVED_LEN`] characters in all.
pub(crate) fn derive_identity(container_id: &str) -> String {
    "c-".chars()
        .chain(container_id.chars().map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        }))
        .take(DERIVED_LEN)
        .collect()
}

/// Network names (spec): a letter or digit, then letters, digits, `_`, `.`, `-`.
fn valid_network_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Container ids (spec): the same alphabet as network names.
pub(crate) fn valid_container_id(id: &str) -> bool {
    valid_network_name(id)
}

/// `CNI_ARGS`: `K=V;K=V`. Empty parts are skipped; a part without `=` is code 4.
pub(crate) fn parse_cni_args(args: &str) -> Result<Vec<(String, String)>, Error> {
    args.split(';')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(Error::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: {part:?} is not KEY=VALUE"),
            )),
        })
        .collect()
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub(crate) container_id: String,
    pub(crate) ifname: String,
}

/// A success result. Fields this plugin does not use (1.1's `mtu`, `socketPath`, route
/// `table`, ...) are kept in the `extra` maps, so a previous result passes through whole.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub(crate) cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub(crate) dns: Dns,
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Interface {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sandbox: Option<String>,
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct IpConfig {
    /// `ADDRESS/PREFIX`.
    pub(crate) address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) interface: Option<usize>,
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Route {
    pub(crate) dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gw: Option<String>,
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// What one attachment contributes to a result.
#[derive(Clone, Debug)]
pub(crate) struct Ours<'a> {
    pub(crate) interface: &'a str,
    /// The namespace path, as the runtime gave it.
    pub(crate) sandbox: &'a str,
    pub(crate) ipv6: Ipv6Addr,
    pub(crate) mtu: u16,
    pub(crate) nameserver: Option<IpAddr>,
}

impl CniResult {
    /// Our result in `version`, appended to `prev` when chained: its interfaces, ips,
    /// routes and DNS stay, ours follow (our nameserver first: it answers `.meta`).
    pub(crate) fn merged(version: &str, prev: Option<CniResult>, ours: &Ours<'_>) -> CniResult {
        let mut result = prev.unwrap_or_default();
        result.cni_version = version.to_owned();
        let mut extra = Map::new();
        if version != "1.0.0" {
            extra.insert("mtu".into(), Value::from(ours.mtu));
        }
        let index = result.interfaces.len();
        result.interfaces.push(Interface {
            name: ours.interface.to_owned(),
            mac: Some(TUN_MAC.to_owned()),
            sandbox: Some(ours.sandbox.to_owned()),
            extra,
        });
        result.ips.push(IpConfig {
            address: format!("{}/128", ours.ipv6),
            gateway: None,
            interface: Some(index),
            extra: Map::new(),
        });
        result.routes.push(Route {
            dst: OVERLAY_ROUTE.to_owned(),
            gw: None,
            extra: Map::new(),
        });
        if let Some(ns) = ours.nameserver {
            let ns = ns.to_string();
            result.dns.nameservers.retain(|n| *n != ns);
            result.dns.nameservers.insert(0, ns);
        }
        if !result.dns.search.iter().any(|s| s == SEARCH_DOMAIN) {
            result.dns.search.push(SEARCH_DOMAIN.to_owned());
        }
        result
    }

    /// Whether an `ips` entry is `ipv6/128`.
    pub(crate) fn has_address(&self, ipv6: Ipv6Addr) -> bool {
        self.ips.iter().any(|ip| {
            ip.address
                .split_once('/')
                .is_some_and(|(a, len)| a.parse() == Ok(ipv6) && len == "128")
        })
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        // Strings, numbers and maps of JSON values always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Config {
        Config::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn standalone_config_with_defaults() {
        let c =
            config(r#"{"cniVersion":"1.0.0","name":"metanet","type":"metanet-cni","unknown":[1]}"#);
        assert_eq!(c.cni_version, "1.0.0");
        assert_eq!(c.name, "metanet");
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert!(c.prev_result().unwrap().is_none());

        let c = config(
            r#"{"cniVersion":"1.1.0","name":"n1","socket":"/tmp/x.sock","timeout":3,"identity":"web"}"#,
        );
        assert_eq!(c.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.timeout, 3);
        assert_eq!(c.identity.as_deref(), Some("web"));
    }

    #[test]
    fn bad_configs_get_their_codes() {
        let code = |json: &str| Config::parse(json.as_bytes()).unwrap_err().code;
        assert_eq!(code("{not json"), code::DECODE);
        assert_eq!(code(""), code::DECODE);
        assert_eq!(code("[]"), code::INVALID_CONFIG);
        assert_eq!(code(r#"{"name":"n"}"#), code::INVALID_CONFIG);
        assert_eq!(code(r#"{"cniVersion":1,"name":"n"}"#), code::INVALID_CONFIG);
        assert_eq!(
            code(r#"{"cniVersion":"0.4.0","name":"n"}"#),
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(code(r#"{"cniVersion":"1.0.0"}"#), code::INVALID_CONFIG);
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"-x"}"#),
            code::INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"a/b"}"#),
            code::INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","timeout":0}"#),
            code::INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","socket":""}"#),
            code::INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","socket":7}"#),
            code::INVALID_CONFIG
        );
        let c = config(r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":"x"}}"#);
        assert_eq!(c.prev_result().unwrap_err().code, code::INVALID_CONFIG);
    }

    #[test]
    fn versions() {
        assert!(check_version("1.0.0").is_ok());
        assert!(check_version("1.1.0").is_ok());
        for v in ["0.4.0", "1.0", "", "2.0.0"] {
            assert_eq!(
                check_version(v).unwrap_err().code,
                code::INCOMPATIBLE_VERSION
            );
        }
        let info: Value = serde_json::from_slice(&version_info()).unwrap();
        assert_eq!(
            info,
            serde_json::json!({"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]})
        );
        assert_eq!(reply_version(br#"{"cniVersion":"1.0.0"}"#), "1.0.0");
        assert_eq!(reply_version(br#"{"cniVersion":"0.3.1"}"#), LATEST);
        assert_eq!(reply_version(b"garbage"), LATEST);
    }

    #[test]
    fn error_object_shape() {
        let e = Error::new(code::TRY_AGAIN, "metanetd unreachable").details("no socket");
        let v: Value = serde_json::from_slice(&e.to_json("1.0.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.0.0","code":11,"msg":"metanetd unreachable","details":"no socket"})
        );
        let v: Value = serde_json::from_slice(&Error::new(7, "bad").to_json(LATEST)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.1.0","code":7,"msg":"bad"})
        );
    }

    #[test]
    fn cni_args() {
        let args = parse_cni_args("IgnoreUnknown=1;METANET_IDENTITY=web;K8S_POD_NAME=a=b").unwrap();
        assert_eq!(
            args,
            vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("METANET_IDENTITY".into(), "web".into()),
                ("K8S_POD_NAME".into(), "a=b".into()),
            ]
        );
        assert!(parse_cni_args("").unwrap().is_empty());
        assert_eq!(parse_cni_args("a=1;;b=2;").unwrap().len(), 2);
        assert_eq!(
            parse_cni_args("novalue").unwrap_err().code,
            code::INVALID_ENV
        );
        assert_eq!(parse_cni_args("=v").unwrap_err().code, code::INVALID_ENV);
    }

    #[test]
    fn identity_derivation_and_validation() {
        assert_eq!(
            derive_identity("3F2504E04F8911D39A0C0305E82C3301aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            "c-3f2504e04f8911d39a0c0305"
        );
        assert_eq!(derive_identity("My.Pod:1"), "c-my-pod-1");
        assert_eq!(derive_identity("ünï"), "c--n-");
        let long = derive_identity(&"x".repeat(100));
        assert_eq!(long.len(), 26);
        assert!(valid_identity(&long));
        assert!(valid_identity("web_1-a"));
        assert!(valid_identity(&"a".repeat(64)));
        for bad in ["", "Web", "a.b", "a b", "é", &"a".repeat(65)] {
            assert!(!valid_identity(bad), "{bad:?}");
        }
        assert!(valid_container_id("abc-1.2_3"));
        assert!(!valid_container_id(""));
        assert!(!valid_container_id("_x"));
    }

    #[test]
    fn identity_sources_in_order() {
        let none: Vec<(String, String)> = vec![];
        let args = |v: &str| vec![(IDENTITY_ARG.to_owned(), v.to_owned())];
        let all = config(
            r#"{"cniVersion":"1.0.0","name":"n","identity":"fixed",
                "runtimeConfig":{"metanet":{"identity":"rt"}},
                "args":{"cni":{"metanet_identity":"arg"}}}"#,
        );
        let name = |c: &Config, a: &[(String, String)]| c.identity(a, "ABC").unwrap();
        assert_eq!(name(&all, &args("env")).name, "env");
        assert_eq!(name(&all, &none).name, "rt");
        let c = config(
            r#"{"cniVersion":"1.0.0","name":"n","identity":"fixed","args":{"cni":{"metanet_identity":"arg"}}}"#,
        );
        assert_eq!(name(&c, &none).name, "arg");
        let c = config(r#"{"cniVersion":"1.0.0","name":"n","identity":"fixed"}"#);
        assert_eq!(
            name(&c, &none),
            Identity {
                name: "fixed".into(),
                derived: false
            }
        );
        let c = config(r#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[]}}"#);
        assert_eq!(
            name(&c, &none),
            Identity {
                name: "c-abc".into(),
                derived: true
            }
        );
        // An explicit name is validated, wherever it comes from.
        assert_eq!(
            c.identity(&args("Bad!"), "x").unwrap_err().code,
            code::INVALID_CONFIG
        );
        assert_eq!(
            c.identity(&args(""), "x").unwrap_err().code,
            code::INVALID_CONFIG
        );
        let c = config(r#"{"cniVersion":"1.0.0","name":"n","identity":"UPPER"}"#);
        assert_eq!(
            c.identity(&none, "x").unwrap_err().code,
            code::INVALID_CONFIG
        );
        let c = config(
            r#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"metanet":{"identity":3}}}"#,
        );
        assert_eq!(
            c.identity(&none, "x").unwrap_err().code,
            code::INVALID_CONFIG
        );
    }

    fn ours() -> Ours<'static> {
        Ours {
            interface: "metanet0",
            sandbox: "/var/run/netns/cni-1",
            ipv6: "fd12:3456::1".parse().unwrap(),
            mtu: 1376,
            nameserver: Some("fd12:3456::53".parse().unwrap()),
        }
    }

    #[test]
    fn standalone_result() {
        let r = CniResult::merged("1.0.0", None, &ours());
        let v: Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "metanet0", "mac": "00:00:00:00:00:00", "sandbox": "/var/run/netns/cni-1"}],
                "ips": [{"address": "fd12:3456::1/128", "interface": 0}],
                "routes": [{"dst": "fd00::/8"}],
                "dns": {"nameservers": ["fd12:3456::53"], "search": ["meta"]}
            })
        );
        assert!(r.has_address("fd12:3456::1".parse().unwrap()));
        assert!(!r.has_address("fd12:3456::2".parse().unwrap()));
        // 1.1.0 results carry the interface's MTU.
        let r = CniResult::merged("1.1.0", None, &ours());
        assert_eq!(r.interfaces[0].extra.get("mtu"), Some(&Value::from(1376)));
        // No DNS view: no nameserver, the search domain still.
        let r = CniResult::merged(
            "1.0.0",
            None,
            &Ours {
                nameserver: None,
                ..ours()
            },
        );
        assert!(r.dns.nameservers.is_empty());
        assert_eq!(r.dns.search, ["meta"]);
    }

    #[test]
    fn chained_after_bridge_merges() {
        let c = config(
            r#"{
              "cniVersion": "1.0.0", "name": "metanet", "type": "metanet-cni",
              "socket": "/run/metanet/metanetd.sock",
              "prevResult": {
                "cniVersion": "1.0.0",
                "interfaces": [
                  {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                  {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
                  {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/var/run/netns/cni-1"}
                ],
                "ips": [{"address": "198.18.210.5/24", "gateway": "198.18.210.1", "interface": 2}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.210.1", "mtu": 1400}],
                "dns": {"nameservers": ["198.18.210.1", "fd12:3456::53"], "domain": "local", "search": ["svc.local"]},
                "vendorField": {"x": 1}
              }
            }"#,
        );
        let prev = c.prev_result().unwrap();
        let r = CniResult::merged(&c.cni_version, prev, &ours());
        let v: Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                  {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                  {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
                  {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/var/run/netns/cni-1"},
                  {"name": "metanet0", "mac": "00:00:00:00:00:00", "sandbox": "/var/run/netns/cni-1"}
                ],
                "ips": [
                  {"address": "198.18.210.5/24", "gateway": "198.18.210.1", "interface": 2},
                  {"address": "fd12:3456::1/128", "interface": 3}
                ],
                "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.210.1", "mtu": 1400}, {"dst": "fd00::/8"}],
                "dns": {
                  "nameservers": ["fd12:3456::53", "198.18.210.1"],
                  "domain": "local",
                  "search": ["svc.local", "meta"]
                },
                "vendorField": {"x": 1}
            })
        );
    }

    #[test]
    fn gc_list() {
        let c = config(
            r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[
                {"containerID":"a1","ifname":"eth0"},{"containerID":"b2","ifname":"metanet0","extra":1}]}"#,
        );
        assert_eq!(
            c.valid_attachments().unwrap(),
            vec![
                ValidAttachment {
                    container_id: "a1".into(),
                    ifname: "eth0".into()
                },
                ValidAttachment {
                    container_id: "b2".into(),
                    ifname: "metanet0".into()
                },
            ]
        );
        let c = config(r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[]}"#);
        assert!(c.valid_attachments().unwrap().is_empty());
        let c = config(r#"{"cniVersion":"1.1.0","name":"n"}"#);
        assert_eq!(
            c.valid_attachments().unwrap_err().code,
            code::INVALID_CONFIG
        );
        let c = config(
            r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"ifname":"x"}]}"#,
        );
        assert_eq!(
            c.valid_attachments().unwrap_err().code,
            code::INVALID_CONFIG
        );
    }
}
