//! The daemon's chain client (docs/protocol.md §9): follows the
//! `MetanetRegistry` contract through a JSON-RPC node, and submits the claims of local
//! identities (name registrations and transfers, key revocations).
//!
//! `metanet-chain` is blocking, so none of it runs on the tokio loop:
//!
//! - the **follower thread** owns a [`Follower`] (behind a mutex it shares with the
//!   writer) and runs one round every [`POLL_INTERVAL`]. After a round that changed the
//!   log it saves the cache in the state directory (atomically) and publishes a
//!   `View`: the replayed registry (an `Arc`, swapped whole) and the freshness
//!   status; it also refills the DNS view's name table. A failed round changes nothing
//!   but the status, so the daemon keeps answering from what it has and reports it as
//!   stale.
//! - the **writer thread** (only with a funding key) takes `Write` jobs from a
//!   bounded queue, one at a time so that the funding account's nonces never collide:
//!   it submits the claims, waits until they are mined, runs a follower round and
//!   answers the control request with what the replayed log says (applied, or the
//!   reason it was ignored).
//!
//! The daemon loop only ever reads the view (a short read lock) and signs claims with
//! the identities' wallet keys itself, so no key material crosses into these threads;
//! the funding key, which only pays gas, lives in the writer thread.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metanet_chain::claim::{self, Claim, Commitment, Salt};
use metanet_chain::follower::{self, Follower, Status};
use metanet_chain::registry::{Effect, Ignored};
use metanet_chain::rpc::Client;
use metanet_chain::tx::FundingKey;
use metanet_chain::{contract, eth};
use metanet_chain::{EvmAddress, KeyStatus, Name, Outcome, Registry, Resolution};
use metanet_proto::address::Ipv6Prefix;
use metanet_proto::control::{self as api, ChainStatus, ErrorKind, NameInfo, NameStatus, Reply};
use metanet_proto::node::Command;
use metanet_proto::{Address, Target};

use crate::{controller, dns, err, Daemon, ReplyTo};

/// Time between follower rounds.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Timeout of one JSON-RPC call.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one transaction may take to be mined.
const MINE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the next block during the reveal delay.
const BLOCK_WAIT: Duration = Duration::from_secs(60);
/// Write jobs queued at most (each takes a few blocks).
const MAX_QUEUED_WRITES: usize = 8;
/// File of the log cache in the state directory.
pub const CACHE_FILE: &str = "chain.cache";

pub use crate::config::ChainConfig as Config;

/// Why the chain client could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--chain-rpc: {0}")]
    Rpc(#[from] metanet_chain::rpc::Error),
    #[error("--chain-key: {0}")]
    Key(#[from] metanet_chain::tx::KeyError),
    #[error("cannot start the chain thread: {0}")]
    Thread(std::io::Error),
}

/// What the follower thread publishes for the daemon loop.
#[derive(Debug)]
pub(crate) struct View {
    /// The replayed registry; `None` until the contract could be read once.
    pub(crate) registry: Option<Arc<Registry>>,
    /// Freshness of `registry`.
    pub(crate) status: Status,
}

/// The daemon's side of the chain client. Dropping it stops both threads.
#[derive(Debug)]
pub(crate) struct ChainClient {
    config: Config,
    view: Arc<RwLock<View>>,
    funding: Option<EvmAddress>,
    writes: Option<SyncSender<Write>>,
    /// Dropped with the handle: the follower thread sees the channel close and stops.
    _stop: mpsc::Sender<()>,
}

/// A claim submission for the writer thread.
#[derive(Debug)]
pub(crate) struct Write {
    job: Submission,
    /// Local identities (name, address), to say which one owns a name in the answer.
    locals: Vec<(String, Address)>,
    reply: ReplyTo,
}

#[derive(Debug)]
pub(crate) enum Submission {
    /// Commit, wait the reveal delay, reveal.
    Register {
        name: Name,
        commit: Vec<u8>,
        reveal: Vec<u8>,
        delay: u64,
    },
    Transfer {
        name: Name,
        claim: Vec<u8>,
    },
    Revoke {
        identity: String,
        address: Address,
        claim: Vec<u8>,
    },
    /// A wallet rotation of local identity `identity` from `from` to `to`.
    Rotate {
        identity: String,
        from: Address,
        to: Address,
        claim: Vec<u8>,
    },
    /// A group claim (create, add, remove, admin).
    Group {
        name: Name,
        claim: Vec<u8>,
    },
}

/// What a chain request comes to: an answer now, or a claim to submit.
pub(crate) enum Queued {
    Now(Box<Reply>),
    Write(Submission),
}

/// What the follower and the writer share.
struct Shared {
    follower: Mutex<Follower>,
    view: Arc<RwLock<View>>,
    names: dns::Names,
    cache: PathBuf,
}

impl ChainClient {
    /// Read the funding key, load the cache and start the threads. Nothing here waits
    /// for the node: a node that is down makes the view stale, not the start fail.
    pub(crate) fn spawn(
        config: Config,
        state_dir: &Path,
        names: dns::Names,
    ) -> Result<Self, Error> {
        let client = Client::with_timeout(&config.rpc, RPC_TIMEOUT)?;
        let key = config.key.as_deref().map(FundingKey::read).transpose()?;
        let cache = state_dir.join(CACHE_FILE);
        let settings = follower::Config {
            confirmations: config.confirmations,
            ..follower::Config::default()
        };
        let (follower, used) = Follower::with_cache(client, config.contract, settings, &cache);
        if used {
            tracing::info!(cache = %cache.display(), synced_block = ?follower.status().synced_block, "chain cache loaded");
        }
        let view = Arc::new(RwLock::new(View {
            registry: None,
            status: follower.status().clone(),
        }));
        let shared = Arc::new(Shared {
            follower: Mutex::new(follower),
            view: view.clone(),
            names,
            cache,
        });
        shared.publish(&shared.lock(), true);
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("chain-follower".into())
            .spawn(move || follow(&s, &stop_rx))
            .map_err(Error::Thread)?;
        let funding = key.as_ref().map(FundingKey::address);
        let writes = match key {
            Some(key) => {
                let (tx, rx) = mpsc::sync_channel::<Write>(MAX_QUEUED_WRITES);
                let url = config.rpc.clone();
                std::thread::Builder::new()
                    .name("chain-writer".into())
                    .spawn(move || {
                        while let Ok(w) = rx.recv() {
                            write(&shared, &url, &key, w);
                        }
                    })
                    .map_err(Error::Thread)?;
                Some(tx)
            }
            None => None,
        };
        tracing::info!(rpc = %config.rpc, contract = %config.contract, funding = ?funding, "chain client started");
        Ok(ChainClient {
            config,
            view,
            funding,
            writes,
            _stop: stop_tx,
        })
    }

    /// The current view (a cheap clone of the `Arc`) and its status.
    fn snapshot(&self) -> (Option<Arc<Registry>>, Status) {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        (v.registry.clone(), v.status.clone())
    }

    /// For `metanet status`.
    pub(crate) fn status(&self) -> ChainStatus {
        let (registry, s) = self.snapshot();
        ChainStatus {
            rpc: self.config.rpc.clone(),
            contract: self.config.contract.to_string(),
            chain_id: registry.as_ref().map(|r| r.params().registry.chain_id),
            synced_block: s.synced_block,
            head_block: s.head_block,
            claims: s.claims,
            names: registry.as_ref().map_or(0, |r| r.names().count()),
            stale: s.is_stale(),
            error: s.last_error.clone(),
            last_success: s.last_success.map(unix_secs),
            stale_since: s.stale_since.map(unix_secs),
            funding_account: self.funding.map(|a| a.to_string()),
        }
    }

    /// The registry, or an error that says why there is none yet.
    pub(crate) fn registry(&self) -> Result<(Arc<Registry>, Status), api::Error> {
        match self.snapshot() {
            (Some(r), s) => Ok((r, s)),
            (None, s) => Err(err(
                ErrorKind::Internal,
                &format!(
                    "the chain registry at {} has not been read yet ({}): check that the RPC node {} runs and that the contract address is right",
                    self.config.contract,
                    s.last_error.as_deref().unwrap_or("first round pending"),
                    self.config.rpc
                ),
            )),
        }
    }

    /// Queue a write, or say why it cannot be.
    fn submit(&self, w: Write) {
        let Some(tx) = &self.writes else {
            let _ = w.reply.send(Err(err(
                ErrorKind::BadRequest,
                "this metanetd has no funding key to pay for claims: start it with --chain-key FILE (an EVM account key with ether for gas)",
            )));
            return;
        };
        match tx.try_send(w) {
            Ok(()) => {}
            Err(TrySendError::Full(w)) => {
                let _ = w.reply.send(Err(err(
                    ErrorKind::Timeout,
                    "too many chain operations are in progress: try again in a minute",
                )));
            }
            Err(TrySendError::Disconnected(w)) => {
                let _ = w.reply.send(Err(err(
                    ErrorKind::Internal,
                    "the chain writer stopped: see metanetd's log",
                )));
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Follower> {
        self.follower.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One follower round; saves and publishes when the log changed.
    fn round(&self) -> Result<(), contract::Error> {
        let mut f = self.lock();
        let was_stale = f.status().last_error.is_some();
        let first = f.status().last_success.is_none();
        let result = f.poll();
        let changed = match &result {
            Ok(p) => {
                if was_stale {
                    tracing::info!(synced_block = p.synced_block, "chain node answers again");
                }
                if p.applied > 0 || p.replayed || first {
                    tracing::debug!(
                        applied = p.applied,
                        replayed = p.replayed,
                        synced_block = p.synced_block,
                        "chain log followed"
                    );
                    if let Err(e) = f.save(&self.cache) {
                        tracing::warn!(cache = %self.cache.display(), error = %e, "cannot save the chain cache");
                    }
                    true
                } else {
                    false
                }
            }
            Err(e) => {
                if !was_stale {
                    tracing::warn!(error = %e, "chain node unreachable or faulty: answering from the last synced state (stale)");
                }
                false
            }
        };
        self.publish(&f, changed);
        result.map(|_| ())
    }

    /// Publish the follower's status and, when `changed`, its registry and names.
    fn publish(&self, f: &Follower, changed: bool) {
        let registry = if changed {
            f.registry().cloned().map(Arc::new)
        } else {
            None
        };
        if let Some(r) = &registry {
            let table = r
                .names()
                .filter_map(|(name, _)| match r.resolve(name) {
                    Resolution::Owner(a) => Some((name.as_str().to_owned(), a)),
                    Resolution::Revoked { .. } | Resolution::Unregistered => None,
                })
                .collect();
            *self.names.write().unwrap_or_else(|e| e.into_inner()) = table;
        }
        let mut v = self.view.write().unwrap_or_else(|e| e.into_inner());
        v.status = f.status().clone();
        if registry.is_some() {
            v.registry = registry;
        }
    }
}

/// The follower thread: a round every [`POLL_INTERVAL`] until the handle is dropped.
fn follow(shared: &Shared, stop: &mpsc::Receiver<()>) {
    loop {
        let started = Instant::now();
        let _ = shared.round();
        let rest = POLL_INTERVAL.saturating_sub(started.elapsed());
        match stop.recv_timeout(rest) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The writer thread's work on one job; always answers the request.
fn write(shared: &Shared, url: &str, key: &FundingKey, w: Write) {
    let result = Client::with_timeout(url, RPC_TIMEOUT)
        .map_err(contract::Error::from)
        .map_err(|e| chain_error(&e, url, key))
        .and_then(|client| carry_out(shared, &client, key, &w));
    let _ = w.reply.send(result);
}

fn carry_out(
    shared: &Shared,
    client: &Client,
    key: &FundingKey,
    w: &Write,
) -> Result<Reply, api::Error> {
    let contract = shared.lock().contract();
    let fail = |e: contract::Error| chain_error(&e, client.url(), key);
    let submit = |claim: &[u8]| {
        contract::submit(client, key, &contract, claim, MINE_TIMEOUT)
            .map(|r| r.block_number)
            .map_err(fail)
    };
    match &w.job {
        Submission::Register {
            name,
            commit,
            reveal,
            delay,
        } => {
            let committed = submit(commit)?;
            tracing::info!(%name, block = committed, "name commit mined; waiting the reveal delay");
            wait_for_block(client, committed.saturating_add(*delay)).map_err(fail)?;
            let revealed = submit(reveal)?;
            tracing::info!(%name, block = revealed, "name reveal mined");
            let outcome = outcome_of(shared, reveal, revealed)?;
            settle(outcome, name.as_str())?;
            name_reply(shared, name, &w.locals)
        }
        Submission::Transfer { name, claim } => {
            let block = submit(claim)?;
            settle(outcome_of(shared, claim, block)?, name.as_str())?;
            name_reply(shared, name, &w.locals)
        }
        Submission::Revoke {
            identity,
            address,
            claim,
        } => {
            let block = submit(claim)?;
            settle(outcome_of(shared, claim, block)?, &address.to_string())?;
            tracing::warn!(%identity, %address, block, "identity revoked on chain");
            Ok(Reply::Revoked {
                identity: identity.clone(),
                address: address.to_string(),
                block,
            })
        }
        Submission::Group { name, claim } => {
            let block = submit(claim)?;
            settle(outcome_of(shared, claim, block)?, name.as_str())?;
            let v = shared.view.read().unwrap_or_else(|e| e.into_inner());
            v.registry
                .as_ref()
                .and_then(|r| crate::groups::group_info(r, name, &w.locals, v.status.is_stale()))
                .map(Reply::Group)
                .ok_or_else(|| err(ErrorKind::Internal, "the group vanished from the registry"))
        }
        Submission::Rotate {
            identity,
            from,
            to,
            claim,
        } => {
            let block = submit(claim)?;
            settle(outcome_of(shared, claim, block)?, &from.to_string())?;
            tracing::warn!(%identity, %from, %to, block, "wallet key rotated on chain");
            Ok(Reply::WalletRotated {
                identity: identity.clone(),
                from: from.to_string(),
                address: to.to_string(),
                ipv6: to.ipv6().to_string(),
                block,
            })
        }
    }
}

/// Wait until the node's head reaches `target`, as long as blocks keep coming: fail
/// after [`BLOCK_WAIT`] without a new block.
fn wait_for_block(client: &Client, target: u64) -> Result<(), contract::Error> {
    let mut last = (eth::block_number(client)?, Instant::now());
    loop {
        let head = eth::block_number(client)?;
        if head >= target {
            return Ok(());
        }
        if head > last.0 {
            last = (head, Instant::now());
        } else if last.1.elapsed() >= BLOCK_WAIT {
            return Err(contract::Error::BlockNotReached(target, BLOCK_WAIT));
        }
        std::thread::sleep(POLL_INTERVAL / 4);
    }
}

/// Follow the chain up to `block` and return what the last copy of `claim` did there.
fn outcome_of(shared: &Shared, claim: &[u8], block: u64) -> Result<Outcome, api::Error> {
    let deadline = Instant::now() + MINE_TIMEOUT;
    loop {
        let synced = shared
            .round()
            .ok()
            .and_then(|()| shared.lock().status().synced_block);
        if synced.is_some_and(|s| s >= block) {
            let f = shared.lock();
            return f
                .outcomes(claim)
                .last()
                .map(|(_, o)| (*o).clone())
                .ok_or_else(|| {
                    err(
                        ErrorKind::Internal,
                        &format!("the claim was mined in block {block} but is not in the registry's log: is the contract address right?"),
                    )
                });
        }
        if Instant::now() >= deadline {
            return Err(err(
                ErrorKind::Timeout,
                &format!(
                    "the chain node did not get past block {block} in time: see `metanet status`"
                ),
            ));
        }
        std::thread::sleep(POLL_INTERVAL / 4);
    }
}

/// An applied claim is success; an ignored one is the error the registry gives.
fn settle(outcome: Outcome, subject: &str) -> Result<Effect, api::Error> {
    match outcome {
        Outcome::Applied(e) => Ok(e),
        Outcome::Ignored(why) => {
            let kind = match why {
                Ignored::NameTaken => ErrorKind::AlreadyExists,
                Ignored::SignerRevoked | Ignored::SignerRotated => ErrorKind::Refused,
                Ignored::NotParentOwner | Ignored::NotOwner | Ignored::UnknownName => {
                    ErrorKind::BadRequest
                }
                Ignored::GroupExists | Ignored::AlreadyMember | Ignored::AlreadyAdmin => {
                    ErrorKind::AlreadyExists
                }
                Ignored::UnknownGroup | Ignored::NotMember => ErrorKind::NotFound,
                Ignored::NotAdmin | Ignored::NotGroupAdmin | Ignored::LastAdmin => {
                    ErrorKind::BadRequest
                }
                _ => ErrorKind::Internal,
            };
            Err(err(
                kind,
                &format!("the registry ignored the claim for `{subject}`: {why}"),
            ))
        }
    }
}

fn name_reply(
    shared: &Shared,
    name: &Name,
    locals: &[(String, Address)],
) -> Result<Reply, api::Error> {
    let v = shared.view.read().unwrap_or_else(|e| e.into_inner());
    v.registry
        .as_ref()
        .and_then(|r| name_info(r, name, locals, v.status.is_stale()))
        .map(Reply::Name)
        .ok_or_else(|| err(ErrorKind::Internal, "the name vanished from the registry"))
}

fn chain_error(e: &contract::Error, url: &str, key: &FundingKey) -> api::Error {
    let hint = match e {
        contract::Error::Rpc(r) if r.is_unreachable() => {
            format!("check that the RPC node {url} runs")
        }
        contract::Error::Rpc(_) | contract::Error::Reverted(_) => format!(
            "check that the funding account {} holds ether for gas",
            key.address()
        ),
        contract::Error::BlockNotReached(..) => "the chain makes no new blocks: a development node must mine on its own (anvil --block-time 1)".into(),
        _ => "see `metanet status`".into(),
    };
    let kind = match e {
        contract::Error::Rpc(r) if r.is_unreachable() => ErrorKind::Unreachable,
        contract::Error::NotMined { .. } | contract::Error::BlockNotReached(..) => {
            ErrorKind::Timeout
        }
        _ => ErrorKind::Internal,
    };
    err(kind, &format!("chain: {e}: {hint}"))
}

/// A registered name as the control API shows it.
fn name_info(
    reg: &Registry,
    name: &Name,
    locals: &[(String, Address)],
    stale: bool,
) -> Option<NameInfo> {
    let rec = reg.name(name)?;
    let revoked_block = match reg.resolve(name) {
        Resolution::Revoked { block, .. } => Some(block),
        Resolution::Owner(_) | Resolution::Unregistered => None,
    };
    Some(NameInfo {
        name: name.as_str().into(),
        status: if revoked_block.is_some() {
            NameStatus::Revoked
        } else {
            NameStatus::Registered
        },
        owner: rec.owner.to_string(),
        ipv6: rec.owner.ipv6(),
        identity: locals
            .iter()
            .find(|(_, a)| *a == rec.owner)
            .map(|(n, _)| n.clone()),
        seq: rec.seq,
        registered_block: rec.registered,
        changed_block: rec.changed,
        revoked_block,
        stale,
    })
}

/// Why `address` must not be used (docs/protocol.md §9.6), if it must not.
pub(crate) fn refusal(reg: &Registry, address: &Address, what: &str) -> Option<api::Error> {
    match reg.key_status(address) {
        KeyStatus::Active => None,
        KeyStatus::Revoked { block } => Some(err(
            ErrorKind::Refused,
            &format!(
                "{what} was revoked on chain in block {block} (its key may be compromised): metanet refuses to use it"
            ),
        )),
        KeyStatus::Rotated { to, block } => Some(err(
            ErrorKind::Refused,
            &format!(
                "the key of {what} was rotated to {to} in block {block}: use that address instead"
            ),
        )),
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Daemon {
    /// Chain commands: reads answer now, writes when their claims are applied.
    pub(crate) fn chain_job(&mut self, cmd: controller::ChainRequest, reply: ReplyTo) {
        use controller::ChainRequest as C;
        let result = match cmd {
            C::NameShow { name } => self.name_show(&name),
            C::NameList { mine } => self.name_list(mine),
            C::NameRegister { name, identity } => self.register(&name, identity.as_deref()),
            C::NameTransfer { name, to } => self.transfer(&name, &to),
            C::IdRevoke { name } => self.revoke(name.as_deref()),
            C::Group(g) => self.group_request(g),
            C::RotateWallet { name } => match self.rotate_wallet(name.as_deref()) {
                Ok((job, name)) => {
                    // The answer comes back through the daemon's loop, which adopts
                    // the new key before the client hears of it.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let adopt = self.rotated.clone();
                    tokio::spawn(async move {
                        let result = rx.await.unwrap_or_else(|_| {
                            Err(err(ErrorKind::Internal, "the chain writer stopped"))
                        });
                        let _ = adopt.send((name, result, reply)).await;
                    });
                    return self.queue(job, tx);
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(Queued::Now(r)) => {
                let _ = reply.send(Ok(*r));
            }
            Ok(Queued::Write(job)) => self.queue(job, reply),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// The chain client's status, when configured.
    pub(crate) fn chain_status(&self) -> Option<ChainStatus> {
        self.chain.as_ref().map(ChainClient::status)
    }

    /// The address `target` stands for: an `mn1…` address, or a chain name resolved
    /// through the registry. Revoked and rotated keys are refused (§9.6).
    pub(crate) fn target(&self, target: &Target) -> Result<Address, api::Error> {
        let (address, shown) = self.target_unchecked(target)?;
        if let Some(chain) = &self.chain {
            if let (Some(reg), _) = chain.snapshot() {
                if let Some(e) = refusal(&reg, &address, &shown) {
                    return Err(e);
                }
            }
        }
        Ok(address)
    }

    /// Like [`Daemon::target`] without the refusal (to forget a peer, for instance);
    /// also returns how to name the target in messages.
    pub(crate) fn target_unchecked(
        &self,
        target: &Target,
    ) -> Result<(Address, String), api::Error> {
        let name = match target {
            Target::Address(a) => return Ok((*a, a.to_string())),
            Target::Ipv6(ip) => {
                return Err(err(
                    ErrorKind::BadRequest,
                    &format!("{ip} is an overlay IPv6, not a full address: give the `mn1…` address or a name"),
                ))
            }
            Target::Name(name) => name,
        };
        let text = name.as_str();
        let Some(chain) = &self.chain else {
            return Err(not_configured(&format!(
                "`{text}` is not an address; names"
            )));
        };
        let (reg, status) = chain.registry()?;
        match reg.resolve(name) {
            Resolution::Owner(a) => Ok((a, format!("`{name}` ({a})"))),
            Resolution::Revoked { owner, block } => Err(err(
                ErrorKind::Refused,
                &format!(
                    "`{name}` belongs to {owner}, whose key was revoked on chain in block {block}: metanet refuses to use it"
                ),
            )),
            Resolution::Unregistered => Err(unregistered(name, &status)),
        }
    }

    /// `metanet resolve` by address, name or overlay IPv6: the lookup prefix, and the
    /// full address when known.
    pub(crate) fn lookup_target(
        &self,
        target: &Target,
    ) -> Result<(Ipv6Prefix, Option<Address>), api::Error> {
        if let (Target::Ipv6(_), Some(prefix)) = (target, target.prefix()) {
            return Ok((prefix, None));
        }
        self.target(target).map(|a| (a.ipv6_prefix(), Some(a)))
    }

    /// A record found by overlay IPv6 alone is refused when its key is revoked.
    pub(crate) fn refused(&self, address: &Address) -> Option<api::Error> {
        let (reg, _) = self.chain.as_ref()?.snapshot();
        let reg = reg?;
        refusal(&reg, address, &address.to_string())
    }

    /// Keys the chain revoked are refused by the node (§9.6): their sessions end and
    /// their initiations are dropped from then on. Run from housekeeping against the
    /// current view; each revoked address is handed to the node once.
    pub(crate) fn deny_revoked(&mut self) {
        let Some(chain) = &self.chain else {
            return;
        };
        let (Some(reg), _) = chain.snapshot() else {
            return;
        };
        let new = self.denied.new_among(reg.revoked());
        if new.is_empty() {
            return;
        }
        let peers: std::collections::BTreeSet<Address> =
            self.node.peers().into_iter().map(|p| p.address).collect();
        for address in new {
            let connected = peers.contains(&address);
            let denied = self.node.handle_command(Command::Deny { address });
            match denied {
                Ok(()) => {
                    if connected {
                        tracing::warn!(peer = %address, "peer's key is revoked on chain: session dropped, refused from now on");
                    }
                    self.denied.told(address);
                }
                Err(e) => {
                    tracing::warn!(peer = %address, error = %e, "cannot refuse a revoked key");
                    break;
                }
            }
        }
    }

    pub(crate) fn locals(&self) -> Vec<(String, Address)> {
        self.names
            .iter()
            .filter_map(|(n, l)| Some((n.to_owned(), self.node.identity(l)?.address())))
            .collect()
    }

    pub(crate) fn chain(&self) -> Result<&ChainClient, api::Error> {
        self.chain
            .as_ref()
            .ok_or_else(|| not_configured("names and revocations"))
    }

    fn name_show(&self, text: &str) -> Result<Queued, api::Error> {
        let name = parse_name(text)?;
        let (reg, status) = self.chain()?.registry()?;
        name_info(&reg, &name, &self.locals(), status.is_stale())
            .map(|i| Queued::Now(Box::new(Reply::Name(i))))
            .ok_or_else(|| unregistered(&name, &status))
    }

    fn name_list(&self, mine: bool) -> Result<Queued, api::Error> {
        let (reg, status) = self.chain()?.registry()?;
        let locals = self.locals();
        let names = reg
            .names()
            .filter_map(|(n, _)| name_info(&reg, n, &locals, status.is_stale()))
            .filter(|i| !mine || i.identity.is_some())
            .collect();
        Ok(Queued::Now(Box::new(Reply::Names { names })))
    }

    fn register(&self, text: &str, identity: Option<&str>) -> Result<Queued, api::Error> {
        let name = parse_name(text)?;
        let chain = self.chain()?;
        let (reg, _) = chain.registry()?;
        let local = self.local_named(identity)?;
        let id = self
            .node
            .identity(local)
            .ok_or_else(|| err(ErrorKind::NotFound, "no such identity"))?;
        let me = id.address();
        let who = self.name_of(local);
        if let Some(e) = refusal(&reg, &me, &format!("identity `{who}` ({me})")) {
            return Err(e);
        }
        if let Some(rec) = reg.name(&name) {
            return Err(err(
                ErrorKind::AlreadyExists,
                &if rec.owner == me {
                    format!("`{name}` is already registered to `{who}`")
                } else {
                    format!("`{name}` is already registered to {}", rec.owner)
                },
            ));
        }
        if let Some(parent) = name.parent() {
            if reg.name(&parent).is_none_or(|p| p.owner != me) {
                return Err(err(
                    ErrorKind::BadRequest,
                    &format!(
                        "only the owner of `{parent}` can register `{name}`, and `{who}` does not own it: register `{parent}` first, or use --identity"
                    ),
                ));
            }
        }
        let mut salt = [0u8; 32];
        salt.copy_from_slice(
            &crate::state::random64().map_err(|e| err(ErrorKind::Internal, &e.to_string()))?[..32],
        );
        let salt = Salt(salt);
        let registry = reg.params().registry;
        let seal = |c: &Claim| {
            claim::seal(id, &registry, c).map_err(|e| err(ErrorKind::Internal, &e.to_string()))
        };
        let commit = seal(&Claim::Commit {
            commitment: Commitment::new(&name, &me, &salt),
        })?;
        let reveal = seal(&Claim::Reveal {
            name: name.clone(),
            salt,
        })?;
        tracing::info!(%name, identity = %who, "registering name");
        Ok(Queued::Write(Submission::Register {
            name,
            commit,
            reveal,
            delay: reg.params().min_reveal_delay,
        }))
    }

    fn transfer(&self, text: &str, to: &Target) -> Result<Queued, api::Error> {
        let name = parse_name(text)?;
        let (reg, status) = self.chain()?.registry()?;
        let rec = reg
            .name(&name)
            .ok_or_else(|| unregistered(&name, &status))?;
        if let Some(e) = refusal(&reg, &rec.owner, &format!("the owner of `{name}`")) {
            return Err(e);
        }
        let to = self.target(to)?;
        let Some(local) = self.names.iter().map(|(_, l)| l).find(|l| {
            self.node
                .identity(*l)
                .is_some_and(|i| i.address() == rec.owner)
        }) else {
            return Err(err(
                ErrorKind::BadRequest,
                &format!(
                    "`{name}` belongs to {}, which is not an identity of this metanetd: only its owner can transfer it",
                    rec.owner
                ),
            ));
        };
        if to == rec.owner {
            return Err(err(
                ErrorKind::BadRequest,
                &format!("`{name}` already belongs to {to}"),
            ));
        }
        let id = self
            .node
            .identity(local)
            .ok_or_else(|| err(ErrorKind::NotFound, "no such identity"))?;
        let claim = claim::seal(
            id,
            &reg.params().registry,
            &Claim::Transfer {
                name: name.clone(),
                seq: rec.seq,
                new_owner: to,
            },
        )
        .map_err(|e| err(ErrorKind::Internal, &e.to_string()))?;
        tracing::info!(%name, %to, "transferring name");
        Ok(Queued::Write(Submission::Transfer { name, claim }))
    }

    fn revoke(&self, identity: Option<&str>) -> Result<Queued, api::Error> {
        let (reg, _) = self.chain()?.registry()?;
        let local = self.local_named(identity)?;
        let who = self.name_of(local);
        let id = self
            .node
            .identity(local)
            .ok_or_else(|| err(ErrorKind::NotFound, "no such identity"))?;
        if let KeyStatus::Revoked { block } = reg.key_status(&id.address()) {
            return Err(err(
                ErrorKind::AlreadyExists,
                &format!("identity `{who}` was already revoked in block {block}"),
            ));
        }
        let claim = claim::seal(id, &reg.params().registry, &Claim::Revocation)
            .map_err(|e| err(ErrorKind::Internal, &e.to_string()))?;
        tracing::warn!(identity = %who, address = %id.address(), "revoking identity on chain");
        Ok(Queued::Write(Submission::Revoke {
            identity: who,
            address: id.address(),
            claim,
        }))
    }

    /// `id rotate --wallet`: a new wallet (and Noise) key for a local identity, saved
    /// as its pending key before anything is submitted, and the rotation claim the old
    /// key signs with the new key's acceptance inside (§9.3.4). A pending key left by
    /// an earlier attempt is reused: that attempt's claim may still be mined.
    fn rotate_wallet(
        &mut self,
        identity: Option<&str>,
    ) -> Result<(Submission, String), api::Error> {
        let (reg, _) = self.chain()?.registry()?;
        let local = self.local_named(identity)?;
        let who = self.name_of(local);
        if self.attachments.holds(&who) {
            // Its address is the namespace's interface address: it cannot move under it.
            return Err(err(
                ErrorKind::BadRequest,
                &format!("identity `{who}` is attached to a namespace: detach it before a wallet rotation (its address changes)"),
            ));
        }
        let internal = |e: &dyn std::fmt::Display| err(ErrorKind::Internal, &e.to_string());
        let id = self
            .node
            .identity(local)
            .ok_or_else(|| err(ErrorKind::NotFound, "no such identity"))?;
        if let Some(e) = refusal(&reg, &id.address(), &format!("identity `{who}`")) {
            return Err(e);
        }
        let new = match self.state.read_pending(&who).map_err(|e| internal(&e))? {
            Some(pending) => pending,
            None => {
                let fresh = metanet_proto::Identity::generate(
                    &crate::state::random64().map_err(|e| internal(&e))?,
                );
                self.state
                    .write_pending(&who, &fresh)
                    .map_err(|e| internal(&e))?;
                fresh
            }
        };
        let registry = &reg.params().registry;
        let rotation =
            Claim::rotation(&new, registry, &id.public_key()).map_err(|e| internal(&e))?;
        let claim = claim::seal(id, registry, &rotation).map_err(|e| internal(&e))?;
        tracing::warn!(identity = %who, from = %id.address(), to = %new.address(), "rotating the wallet key on chain");
        self.pending_rotations.insert(who.clone());
        Ok((
            Submission::Rotate {
                identity: who.clone(),
                from: id.address(),
                to: new.address(),
                claim,
            },
            who,
        ))
    }

    /// Adopt the pending key of identity `name` once the chain shows its old address
    /// rotated to it: the key file is replaced, the node serves the new identity (its
    /// peers handshake again with it), the TUN carries the new address and the record
    /// is published. Returns whether anything changed. Also run from housekeeping, so
    /// a rotation mined after the daemon stopped or timed out is still adopted.
    pub(crate) fn adopt_rotation(&mut self, name: &str) -> Result<bool, api::Error> {
        let internal = |e: &dyn std::fmt::Display| err(ErrorKind::Internal, &e.to_string());
        let Some(reg) = self.chain.as_ref().and_then(|c| c.snapshot().0) else {
            return Ok(false);
        };
        let Some(new) = self.state.read_pending(name).map_err(|e| internal(&e))? else {
            return Ok(false);
        };
        let local = self.local_named(Some(name))?;
        let old = self
            .node
            .identity(local)
            .map(|i| i.address())
            .ok_or_else(|| err(ErrorKind::NotFound, "no such identity"))?;
        match reg.key_status(&old) {
            KeyStatus::Active => return Ok(false),
            KeyStatus::Rotated { to, .. } if to == new.address() => {}
            other => {
                tracing::warn!(identity = %name, status = ?other, "the chain did not rotate this key to the pending one: discarding it");
                self.state.discard_pending(name).map_err(|e| internal(&e))?;
                self.pending_rotations.remove(name);
                return Ok(false);
            }
        }
        self.state.adopt_pending(name).map_err(|e| internal(&e))?;
        self.pending_rotations.remove(name);
        let primary = self.names.is_default_name(name);
        let (tun, new_ip, old_ip) = (&self.opts.tun, new.address().ipv6(), old.ipv6());
        if primary {
            // The default identity's address carries the fd00::/8 route (and perhaps the
            // DNS view): the new one joins it, the old one stays, deprecated, until the
            // next start.
            crate::sys::set_address(tun, new_ip, 8, true)
                .and_then(|()| crate::sys::set_address(tun, old_ip, 8, false))
                .map_err(|e| internal(&e))?;
        } else {
            crate::sys::add_deprecated_address(tun, new_ip).map_err(|e| internal(&e))?;
            let _ = self.tun.remove_address_v6(old_ip, 128);
        }
        self.replace_identity(local, new)?;
        self.withdraw(name, old);
        self.refilter();
        self.publish(name, true);
        tracing::warn!(identity = %name, from = %old, to = %new_ip, "wallet key rotated: serving the new address");
        Ok(true)
    }

    /// The chain writer's answer to `id rotate --wallet`: adopt, then answer.
    pub(crate) fn finish_rotation(
        &mut self,
        name: &str,
        result: Result<Reply, api::Error>,
        reply: ReplyTo,
    ) {
        let result = result.and_then(|r| self.adopt_rotation(name).map(|_| r));
        let _ = reply.send(result);
    }

    /// Housekeeping: adopt rotations whose claims were applied while nobody waited.
    pub(crate) fn adopt_rotations(&mut self) {
        if self.chain.is_none() {
            return;
        }
        // Only identities with a pending key (written by `id rotate --wallet`, or found
        // at start-up): a host with thousands of identities stats none of the others.
        let names: Vec<String> = self.pending_rotations.iter().cloned().collect();
        for name in names {
            if !self.state.has_pending(&name) || !self.names.contains(&name) {
                self.pending_rotations.remove(&name);
                continue;
            }
            if let Err(e) = self.adopt_rotation(&name) {
                tracing::warn!(identity = %name, error = %e.message, "cannot adopt the rotated wallet key");
            }
        }
    }

    pub(crate) fn queue(&self, job: Submission, reply: ReplyTo) {
        let w = Write {
            job,
            locals: self.locals(),
            reply,
        };
        match &self.chain {
            Some(chain) => chain.submit(w),
            None => {
                let _ = w.reply.send(Err(not_configured("names and revocations")));
            }
        }
    }
}

pub(crate) fn parse_name(text: &str) -> Result<Name, api::Error> {
    Name::parse(text.trim()).map_err(|e| {
        err(
            ErrorKind::BadRequest,
            &format!("bad name `{}`: {e}", text.trim()),
        )
    })
}

fn not_configured(what: &str) -> api::Error {
    err(
        ErrorKind::BadRequest,
        &format!(
            "{what} need the chain, and this metanetd has none configured: start it with --chain-rpc URL --chain-contract ADDR (see `metanet chain deploy`)"
        ),
    )
}

fn unregistered(name: &Name, status: &Status) -> api::Error {
    let synced = status
        .synced_block
        .map_or("not synced yet".to_owned(), |b| {
            format!("synced to block {b}")
        });
    let stale = match &status.last_error {
        Some(e) => format!("; the chain node is unreachable, the data may be stale: {e}"),
        None => String::new(),
    };
    err(
        ErrorKind::NotFound,
        &format!("no name `{name}` on chain ({synced}{stale}): register it with `metanet name register {name}`"),
    )
}
