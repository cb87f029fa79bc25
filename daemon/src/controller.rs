//! What the control side decides, without IO: where a control request goes, which
//! local identity a name means, which `connect` requests are still waiting and what
//! the node's events answer them with, and which revoked keys the node has been told.
//!
//! Everything here is plain state and functions of it: no sockets, no threads, no
//! clock (times are passed in), so it is unit-tested without root or namespaces. The
//! daemon's loop (`lib.rs`) feeds it and carries out what it answers.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use metanet_chain::registry::GroupChange;
use metanet_proto::address::Ipv6Prefix;
use metanet_proto::control::{self as api, ErrorKind, PeerInfo, Reply};
use metanet_proto::node::{self, Event, LocalId};
use metanet_proto::record::PeerRecord;
use metanet_proto::{Address, Target};

/// A control request, sorted by where it is carried out: [`route`] is the one place
/// that decides, and each part is matched exhaustively by its handler (no arm that
/// cannot run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Routed {
    /// Answered at once from the control side's state and the node.
    Local(LocalRequest),
    /// Needs the DHT registry first (a lookup), answered when it returns.
    Registry(RegistryRequest),
    /// Reads the chain view, or submits a claim and is answered once it is applied.
    Chain(ChainRequest),
    /// Network namespaces attached to identities (answered at once).
    Attach(AttachRequest),
}

/// Requests about attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttachRequest {
    Attach {
        netns: String,
        identity: String,
        interface: Option<String>,
        container_id: Option<String>,
        network: Option<String>,
        ephemeral: bool,
    },
    Detach {
        identity: Option<String>,
        container_id: Option<String>,
        network: Option<String>,
        remove_identity: bool,
    },
    List,
}

/// Requests answered at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocalRequest {
    Status,
    PolicyShow,
    Peers,
    RelayStatus,
    IdList,
    IdShow {
        name: Option<String>,
    },
    IdNew {
        name: String,
    },
    IdRemove {
        name: String,
    },
    IdImport {
        name: String,
        secret_hex: String,
    },
    IdExport {
        name: String,
    },
    /// A new Noise key under the same wallet key.
    IdRotate {
        name: Option<String>,
    },
    /// Connect at a known endpoint.
    ConnectAt {
        address: Target,
        endpoint: SocketAddr,
        identity: Option<String>,
    },
    Disconnect {
        address: Target,
        identity: Option<String>,
    },
}

/// Requests that look the registry up first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RegistryRequest {
    /// Connect where the registry says the peer is.
    Connect {
        address: Target,
        identity: Option<String>,
    },
    Resolve {
        target: Target,
    },
}

/// Requests about the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChainRequest {
    NameShow {
        name: String,
    },
    NameList {
        mine: bool,
    },
    NameRegister {
        name: String,
        identity: Option<String>,
    },
    NameTransfer {
        name: String,
        to: Target,
    },
    IdRevoke {
        name: Option<String>,
    },
    /// A new wallet key, recorded as a rotation claim.
    RotateWallet {
        name: Option<String>,
    },
    /// Groups on chain.
    Group(GroupRequest),
}

/// Requests about groups (docs/protocol.md §9.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupRequest {
    Create {
        name: String,
        identity: Option<String>,
    },
    /// Add, remove, make admin or not (`change`).
    Change {
        name: String,
        member: Target,
        change: metanet_chain::registry::GroupChange,
        identity: Option<String>,
    },
    List {
        mine: bool,
    },
    Show {
        name: String,
    },
    Log {
        name: String,
    },
}

/// Sort `command` by where it is carried out.
pub(crate) fn route(command: api::Command) -> Routed {
    use api::Command as C;
    match command {
        C::Status => Routed::Local(LocalRequest::Status),
        C::Peers => Routed::Local(LocalRequest::Peers),
        C::RelayStatus => Routed::Local(LocalRequest::RelayStatus),
        C::PolicyShow => Routed::Local(LocalRequest::PolicyShow),
        C::IdList => Routed::Local(LocalRequest::IdList),
        C::IdShow { name } => Routed::Local(LocalRequest::IdShow { name }),
        C::IdNew { name } => Routed::Local(LocalRequest::IdNew { name }),
        C::IdRemove { name } => Routed::Local(LocalRequest::IdRemove { name }),
        C::IdImport { name, secret_hex } => {
            Routed::Local(LocalRequest::IdImport { name, secret_hex })
        }
        C::IdExport { name } => Routed::Local(LocalRequest::IdExport { name }),
        C::IdRotate {
            name,
            wallet: false,
        } => Routed::Local(LocalRequest::IdRotate { name }),
        C::IdRotate { name, wallet: true } => Routed::Chain(ChainRequest::RotateWallet { name }),
        C::Connect {
            address,
            endpoint: Some(endpoint),
            identity,
        } => Routed::Local(LocalRequest::ConnectAt {
            address,
            endpoint,
            identity,
        }),
        C::Connect {
            address,
            endpoint: None,
            identity,
        } => Routed::Registry(RegistryRequest::Connect { address, identity }),
        C::Disconnect { address, identity } => {
            Routed::Local(LocalRequest::Disconnect { address, identity })
        }
        C::Resolve { target } => Routed::Registry(RegistryRequest::Resolve { target }),
        C::NameRegister { name, identity } => {
            Routed::Chain(ChainRequest::NameRegister { name, identity })
        }
        C::NameTransfer { name, to } => Routed::Chain(ChainRequest::NameTransfer { name, to }),
        C::NameShow { name } => Routed::Chain(ChainRequest::NameShow { name }),
        C::NameList { mine } => Routed::Chain(ChainRequest::NameList { mine }),
        C::IdRevoke { name } => Routed::Chain(ChainRequest::IdRevoke { name }),
        C::Attach {
            netns,
            identity,
            interface,
            container_id,
            network,
            ephemeral,
        } => Routed::Attach(AttachRequest::Attach {
            netns,
            identity,
            interface,
            container_id,
            network,
            ephemeral,
        }),
        C::Detach {
            identity,
            container_id,
            network,
            remove_identity,
        } => Routed::Attach(AttachRequest::Detach {
            identity,
            container_id,
            network,
            remove_identity,
        }),
        C::Attachments => Routed::Attach(AttachRequest::List),
        C::GroupCreate { name, identity } => {
            Routed::Chain(ChainRequest::Group(GroupRequest::Create { name, identity }))
        }
        C::GroupAdd {
            name,
            member,
            identity,
        } => group_change(name, member, GroupChange::Added, identity),
        C::GroupRemove {
            name,
            member,
            identity,
        } => group_change(name, member, GroupChange::Removed, identity),
        C::GroupAdmin {
            name,
            member,
            remove,
            identity,
        } => {
            let change = if remove {
                GroupChange::AdminRemoved
            } else {
                GroupChange::AdminAdded
            };
            group_change(name, member, change, identity)
        }
        C::GroupList { mine } => Routed::Chain(ChainRequest::Group(GroupRequest::List { mine })),
        C::GroupShow { name } => Routed::Chain(ChainRequest::Group(GroupRequest::Show { name })),
        C::GroupLog { name } => Routed::Chain(ChainRequest::Group(GroupRequest::Log { name })),
    }
}

fn group_change(
    name: String,
    member: Target,
    change: GroupChange,
    identity: Option<String>,
) -> Routed {
    Routed::Chain(ChainRequest::Group(GroupRequest::Change {
        name,
        member,
        change,
        identity,
    }))
}

/// The local identities by name, in order: the first is the default identity. Lookups
/// by name or id are map lookups (a host may hold thousands of identities).
#[derive(Debug, Default)]
pub(crate) struct Names {
    entries: Vec<(String, LocalId)>,
    by_name: HashMap<String, LocalId>,
    by_local: HashMap<LocalId, String>,
}

impl Names {
    /// The identities the daemon started with (the default first).
    pub(crate) fn new(entries: Vec<(String, LocalId)>) -> Self {
        let mut names = Names::default();
        for (name, local) in entries {
            names.push(name, local);
        }
        names
    }

    /// The local identity `name` means (`None`: the default identity).
    pub(crate) fn local(&self, name: Option<&str>) -> Result<LocalId, api::Error> {
        match name {
            None => self
                .entries
                .first()
                .map(|(_, l)| *l)
                .ok_or_else(|| error(ErrorKind::NotFound, "no identity")),
            Some(n) => self.by_name.get(n).copied().ok_or_else(|| {
                error(
                    ErrorKind::NotFound,
                    &format!("no identity named `{n}`: see `metanet id list`"),
                )
            }),
        }
    }

    /// The name of local identity `local` (empty if it has none).
    pub(crate) fn name_of(&self, local: LocalId) -> String {
        self.by_local.get(&local).cloned().unwrap_or_default()
    }

    /// Whether `local` is the default identity.
    pub(crate) fn is_default(&self, local: LocalId) -> bool {
        self.entries.first().is_some_and(|(_, l)| *l == local)
    }

    /// Whether `name` is the default identity's name.
    pub(crate) fn is_default_name(&self, name: &str) -> bool {
        self.entries.first().is_some_and(|(n, _)| n == name)
    }

    /// Whether an identity is called `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// A new identity, after the others (a name already there is moved to the end).
    pub(crate) fn push(&mut self, name: String, local: LocalId) {
        self.remove(&name);
        self.by_name.insert(name.clone(), local);
        self.by_local.insert(local, name.clone());
        self.entries.push((name, local));
    }

    /// Forget identity `name`.
    pub(crate) fn remove(&mut self, name: &str) {
        if let Some(local) = self.by_name.remove(name) {
            self.by_local.remove(&local);
            self.entries.retain(|(n, _)| n != name);
        }
    }

    /// The identity once `old`, under its name and in its place, is now `new`.
    pub(crate) fn replace(&mut self, old: LocalId, new: LocalId) {
        let Some(name) = self.by_local.remove(&old) else {
            return;
        };
        self.by_name.insert(name.clone(), new);
        self.by_local.insert(new, name);
        for entry in self.entries.iter_mut().filter(|(_, l)| *l == old) {
            entry.1 = new;
        }
    }

    /// How many identities there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every (name, id), the default first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, LocalId)> {
        self.entries.iter().map(|(n, l)| (n.as_str(), *l))
    }

    /// Every name, the default first.
    pub(crate) fn names(&self) -> Vec<String> {
        self.entries.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// A `connect` request waiting for the node to report its outcome.
#[derive(Debug)]
pub(crate) struct PendingConnect<R> {
    pub local: LocalId,
    pub address: Address,
    /// What the answer says when the session is not up by `until`.
    pub peer: PeerInfo,
    pub until: Instant,
    pub reply: R,
}

/// What answers a waiting `connect`: the session is up, or the node gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Up,
    Failed(api::Error),
}

/// `connect` requests waiting for their session (`R`: where the answer goes).
#[derive(Debug)]
pub(crate) struct PendingConnects<R> {
    waiting: Vec<PendingConnect<R>>,
}

impl<R> Default for PendingConnects<R> {
    fn default() -> Self {
        PendingConnects {
            waiting: Vec::new(),
        }
    }
}

impl<R> PendingConnects<R> {
    /// Wait for the session `peer` describes, until `now + wait`.
    pub(crate) fn push(
        &mut self,
        local: LocalId,
        address: Address,
        peer: PeerInfo,
        now: Instant,
        wait: Duration,
        reply: R,
    ) {
        self.waiting.push(PendingConnect {
            local,
            address,
            peer,
            until: now + wait,
            reply,
        });
    }

    /// The requests `event` decides, with their outcome.
    pub(crate) fn settle(&mut self, event: &Event) -> Vec<(PendingConnect<R>, Outcome)> {
        let Some((local, address, outcome)) = outcome_of(event) else {
            return Vec::new();
        };
        self.take(|w| w.local == local && w.address == address)
            .into_iter()
            .map(|w| (w, outcome.clone()))
            .collect()
    }

    /// The requests that waited until `now`: answered as still connecting.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<PendingConnect<R>> {
        self.take(|w| w.until <= now)
    }

    /// When the next request expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.waiting.iter().map(|w| w.until).min()
    }

    /// How many wait.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    fn take(&mut self, pick: impl Fn(&PendingConnect<R>) -> bool) -> Vec<PendingConnect<R>> {
        let (picked, rest) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(pick);
        self.waiting = rest;
        picked
    }
}

/// What `event` says about connects to its peer, if anything.
fn outcome_of(event: &Event) -> Option<(LocalId, Address, Outcome)> {
    match event {
        Event::PeerUp { local, address, .. } => Some((*local, *address, Outcome::Up)),
        Event::ConnectFailed {
            local,
            address,
            endpoint,
        } => Some((
            *local,
            *address,
            Outcome::Failed(error(
                ErrorKind::Unreachable,
                &format!(
                    "no valid record for {address} from {endpoint} after {} requests: \
                     no answer for this address came from there; check the address, the \
                     endpoint (and that UDP reaches it), and that metanetd runs there",
                    node::PROBE_ATTEMPTS
                ),
            )),
        )),
        Event::RelayRefused {
            local,
            address,
            reason,
        } => Some((
            *local,
            *address,
            Outcome::Failed(error(
                ErrorKind::Unreachable,
                &format!(
                    "the relay refused to forward to {address} ({}): {}",
                    reason.as_str(),
                    match reason {
                        metanet_proto::signal::RefuseReason::NoReservation =>
                            "the peer holds no reservation there",
                        metanet_proto::signal::RefuseReason::SessionLimit =>
                            "this identity relays to as many peers as the relay allows",
                        metanet_proto::signal::RefuseReason::Full =>
                            "the relay holds as many reservations as it allows",
                    }
                ),
            )),
        )),
        Event::HandshakeFailed { local, address } => Some((
            *local,
            *address,
            Outcome::Failed(error(
                ErrorKind::Unreachable,
                &format!("handshake with {address} gave up: no answer from its endpoint"),
            )),
        )),
        _ => None,
    }
}

/// The revoked keys the node has been told to refuse.
#[derive(Debug, Default)]
pub(crate) struct Denied {
    told: BTreeSet<Address>,
}

impl Denied {
    /// Of the `revoked` addresses, those the node has not been told of yet.
    pub(crate) fn new_among<'a>(
        &self,
        revoked: impl IntoIterator<Item = &'a Address>,
    ) -> Vec<Address> {
        revoked
            .into_iter()
            .filter(|a| !self.told.contains(*a))
            .copied()
            .collect()
    }

    /// The node refuses `address` now.
    pub(crate) fn told(&mut self, address: Address) {
        self.told.insert(address);
    }
}

/// Most records the registry cache holds.
pub(crate) const RECORD_CACHE: usize = 8192;

/// A verified record from the registry, and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub record: PeerRecord,
    pub source: String,
}

/// Verified records by overlay prefix, until they expire (bounded: when full, expired
/// records go first, then the one that expires soonest).
#[derive(Debug)]
pub(crate) struct RecordCache {
    entries: HashMap<Ipv6Prefix, Cached>,
    cap: usize,
}

impl Default for RecordCache {
    fn default() -> Self {
        RecordCache::with_capacity(RECORD_CACHE)
    }
}

impl RecordCache {
    /// A cache of at most `cap` records.
    pub(crate) fn with_capacity(cap: usize) -> Self {
        RecordCache {
            entries: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// The record for `prefix` if it is still valid at Unix second `now` (an expired
    /// one is forgotten).
    pub(crate) fn get(&mut self, prefix: &Ipv6Prefix, now: u64) -> Option<&Cached> {
        if self.entries.get(prefix)?.record.not_after <= now {
            self.entries.remove(prefix);
            return None;
        }
        self.entries.get(prefix)
    }

    /// Keep `record` for `prefix`.
    pub(crate) fn insert(&mut self, prefix: Ipv6Prefix, cached: Cached, now: u64) {
        if self.entries.len() >= self.cap && !self.entries.contains_key(&prefix) {
            self.entries.retain(|_, c| c.record.not_after > now);
            if self.entries.len() >= self.cap {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, c)| c.record.not_after)
                    .map(|(p, _)| *p);
                if let Some(p) = soonest {
                    self.entries.remove(&p);
                }
            }
        }
        self.entries.insert(prefix, cached);
    }

    /// Forget the record for `prefix`; whether there was one.
    pub(crate) fn remove(&mut self, prefix: &Ipv6Prefix) -> bool {
        self.entries.remove(prefix).is_some()
    }

    /// How many records are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A control error of `kind`.
pub(crate) fn error(kind: ErrorKind, message: &str) -> api::Error {
    api::Error {
        kind,
        message: message.into(),
    }
}

/// The answer for a `connect` that waited: the session's state now, or the failure.
pub(crate) fn connect_answer(
    outcome: Outcome,
    now: Option<PeerInfo>,
    then: PeerInfo,
) -> Result<Reply, api::Error> {
    match outcome {
        Outcome::Up => Ok(Reply::Connected(now.unwrap_or(then))),
        Outcome::Failed(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn address(seed: u8) -> Address {
        metanet_proto::Identity::generate(&[seed; 64]).address()
    }

    fn peer(a: Address) -> PeerInfo {
        PeerInfo {
            identity: "default".into(),
            address: a.to_string(),
            ipv6: a.ipv6(),
            endpoint: None,
            last_handshake: None,
            connected: false,
            rx_bytes: 0,
            tx_bytes: 0,
            rtt_us: None,
            cipher: None,
            pq: None,
            path: String::new(),
        }
    }

    #[test]
    fn every_command_has_one_route() {
        use api::Command as C;
        let t = metanet_proto::Target::from(address(1));
        let e: SocketAddr = "198.18.0.1:51820".parse().unwrap();
        let connect = |endpoint| C::Connect {
            address: t.clone(),
            endpoint,
            identity: None,
        };
        assert_eq!(
            route(connect(None)),
            Routed::Registry(RegistryRequest::Connect {
                address: t.clone(),
                identity: None
            })
        );
        assert_eq!(
            route(connect(Some(e))),
            Routed::Local(LocalRequest::ConnectAt {
                address: t.clone(),
                endpoint: e,
                identity: None
            })
        );
        assert!(matches!(
            route(C::Resolve { target: t.clone() }),
            Routed::Registry(RegistryRequest::Resolve { .. })
        ));
        assert!(matches!(
            route(C::NameList { mine: true }),
            Routed::Chain(ChainRequest::NameList { mine: true })
        ));
        let rotate = |wallet| C::IdRotate { name: None, wallet };
        assert_eq!(
            route(rotate(true)),
            Routed::Chain(ChainRequest::RotateWallet { name: None })
        );
        assert_eq!(
            route(rotate(false)),
            Routed::Local(LocalRequest::IdRotate { name: None })
        );
        assert!(matches!(
            route(C::IdRevoke { name: None }),
            Routed::Chain(_)
        ));
        assert_eq!(route(C::Status), Routed::Local(LocalRequest::Status));
    }

    #[test]
    fn names_resolve_the_default_and_say_what_is_missing() {
        let mut n = Names::new(vec![("default".into(), LocalId(0))]);
        n.push("web".into(), LocalId(1));
        assert_eq!(n.local(None).unwrap(), LocalId(0));
        assert_eq!(n.local(Some("web")).unwrap(), LocalId(1));
        let e = n.local(Some("nope")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("metanet id list"), "{}", e.message);
        assert!(n.is_default(LocalId(0)) && !n.is_default(LocalId(1)));
        // A rotation keeps the name and the place.
        n.replace(LocalId(0), LocalId(7));
        assert_eq!(n.local(None).unwrap(), LocalId(7));
        assert_eq!(n.name_of(LocalId(7)), "default");
        assert_eq!(n.name_of(LocalId(0)), "");
        n.remove("web");
        assert_eq!(n.len(), 1);
        assert!(!n.contains("web"));
        assert!(Names::default().local(None).is_err());
    }

    #[test]
    fn connects_are_answered_by_their_own_peer_event_or_expire() {
        let (a, b) = (address(1), address(2));
        let t0 = Instant::now();
        let mut p = PendingConnects::default();
        p.push(LocalId(0), a, peer(a), t0, Duration::from_secs(20), "a");
        p.push(
            LocalId(1),
            a,
            peer(a),
            t0,
            Duration::from_secs(20),
            "a as 1",
        );
        p.push(LocalId(0), b, peer(b), t0, Duration::from_secs(5), "b");
        assert_eq!(p.next_expiry(), Some(t0 + Duration::from_secs(5)));
        let e: SocketAddr = "198.18.0.2:51820".parse().unwrap();
        // Another identity's session answers nothing of identity 0's.
        let up = Event::PeerUp {
            local: LocalId(1),
            address: a,
            endpoint: e,
        };
        let done = p.settle(&up);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0.reply, "a as 1");
        assert_eq!(done[0].1, Outcome::Up);
        // A failure answers with the kind a user can act on.
        let failed = Event::HandshakeFailed {
            local: LocalId(0),
            address: a,
        };
        let done = p.settle(&failed);
        assert_eq!(done.len(), 1);
        let Outcome::Failed(err) = &done[0].1 else {
            panic!("not a failure")
        };
        assert_eq!(err.kind, ErrorKind::Unreachable);
        // Events about nobody waiting, and unrelated events, answer nothing.
        assert!(p.settle(&failed).is_empty());
        assert!(p
            .settle(&Event::LookupNeeded {
                local: LocalId(0),
                ipv6: b.ipv6()
            })
            .is_empty());
        // b expires at 5 s, not before.
        assert!(p.expire(t0 + Duration::from_secs(4)).is_empty());
        let expired = p.expire(t0 + Duration::from_secs(5));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].reply, "b");
        assert_eq!(p.len(), 0);
        assert_eq!(p.next_expiry(), None);
    }

    #[test]
    fn the_node_is_told_of_each_revoked_key_once() {
        let (a, b) = (address(1), address(2));
        let mut d = Denied::default();
        assert_eq!(d.new_among([&a, &b]), vec![a, b]);
        d.told(a);
        assert_eq!(d.new_among([&a, &b]), vec![b]);
        d.told(b);
        assert!(d.new_among([&a, &b]).is_empty());
    }

    #[test]
    fn a_waiting_connect_answers_with_the_session_or_the_failure() {
        let a = address(3);
        let mut now = peer(a);
        now.connected = true;
        let r = connect_answer(Outcome::Up, Some(now.clone()), peer(a)).unwrap();
        assert_eq!(r, Reply::Connected(now));
        let r = connect_answer(Outcome::Up, None, peer(a)).unwrap();
        assert_eq!(r, Reply::Connected(peer(a)));
        let e = error(ErrorKind::Timeout, "x");
        assert_eq!(
            connect_answer(Outcome::Failed(e.clone()), None, peer(a)),
            Err(e)
        );
    }

    #[test]
    fn the_record_cache_forgets_expired_records_and_stays_bounded() {
        let record = |seed: u8, not_after: u64| {
            let id = metanet_proto::Identity::generate(&[seed; 64]);
            let r = PeerRecord::new(&id, vec![], vec![], 1, not_after);
            (
                id.address().ipv6_prefix(),
                Cached {
                    record: r,
                    source: "dht".into(),
                },
            )
        };
        let mut c = RecordCache::with_capacity(2);
        let (p1, r1) = record(1, 100);
        let (p2, r2) = record(2, 200);
        let (p3, r3) = record(3, 300);
        c.insert(p1, r1, 10);
        c.insert(p2, r2, 10);
        assert!(c.get(&p1, 99).is_some());
        // Expired at its not_after, and forgotten.
        assert!(c.get(&p1, 100).is_none());
        assert_eq!(c.len(), 1);
        c.insert(p1, record(1, 100).1, 10);
        // Full: the one that expires soonest (p1) makes room.
        c.insert(p3, r3, 10);
        assert_eq!(c.len(), 2);
        assert!(c.get(&p1, 10).is_none());
        assert!(c.get(&p2, 10).is_some() && c.get(&p3, 10).is_some());
        assert!(c.remove(&p2));
        assert!(!c.remove(&p2));
    }
}
