//! JSON-RPC 2.0 over plain HTTP, blocking, with timeouts and a bounded answer size.
//!
//! Only `http://` URLs are accepted: the node is expected on loopback or a trusted
//! local network (put a TLS-terminating proxy in front of a remote one). Every call is
//! one POST; the connection may be reused. Errors say whose fault they are: the node
//! could not be reached ([`Error::Unreachable`], the usual "node is down"), it
//! answered with an error ([`Error::Rpc`]), or its answer was malformed.

use std::cell::Cell;
use std::time::Duration;

use serde_json::{json, Value};

/// Longest answer accepted, in bytes.
pub const MAX_RESPONSE_LEN: u64 = 32 << 20;
/// Default timeout of one call, connect to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RPC URL `{0}` is not supported: use http://HOST:PORT (no TLS)")]
    BadUrl(String),
    #[error("RPC node {url} is unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("RPC node {url} answered HTTP status {status}")]
    Http { url: String, status: u16 },
    #[error("RPC node refused {method}: {message} (code {code})")]
    Rpc {
        method: &'static str,
        code: i64,
        message: String,
    },
    #[error("RPC node sent a malformed answer to {method}: {reason}")]
    BadResponse {
        method: &'static str,
        reason: &'static str,
    },
}

impl Error {
    /// Whether the node could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Http { .. })
    }
}

/// A JSON-RPC endpoint.
#[derive(Debug)]
pub struct Client {
    url: String,
    agent: ureq::Agent,
    next_id: Cell<u64>,
}

impl Client {
    /// A client for `url` (`http://host:port[/path]`) with [`DEFAULT_TIMEOUT`].
    pub fn new(url: &str) -> Result<Self, Error> {
        Self::with_timeout(url, DEFAULT_TIMEOUT)
    }

    /// A client whose calls each time out after `timeout`.
    pub fn with_timeout(url: &str, timeout: Duration) -> Result<Self, Error> {
        if !url.starts_with("http://") || url.len() <= "http://".len() {
            return Err(Error::BadUrl(url.to_owned()));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Ok(Client {
            url: url.to_owned(),
            agent,
            next_id: Cell::new(1),
        })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Call `method` with positional `params`; returns the `result` value.
    pub fn call(&self, method: &'static str, params: Value) -> Result<Value, Error> {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let unreachable = |e| Error::Unreachable {
            url: self.url.clone(),
            source: Box::new(e),
        };
        let mut resp = self
            .agent
            .post(&self.url)
            .header("content-type", "application/json")
            .send(body.to_string())
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(Error::Http {
                url: self.url.clone(),
                status,
            });
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_LEN)
            .read_to_string()
            .map_err(unreachable)?;
        let bad = |reason| Error::BadResponse { method, reason };
        let mut v: Value = serde_json::from_str(&text).map_err(|_| bad("not JSON"))?;
        if v.get("id") != Some(&json!(id)) {
            return Err(bad("id does not match the request"));
        }
        if let Some(err) = v.get("error") {
            return Err(Error::Rpc {
                method,
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .take(512)
                    .collect(),
            });
        }
        v.get_mut("result")
            .map(Value::take)
            .ok_or(bad("neither result nor error"))
    }
}
