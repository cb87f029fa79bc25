//! Keeps a [`Registry`] in step with the chain, and keeps answering when the node is
//! down.
//!
//! [`Follower::poll`] is one round: read the head block, fetch the `Claim` events since
//! the last synced block in bounded windows, check them (contiguous indices, the
//! contract's `count()` at the synced block) and apply them. A failed round changes
//! nothing: the registry keeps the last synced state and [`Follower::status`] reports
//! it as stale, with the error and since when; the next successful round resumes
//! where the last one stopped. A reorganization below the synced block (its hash
//! changed) replays the log from the start. The caller drives the rounds (the daemon
//! from a blocking task every few seconds) and may persist the log with
//! [`Follower::save`] so that a restart answers at once, even with the node down.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::claim::RegistryId;
use crate::contract::{self, Error};
use crate::eth::{self, Block};
use crate::evm::{decode_hex, decode_hex_digits, to_0x, to_hex, EvmAddress};
use crate::registry::{LogEntry, Outcome, Params, Registry};
use crate::rpc::Client;

/// Most blocks fetched by one `eth_getLogs`.
pub const DEFAULT_WINDOW: u64 = 2_000;
/// First line of a cache file.
const CACHE_MAGIC: &str = "metanet-chain-cache 1";
/// BLAKE3 key-derivation context of the cache's integrity line.
const CACHE_CHECK_CONTEXT: &str = "metanet v1 chain cache check";

/// How a follower reads the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Blocks behind the head that are considered final (0 on a local dev node).
    pub confirmations: u64,
    /// Most blocks per `eth_getLogs` call.
    pub window: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            confirmations: 0,
            window: DEFAULT_WINDOW,
        }
    }
}

/// What the follower knows about its own freshness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Last block whose claims are all applied (`None` before the first sync).
    pub synced_block: Option<u64>,
    /// Claims applied.
    pub claims: u64,
    /// Head block seen in the last successful round.
    pub head_block: Option<u64>,
    /// When the last round succeeded.
    pub last_success: Option<SystemTime>,
    /// The error of the last round, if it failed: the data is then stale.
    pub last_error: Option<String>,
    /// Since when rounds have been failing.
    pub stale_since: Option<SystemTime>,
}

impl Status {
    /// True when the last round failed or none succeeded yet: answers may be out of date.
    pub fn is_stale(&self) -> bool {
        self.last_error.is_some() || self.last_success.is_none()
    }
}

/// The result of one successful round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Entries applied in this round.
    pub applied: u64,
    /// The synced block after the round.
    pub synced_block: u64,
    /// Whether a reorganization forced a replay from the start.
    pub replayed: bool,
}

/// Follows one registry contract through one RPC node.
#[derive(Debug)]
pub struct Follower {
    client: Client,
    contract: EvmAddress,
    config: Config,
    state: Option<Synced>,
    status: Status,
}

/// The part that exists once the parameters are known.
#[derive(Debug, Clone)]
struct Synced {
    registry: Registry,
    /// Every entry applied, for the cache and for replays.
    entries: Vec<LogEntry>,
    /// What each entry did (same positions as `entries`).
    outcomes: Vec<Outcome>,
    /// Last block fully applied, and its hash (to notice reorganizations).
    block: u64,
    hash: [u8; 32],
}

impl Follower {
    /// A follower of `contract` through `client`; nothing is read until [`poll`].
    ///
    /// [`poll`]: Follower::poll
    pub fn new(client: Client, contract: EvmAddress, config: Config) -> Self {
        Follower {
            client,
            contract,
            config,
            state: None,
            status: Status {
                synced_block: None,
                claims: 0,
                head_block: None,
                last_success: None,
                last_error: None,
                stale_since: None,
            },
        }
    }

    /// Like [`Follower::new`], starting from a cache written by [`Follower::save`]. A
    /// missing, unreadable or foreign cache is ignored (the log is then fetched anew);
    /// the returned flag says whether the cache was used.
    pub fn with_cache(
        client: Client,
        contract: EvmAddress,
        config: Config,
        path: &Path,
    ) -> (Self, bool) {
        let mut f = Follower::new(client, contract, config);
        let used = match std::fs::read_to_string(path) {
            Ok(text) => match decode_cache(&text) {
                Some(s) if s.registry.params().registry.contract == contract => {
                    f.status.synced_block = Some(s.block);
                    f.status.claims = s.registry.next_index();
                    f.state = Some(s);
                    true
                }
                _ => false,
            },
            Err(_) => false,
        };
        (f, used)
    }

    /// The replayed registry, `None` until the parameters could be read once.
    pub fn registry(&self) -> Option<&Registry> {
        self.state.as_ref().map(|s| &s.registry)
    }

    /// Freshness, for `metanet status` and for answers that must say they may be stale.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Every log entry holding exactly `claim` (anyone may submit a copy), in log order,
    /// with its index and what it did: how a submitter learns whether its claim was
    /// applied or why it was ignored.
    pub fn outcomes(&self, claim: &[u8]) -> Vec<(u64, &Outcome)> {
        let Some(s) = &self.state else {
            return Vec::new();
        };
        s.entries
            .iter()
            .zip(&s.outcomes)
            .filter(|(e, _)| e.claim == claim)
            .map(|(e, o)| (e.index, o))
            .collect()
    }

    /// The RPC client (to submit claims through the same node).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The contract followed.
    pub fn contract(&self) -> EvmAddress {
        self.contract
    }

    /// One round of following (see the module docs). On error the state is unchanged
    /// and the status says stale.
    pub fn poll(&mut self) -> Result<Progress, Error> {
        match self.round() {
            Ok((progress, head)) => {
                self.status.synced_block = Some(progress.synced_block);
                self.status.head_block = Some(head);
                self.status.claims = self.state.as_ref().map_or(0, |s| s.registry.next_index());
                self.status.last_success = Some(SystemTime::now());
                self.status.last_error = None;
                self.status.stale_since = None;
                Ok(progress)
            }
            Err(e) => {
                if self.status.stale_since.is_none() {
                    self.status.stale_since = Some(SystemTime::now());
                }
                self.status.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Write the applied log to `path` atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let Some(s) = &self.state else {
            return Ok(());
        };
        let text = encode_cache(s);
        let tmp = tmp_path(path);
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    fn round(&mut self) -> Result<(Progress, u64), Error> {
        let head = eth::block_number(&self.client)?;
        let target = head.saturating_sub(self.config.confirmations);
        let mut replayed = false;
        // Work on a copy so that a failure half-way leaves the state as it was.
        let mut s = match &self.state {
            Some(s) => {
                let still_canonical =
                    s.block == 0 || eth::block_hash(&self.client, s.block)? == Some(s.hash);
                if still_canonical {
                    s.clone()
                } else {
                    replayed = true;
                    self.fresh()?
                }
            }
            None => self.fresh()?,
        };
        let before = s.registry.next_index();
        if target > s.block {
            let mut from = s.block + 1;
            while from <= target {
                let to = target.min(from.saturating_add(self.config.window - 1));
                let entries = contract::fetch_log(&self.client, &self.contract, from, to)?;
                check_continues(&s.registry, &entries)?;
                for e in entries {
                    let outcome = s
                        .registry
                        .apply(&e)
                        .map_err(|_| Error::BadLog("entry does not continue the log"))?;
                    s.entries.push(e);
                    s.outcomes.push(outcome);
                }
                from = to + 1;
            }
            // The node must not have left any claim out: the contract's count at the
            // target block is the number of entries up to it.
            let count = contract::count(&self.client, &self.contract, Block::Number(target))?;
            if count != s.registry.next_index() {
                return Err(Error::BadLog(
                    "the node returned fewer claims than the contract counts",
                ));
            }
            s.block = target;
            s.hash = eth::block_hash(&self.client, target)?
                .ok_or(Error::BadLog("the node does not have the synced block"))?;
        }
        let progress = Progress {
            applied: s.registry.next_index() - before,
            synced_block: s.block,
            replayed,
        };
        self.state = Some(s);
        Ok((progress, head))
    }

    /// The empty state, with the parameters read from the contract.
    fn fresh(&self) -> Result<Synced, Error> {
        let params = contract::read_params(&self.client, &self.contract)?;
        Ok(Synced {
            registry: Registry::new(params),
            entries: Vec::new(),
            outcomes: Vec::new(),
            block: 0,
            hash: [0; 32],
        })
    }
}

/// Entries must continue the registry's log: contiguous indices, blocks not going back.
fn check_continues(registry: &Registry, entries: &[LogEntry]) -> Result<(), Error> {
    let mut block = registry.last_block();
    for (index, e) in (registry.next_index()..).zip(entries) {
        if e.index != index || e.block < block {
            return Err(Error::BadLog("claim indices are not contiguous"));
        }
        block = e.block;
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The cache: a header, then one line per entry (`entry INDEX BLOCK HEX`), then
/// `check HEX`, a BLAKE3 hash of everything before it, so that a damaged file (a disk
/// error, an edit) is discarded instead of replayed into a different state.
fn encode_cache(s: &Synced) -> String {
    let p = s.registry.params();
    let mut out = format!(
        "{CACHE_MAGIC}\nchain-id {}\ncontract {}\nmin-reveal-delay {}\ncommit-lifetime {}\nsynced-block {}\nsynced-hash {}\n",
        p.registry.chain_id,
        p.registry.contract,
        p.min_reveal_delay,
        p.commit_lifetime,
        s.block,
        to_0x(&s.hash),
    );
    for e in &s.entries {
        out.push_str(&format!(
            "entry {} {} {}\n",
            e.index,
            e.block,
            to_hex(&e.claim)
        ));
    }
    let check = cache_check(&out);
    out.push_str(&format!("check {check}\n"));
    out
}

fn cache_check(body: &str) -> String {
    to_hex(blake3::derive_key(CACHE_CHECK_CONTEXT, body.as_bytes()).as_slice())
}

/// Strict decoding; any defect discards the whole cache (it is only a cache).
fn decode_cache(text: &str) -> Option<Synced> {
    let body_end = text.strip_suffix('\n')?.rfind('\n')? + 1;
    let (body, trailer) = text.split_at(body_end);
    if trailer != format!("check {}\n", cache_check(body)) {
        return None;
    }
    let mut lines = body.lines();
    if lines.next()? != CACHE_MAGIC {
        return None;
    }
    let mut field = |key: &str| -> Option<String> {
        let line = lines.next()?;
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.to_owned())
    };
    let chain_id = field("chain-id")?.parse().ok()?;
    let contract: EvmAddress = field("contract")?.parse().ok()?;
    let min_reveal_delay = field("min-reveal-delay")?.parse().ok()?;
    let commit_lifetime = field("commit-lifetime")?.parse().ok()?;
    let block: u64 = field("synced-block")?.parse().ok()?;
    let hash: [u8; 32] = decode_hex(&field("synced-hash")?).ok()?.try_into().ok()?;
    let mut registry = Registry::new(Params {
        registry: RegistryId { chain_id, contract },
        min_reveal_delay,
        commit_lifetime,
    });
    let mut entries = Vec::new();
    let mut outcomes = Vec::new();
    for line in lines {
        let mut parts = line.split(' ');
        if parts.next()? != "entry" {
            return None;
        }
        let index = parts.next()?.parse().ok()?;
        let entry_block: u64 = parts.next()?.parse().ok()?;
        let claim = decode_hex_digits(parts.next()?).ok()?;
        if parts.next().is_some() || entry_block > block {
            return None;
        }
        let e = LogEntry {
            index,
            block: entry_block,
            claim,
        };
        outcomes.push(registry.apply(&e).ok()?);
        entries.push(e);
    }
    Some(Synced {
        registry,
        entries,
        outcomes,
        block,
        hash,
    })
}
