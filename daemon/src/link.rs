//! The control task's link to the node, which the data-plane thread owns.
//!
//! Nothing else holds the [`Node`](metanet_proto::node::Node): the control task (control
//! requests, the registry, the chain, signals) sends it typed [`Request`]s over one
//! bounded channel and signals the data plane's eventfd; the data plane serves them
//! between batches and answers each query on its own one-shot channel. Node events come
//! back the other way, on the bounded notes channel (`dataplane::Note`). There is no lock
//! around the node, so nothing the control side does (DHT, chain, signing, DNS) can stall
//! a packet: the data plane never waits for the control task.
//!
//! The control task keeps its own copy of the local identities (it is the only one that
//! adds or removes them), so reading an identity needs no round trip; peers and counters
//! are a [`Snapshot`] the data plane takes when asked.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metanet_proto::node::{Command, CommandError, LocalId, PeerStatus, Stats};
use metanet_proto::{Address, Identity};

use crate::batch::Counters;
use crate::sys::EventFd;

/// Requests queued for the data plane at most; a full queue makes the control task
/// wait (bounded by [`ANSWER_WAIT`]), never the data plane.
pub(crate) const QUEUE: usize = 1024;
/// Longest the control task waits for the data plane to take or answer a request.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// A one-shot answer channel (capacity one, so the data plane never blocks on it).
pub(crate) type Answer<T> = SyncSender<T>;

/// What the control task asks of the node.
#[derive(Debug)]
pub(crate) enum Request {
    /// Run a node command; answered when `answer` is given.
    Command(Command, Option<Answer<Result<(), CommandError>>>),
    /// Add a local identity; answered with its id.
    AddIdentity(Identity, Answer<LocalId>),
    /// Remove a local identity and every peer it has.
    RemoveIdentity(LocalId),
    /// Every peer, the node's counters and the data plane's.
    Snapshot(Answer<Snapshot>),
    /// Read attachment TUN `dev` for the identity at `ip`; answered with its slot.
    Attach {
        ip: std::net::Ipv6Addr,
        dev: Arc<crate::sys::TunFd>,
        answer: Answer<Option<(usize, u64)>>,
    },
    /// Stop reading an attachment's slot, if it still holds that generation (its TUN
    /// is closed once nothing holds it).
    Detach(usize, u64),
    /// One identity's access policy and its counters, and its closed groups.
    Policy {
        local: LocalId,
        answer: Answer<Option<PolicyState>>,
    },
    /// One peer's state.
    Peer {
        local: LocalId,
        address: Address,
        answer: Answer<Option<PeerStatus>>,
    },
}

/// Peers and counters as the data plane saw them when it answered.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub peers: Vec<PeerStatus>,
    pub stats: Stats,
    pub data: Counters,
    /// The relay's state, when this node is one.
    pub relay: Option<metanet_proto::node::RelayStatus>,
    /// The relays the identities use.
    pub relays: Vec<metanet_proto::node::RelayUseStatus>,
    /// What the node has seen of its own endpoint.
    pub nat: metanet_proto::node::NatStatus,
    /// What each TUN slot moved (0: the host's).
    pub slots: Vec<(usize, crate::dataplane::SlotStats)>,
}

/// An identity's access policy, its counters, and its closed groups' network keys.
pub(crate) type PolicyState = (
    metanet_proto::node::Policy,
    metanet_proto::node::PolicyCounts,
    Vec<metanet_proto::node::NetworkKeyStatus>,
);

/// The data plane did not take or answer a request in time (or has stopped).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the data plane did not answer within {ANSWER_WAIT:?} (see the daemon's log)")]
pub(crate) struct Unanswered;

/// A node command that did not run: refused by the node, or never answered.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub(crate) enum CommandFailed {
    #[error(transparent)]
    Refused(#[from] CommandError),
    #[error(transparent)]
    Unanswered(#[from] Unanswered),
}

/// A second copy of `id` (the control task's, beside the node's).
pub(crate) fn duplicate(id: &Identity) -> Identity {
    Identity::new(
        metanet_proto::WalletKey::from_seed(&id.wallet().seed()),
        metanet_proto::identity::NoiseKey::from_bytes(id.noise().secret()),
    )
}

/// The control task's end of the link.
pub(crate) struct Link {
    tx: SyncSender<Request>,
    wake: Arc<EventFd>,
    identities: BTreeMap<LocalId, Identity>,
}

/// A link and the data plane's end of it. `identities` are those the node starts with.
pub(crate) fn link(
    wake: Arc<EventFd>,
    identities: impl IntoIterator<Item = (LocalId, Identity)>,
) -> (Link, Receiver<Request>) {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let link = Link {
        tx,
        wake,
        identities: identities.into_iter().collect(),
    };
    (link, rx)
}

impl Link {
    /// Queue `request` and wake the data plane.
    fn send(&self, mut request: Request) -> Result<(), Unanswered> {
        let deadline = Instant::now() + ANSWER_WAIT;
        loop {
            match self.tx.try_send(request) {
                Ok(()) => {
                    self.wake.signal();
                    return Ok(());
                }
                Err(TrySendError::Disconnected(_)) => return Err(Unanswered),
                Err(TrySendError::Full(r)) => {
                    if Instant::now() >= deadline {
                        return Err(Unanswered);
                    }
                    request = r;
                    self.wake.signal();
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }

    /// Ask and wait for the answer.
    fn ask<T>(&self, make: impl FnOnce(Answer<T>) -> Request) -> Result<T, Unanswered> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(make(tx))?;
        rx.recv_timeout(ANSWER_WAIT).map_err(|_| Unanswered)
    }

    /// Run `command` and say whether the node accepted it.
    pub(crate) fn handle_command(&self, command: Command) -> Result<(), CommandFailed> {
        Ok(self.ask(|a| Request::Command(command, Some(a)))??)
    }

    /// Run `command` without waiting for its outcome.
    pub(crate) fn post(&self, command: Command) {
        if self.send(Request::Command(command, None)).is_err() {
            tracing::warn!("the data plane did not take a command in time: dropped");
        }
    }

    /// Add a local identity to the node.
    pub(crate) fn add_identity(&mut self, identity: Identity) -> Result<LocalId, Unanswered> {
        let local = self.ask(|a| Request::AddIdentity(duplicate(&identity), a))?;
        self.identities.insert(local, identity);
        Ok(local)
    }

    /// Remove a local identity (and its peers) from the node.
    pub(crate) fn remove_identity(&mut self, local: LocalId) -> Option<Identity> {
        let removed = self.identities.remove(&local)?;
        if self.send(Request::RemoveIdentity(local)).is_err() {
            tracing::warn!("the data plane did not take an identity removal in time");
        }
        Some(removed)
    }

    /// A local identity, from the control task's own copy.
    pub(crate) fn identity(&self, local: LocalId) -> Option<&Identity> {
        self.identities.get(&local)
    }

    /// Every local identity.
    pub(crate) fn identities(&self) -> impl Iterator<Item = (LocalId, &Identity)> {
        self.identities.iter().map(|(l, i)| (*l, i))
    }

    /// Start reading an attachment's TUN; its slot, `None` when it cannot be polled.
    pub(crate) fn attach(
        &self,
        ip: std::net::Ipv6Addr,
        dev: Arc<crate::sys::TunFd>,
    ) -> Result<Option<(usize, u64)>, Unanswered> {
        self.ask(|answer| Request::Attach { ip, dev, answer })
    }

    /// An identity's access policy and what it counted, and its closed groups.
    pub(crate) fn policy(&self, local: LocalId) -> Result<Option<PolicyState>, Unanswered> {
        self.ask(|answer| Request::Policy { local, answer })
    }

    /// Stop reading an attachment's slot.
    pub(crate) fn detach(&self, slot: usize, gen: u64) {
        if self.send(Request::Detach(slot, gen)).is_err() {
            tracing::warn!("the data plane did not take a detach in time");
        }
    }

    /// Peers and counters now.
    pub(crate) fn snapshot(&self) -> Result<Snapshot, Unanswered> {
        self.ask(Request::Snapshot)
    }

    /// Every peer now (empty when the data plane does not answer).
    pub(crate) fn peers(&self) -> Vec<PeerStatus> {
        self.snapshot().map(|s| s.peers).unwrap_or_default()
    }

    /// One peer now.
    pub(crate) fn peer(&self, local: LocalId, address: Address) -> Option<PeerStatus> {
        self.ask(|answer| Request::Peer {
            local,
            address,
            answer,
        })
        .ok()
        .flatten()
    }
}
