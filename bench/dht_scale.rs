//! DHT at scale: thousands of metanet DHT nodes in one process, joined over libp2p's
//! in-memory transport with an artificial per-message delay, measured before and after
//! churn. Not part of `cargo test`; the numbers are in docs/benchmarks.md ("DHT at
//! scale").
//!
//! ```sh
//! cargo run --release -p metanet-bench --bin dht_scale            # 2000 nodes
//! cargo run --release -p metanet-bench --bin dht_scale -- --help
//! ```
//!
//! Every node is a real [`metanet_daemon::dht::Behaviour`] (the daemon's Kademlia
//! config, record filtering and bounded store, plus identify) in its own libp2p
//! `Swarm`, with noise and yamux over `MemoryTransport`, exactly as the daemon stacks
//! them over TCP. Records another node offers go through
//! [`metanet_daemon::dht::accept_inbound`], identify through
//! [`metanet_daemon::dht::Behaviour::learn`], and fetched records through
//! [`metanet_daemon::dht::verify`], as in the daemon.
//!
//! What is modelled:
//!
//! - **Delay**: every direction of every connection gets a one-way delay drawn
//!   uniformly from `--delay-ms` (default 10–80 ms); each chunk written is readable
//!   at the far end that long after it was sent, so a request/response costs one round
//!   trip and a new connection (noise XX, multistream-select, yamux) several. The
//!   dialer also waits two of its one-way delays before the connection exists, for the
//!   TCP handshake. No bandwidth limit, loss, jitter within a connection or reordering.
//! - **Join**: nodes start at `--join-rate` per second; each dials `--bootstrap-peers`
//!   random earlier nodes and bootstraps at its first connection, as the daemon does.
//!   After everyone joined, every node runs one more `bootstrap()` (what kad's periodic
//!   5-minute refresh does in a long-running network).
//! - **No periodic jobs**: nodes are built with
//!   [`metanet_daemon::dht::Behaviour::simulated`], the daemon's behaviour without
//!   kad's 5-minute routing refresh, 5-minute replication and 10-minute
//!   republication. In one process those timers, all started within the 20 s join,
//!   would fire for all nodes in the same seconds and starve the process (they did, in
//!   the first runs, exactly during publication). The measured window is shorter than
//!   one period, the explicit refresh above stands in for the first routing refresh,
//!   and stored records are not re-replicated after the churn: a pessimistic
//!   assumption for the lookups after it.
//! - **Publication**: each publisher puts its signed record (`Quorum::One`) and, as the
//!   daemon does, retries a put that failed after 1 s, doubling up to 30 s, until one
//!   is acknowledged or `--publish-deadline` passed. Every attempt's outcome (ok,
//!   timeout, quorum failed), duration and request counts are tabulated.
//! - **Churn**: `--churn` of the nodes die at once. A dead node is a black hole, as a
//!   crashed host is: it stops reading and writing on its connections (no FIN, no
//!   RST) and never answers new connections, so peers find out only by timeouts.
//!   Optionally as many fresh nodes join after the kill (`--replace`).
//!
//! **Lookups** run one at a time: a random live node looks up the key of a random live
//! publisher with `get_record`, keeps the first copy that [`dht::verify`] accepts and
//! stops the query there (the daemon waits up to 1 s more for a newer copy); like the
//! daemon, it gives up after [`dht::LOOKUP_TIMEOUT`]. Measured:
//! success, latency to the first valid copy, `QueryStats::num_requests` at that moment,
//! whether that copy had the publisher's newest `seq`, and the hop count.
//!
//! **Hops** are reconstructed from what every responder saw: while a lookup runs, each
//! node that receives a GET_VALUE logs the time and the closer peers it answers with
//! (its routing table's closest 20 for the key, as kad computes them). A peer in the
//! querier's own closest 20 at the start is at depth 1; a peer first named by a
//! responder at depth `d` that answered *before* it was asked is at depth `d + 1`
//! (the shortest referral chain consistent with the order of the requests). The hop
//! count of a lookup is the depth of the node whose copy was taken (0 when the querier
//! holds it itself).

#![allow(clippy::print_stdout)]

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Parser;
use futures::io::{AsyncRead, AsyncWrite};
use futures::StreamExt;
use libp2p::core::transport::{memory::Channel, MemoryTransport};
use libp2p::core::{upgrade, ConnectedPoint, Transport};
use libp2p::identity::Keypair;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, GetRecordOk, InboundRequest, QueryId, QueryResult, Quorum, RecordKey};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, noise, yamux, Multiaddr, PeerId};
use metanet_daemon::dht::{self, Behaviour, BehaviourEvent, Refused};
use metanet_proto::record::PeerRecord;
use metanet_proto::{Identity, UnixTime};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, sleep_until, Instant};

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// A progress line: `# [seconds since start] text`.
macro_rules! note {
    ($($t:tt)*) => {
        println!(
            "# [{:6.1} s] {}",
            START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64(),
            format!($($t)*)
        )
    };
}

/// Kademlia's k: how many closer peers a node answers with.
const K: usize = 20;
/// Memory-transport ports start here (the port space is global to the process).
const PORT_BASE: u64 = 10_000;

/// Scale simulation of the metanet DHT (see the file's documentation).
#[derive(Debug, Parser)]
#[command(name = "dht_scale")]
struct Args {
    /// DHT nodes at the start.
    #[arg(long, default_value_t = 2000)]
    nodes: usize,
    /// Nodes that publish a signed peer record.
    #[arg(long, default_value_t = 500)]
    publishers: usize,
    /// Share of the publishers that publish again with a higher seq (a moved host).
    #[arg(long, default_value_t = 0.1)]
    movers: f64,
    /// Lookups per phase.
    #[arg(long, default_value_t = 200)]
    lookups: usize,
    /// Share of the nodes killed after publication.
    #[arg(long, default_value_t = 0.2)]
    churn: f64,
    /// After the kill, as many fresh nodes join, and a third phase is measured.
    #[arg(long)]
    replace: bool,
    /// Earlier nodes each new node dials to join.
    #[arg(long, default_value_t = 3)]
    bootstrap_peers: usize,
    /// One-way delay per direction of a connection, uniform in MIN-MAX milliseconds.
    #[arg(long, default_value = "10-80", value_parser = parse_range)]
    delay_ms: (u64, u64),
    /// Nodes started per second.
    #[arg(long, default_value_t = 100)]
    join_rate: u32,
    /// Publishers that start publishing per second. Real hosts publish at independent
    /// times; hundreds of walks started in the same second would starve this one
    /// process (and did: at 200/s most attempts timed out for want of CPU).
    #[arg(long, default_value_t = 5.0)]
    publish_rate: f64,
    /// Seconds to let the network settle after joining and after the refresh.
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Idle connections close after this many seconds. The daemon uses 120; with that,
    /// every node here would keep hundreds of connections open after the join (more
    /// memory than a small machine has), while a real node, doing a lookup now and
    /// then, opens a fresh connection for nearly every request of a lookup.
    #[arg(long, default_value_t = 10)]
    idle_timeout: u64,
    /// Kademlia's query timeout in seconds (default: the daemon's). It bounds a
    /// publication attempt; lookups end at the daemon's 10 s either way. Below the
    /// daemon's value a run is pessimistic for publication and lighter on this
    /// process: queries that starve under the join's load die sooner.
    #[arg(long, default_value_t = dht::QUERY_TIMEOUT.as_secs())]
    query_timeout: u64,
    /// A publication that fails is retried with the daemon's backoff (1 s doubling to
    /// 30 s) until it is acknowledged or this many seconds passed; 0: publish once.
    /// (The daemon never gives up.)
    #[arg(long, default_value_t = 300)]
    publish_deadline: u64,
    /// Seed of every random choice (keys, topology, delays, lookups); timing still
    /// varies from run to run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once('-').ok_or("expected MIN-MAX")?;
    let a: u64 = a.trim().parse().map_err(|e| format!("{e}"))?;
    let b: u64 = b.trim().parse().map_err(|e| format!("{e}"))?;
    if a > b {
        return Err("MIN is above MAX".into());
    }
    Ok((a, b))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.publishers > args.nodes || args.nodes < 2 {
        bail!("need at least 2 nodes and no more publishers than nodes");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

// ---- the delay transport ---------------------------------------------------------------

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 256 * 1024]);
}

/// One end of an in-memory connection whose incoming bytes become readable `delay`
/// after they arrived, and which goes silent both ways once its node is `dead`.
struct Delayed {
    inner: Channel<Vec<u8>>,
    delay: Duration,
    dead: Arc<AtomicBool>,
    /// Arrived chunks and when each becomes readable; `offset` into the front one.
    queue: VecDeque<(Instant, Vec<u8>)>,
    offset: usize,
    /// When the far end's close becomes visible.
    eof_at: Option<Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Delayed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.dead.load(Relaxed) {
            return Poll::Pending;
        }
        // Take in everything that has arrived, stamped with when it may be read.
        while this.eof_at.is_none() {
            let got = SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                match Pin::new(&mut this.inner).poll_read(cx, &mut s) {
                    Poll::Ready(Ok(n)) => Poll::Ready(Ok(s[..n].to_vec())),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            });
            let due = Instant::now() + this.delay;
            match got {
                Poll::Ready(Ok(chunk)) if chunk.is_empty() => this.eof_at = Some(due),
                Poll::Ready(Ok(chunk)) => this.queue.push_back((due, chunk)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        loop {
            let due = match (this.queue.front(), this.eof_at) {
                (Some((t, _)), _) => *t,
                (None, Some(t)) => t,
                (None, None) => return Poll::Pending,
            };
            if due <= Instant::now() {
                let Some((_, chunk)) = this.queue.front() else {
                    return Poll::Ready(Ok(0));
                };
                let n = buf.len().min(chunk.len() - this.offset);
                buf[..n].copy_from_slice(&chunk[this.offset..this.offset + n]);
                this.offset += n;
                if this.offset == chunk.len() {
                    this.queue.pop_front();
                    this.offset = 0;
                }
                return Poll::Ready(Ok(n));
            }
            let timer = this.timer.get_or_insert_with(|| Box::pin(sleep_until(due)));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl AsyncWrite for Delayed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.dead.load(Relaxed) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.dead.load(Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.dead.load(Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

/// The swarm of one node: real `dht::Behaviour`, noise + yamux over the delayed memory
/// transport (the daemon stacks the same upgrades over TCP).
fn build_swarm(
    key: Keypair,
    delays: (u64, u64),
    rng: ChaCha8Rng,
    dead: Arc<AtomicBool>,
    idle: Duration,
    query_timeout: Duration,
) -> anyhow::Result<libp2p::Swarm<Behaviour>> {
    let rng = Arc::new(Mutex::new(rng));
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let delayed = MemoryTransport::default().and_then(
                    move |conn: Channel<Vec<u8>>, point: ConnectedPoint| {
                        let ms = {
                            let mut r = lock(&rng);
                            delays.0 + r.next_u64() % (delays.1 - delays.0 + 1)
                        };
                        let delay = Duration::from_millis(ms);
                        async move {
                            if point.is_dialer() {
                                sleep(2 * delay).await;
                            }
                            Ok::<_, io::Error>(Delayed {
                                inner: conn,
                                delay,
                                dead,
                                queue: VecDeque::new(),
                                offset: 0,
                                eof_at: None,
                                timer: None,
                            })
                        }
                    },
                );
                Ok(delayed
                    .upgrade(upgrade::Version::V1Lazy)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()))
            },
        )?
        .with_behaviour(|key| Behaviour::simulated(key, query_timeout))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> UnixTime {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UnixTime::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

// ---- what nodes share with the controller ----------------------------------------------

/// The lookup being traced.
#[derive(Debug, Clone)]
struct Probe {
    id: u64,
    key: RecordKey,
}

/// A node received the traced lookup's GET_VALUE.
#[derive(Debug)]
struct Hit {
    id: u64,
    node: PeerId,
    at: Instant,
    closer: Vec<PeerId>,
}

#[derive(Default)]
struct World {
    probe: Mutex<Option<Probe>>,
    hits: Mutex<Vec<Hit>>,
    /// Swarms of dead nodes: kept, unpolled, so their connections stay open and silent.
    graveyard: Mutex<Vec<libp2p::Swarm<Behaviour>>>,
    accepted: AtomicU64,
    refused_invalid: AtomicU64,
    refused_not_newer: AtomicU64,
    store_full: AtomicU64,
    invalid_fetched: AtomicU64,
    /// Publications acknowledged (at the first attempt or a retry) and given up.
    puts_ok: AtomicU64,
    puts_failed: AtomicU64,
    /// Every `put_record` attempt's outcome.
    attempts: Mutex<Vec<Attempt>>,
}

/// One `put_record` attempt, as kad reported it.
#[derive(Debug)]
struct Attempt {
    outcome: &'static str,
    /// Peers that acknowledged the PUT.
    acks: usize,
    ms: f64,
    requests: u32,
    failures: u32,
    /// 1 for the first attempt of a publication.
    nth: u32,
}

/// The record a node publishes, and its retry state (as `dht.rs` keeps its own).
struct Own {
    record: kad::Record,
    first: Instant,
    attempts: u32,
    backoff: Duration,
    retry_at: Option<Instant>,
}

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum Cmd {
    Join(Vec<(PeerId, Multiaddr)>),
    Bootstrap,
    Publish(kad::Record),
    Lookup {
        key: RecordKey,
        reply: oneshot::Sender<Outcome>,
    },
    Report(oneshot::Sender<Report>),
    Kill,
}

/// A finished lookup, as the querier saw it.
#[derive(Debug)]
struct Outcome {
    /// The querier's closest known peers to the key when it started.
    initial: Vec<PeerId>,
    found: Option<FirstCopy>,
    elapsed: Duration,
}

/// The first valid copy of a lookup.
#[derive(Debug)]
struct FirstCopy {
    /// `None`: the querier's own store.
    source: Option<PeerId>,
    seq: u64,
    requests: u32,
}

#[derive(Debug)]
struct Report {
    routing: usize,
    connections: u32,
    records: usize,
}

struct Pending {
    key: RecordKey,
    start: Instant,
    /// The daemon ends a lookup [`dht::LOOKUP_TIMEOUT`] after it started.
    deadline: Instant,
    initial: Vec<PeerId>,
    reply: oneshot::Sender<Outcome>,
}

/// One node's task: the event loop of its swarm, driven like the daemon's DHT thread.
async fn node(
    mut swarm: libp2p::Swarm<Behaviour>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    world: Arc<World>,
    dead: Arc<AtomicBool>,
    deadline: Duration,
) {
    let mut n = NodeState {
        bootstrapped: false,
        lookups: HashMap::new(),
        own: None,
        deadline,
    };
    loop {
        let retry_at = n.own.as_ref().and_then(|o| o.retry_at);
        let give_up_at = n.lookups.values().map(|p| p.deadline).min();
        tokio::select! {
            ev = swarm.select_next_some() => on_event(&mut swarm, ev, &world, &mut n),
            cmd = rx.recv() => match cmd {
                None | Some(Cmd::Kill) => {
                    dead.store(true, Relaxed);
                    lock(&world.graveyard).push(swarm);
                    return;
                }
                Some(cmd) => on_cmd(&mut swarm, cmd, &mut n),
            },
            () = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                put_own(&mut swarm, &mut n);
            }
            () = sleep_until(give_up_at.unwrap_or_else(Instant::now)), if give_up_at.is_some() => {
                give_up_lookups(&mut swarm, &mut n);
            }
        }
    }
}

/// What one node's task keeps between events.
struct NodeState {
    bootstrapped: bool,
    lookups: HashMap<QueryId, Pending>,
    own: Option<Own>,
    deadline: Duration,
}

/// End the lookups past their deadline, as not found (as the daemon does).
fn give_up_lookups(swarm: &mut libp2p::Swarm<Behaviour>, n: &mut NodeState) {
    let now = Instant::now();
    let late: Vec<QueryId> = n
        .lookups
        .iter()
        .filter(|(_, p)| p.deadline <= now)
        .map(|(id, _)| *id)
        .collect();
    for id in late {
        if let Some(mut q) = swarm.behaviour_mut().kad.query_mut(&id) {
            q.finish();
        }
        if let Some(p) = n.lookups.remove(&id) {
            let _ = p.reply.send(Outcome {
                initial: p.initial,
                found: None,
                elapsed: p.start.elapsed(),
            });
        }
    }
}

/// Put the node's own record (again).
fn put_own(swarm: &mut libp2p::Swarm<Behaviour>, n: &mut NodeState) {
    let Some(own) = n.own.as_mut() else {
        return;
    };
    own.retry_at = None;
    own.attempts += 1;
    let _ = swarm
        .behaviour_mut()
        .kad
        .put_record(own.record.clone(), Quorum::One);
}

fn on_cmd(swarm: &mut libp2p::Swarm<Behaviour>, cmd: Cmd, n: &mut NodeState) {
    let lookups = &mut n.lookups;
    match cmd {
        Cmd::Join(peers) => {
            for (peer, addr) in peers {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                let _ = swarm.dial(addr);
            }
        }
        Cmd::Bootstrap => {
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }
        Cmd::Publish(record) => {
            n.own = Some(Own {
                record,
                first: Instant::now(),
                attempts: 0,
                backoff: RETRY_MIN,
                retry_at: None,
            });
            put_own(swarm, n);
        }
        Cmd::Lookup { key, reply } => {
            let kad = &mut swarm.behaviour_mut().kad;
            let initial = kad
                .get_closest_local_peers(&kad::KBucketKey::new(key.clone()))
                .map(|k| *k.preimage())
                .take(K)
                .collect();
            let start = Instant::now();
            let id = kad.get_record(key.clone());
            lookups.insert(
                id,
                Pending {
                    key,
                    start,
                    deadline: start + dht::LOOKUP_TIMEOUT,
                    initial,
                    reply,
                },
            );
        }
        Cmd::Report(reply) => {
            let connections = swarm.network_info().connection_counters().num_established();
            let kad = &mut swarm.behaviour_mut().kad;
            let routing = kad.kbuckets().map(|b| b.num_entries()).sum();
            let records = kad.store_mut().records().count();
            let _ = reply.send(Report {
                routing,
                connections,
                records,
            });
        }
        Cmd::Kill => {}
    }
}

fn on_event(
    swarm: &mut libp2p::Swarm<Behaviour>,
    ev: SwarmEvent<BehaviourEvent>,
    world: &World,
    n: &mut NodeState,
) {
    match ev {
        SwarmEvent::ConnectionEstablished { .. } if !n.bootstrapped => {
            n.bootstrapped = swarm.behaviour_mut().kad.bootstrap().is_ok();
        }
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => swarm.behaviour_mut().learn(&peer_id, &info),
        SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => on_kad(swarm, ev, world, n),
        _ => {}
    }
}

fn on_kad(swarm: &mut libp2p::Swarm<Behaviour>, ev: kad::Event, world: &World, n: &mut NodeState) {
    let lookups = &mut n.lookups;
    let kad = &mut swarm.behaviour_mut().kad;
    match ev {
        kad::Event::InboundRequest {
            request:
                InboundRequest::PutRecord {
                    record: Some(record),
                    ..
                },
        } => {
            let counter = match dht::accept_inbound(kad.store_mut(), record, unix_now()) {
                Ok(()) => &world.accepted,
                Err(Refused::Invalid(_) | Refused::BadValue(_)) => &world.refused_invalid,
                Err(Refused::NotNewer { .. }) => &world.refused_not_newer,
                Err(Refused::Store(_)) => &world.store_full,
            };
            counter.fetch_add(1, Relaxed);
        }
        kad::Event::InboundRequest {
            request: InboundRequest::GetRecord { .. },
        } => {
            let Some(probe) = lock(&world.probe).clone() else {
                return;
            };
            let at = Instant::now();
            let closer = kad
                .get_closest_local_peers(&kad::KBucketKey::new(probe.key))
                .map(|k| *k.preimage())
                .take(K)
                .collect();
            let node = *swarm.local_peer_id();
            lock(&world.hits).push(Hit {
                id: probe.id,
                node,
                at,
                closer,
            });
        }
        kad::Event::OutboundQueryProgressed {
            id,
            result,
            step,
            stats,
        } => match result {
            QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(found))) => {
                let Some(p) = lookups.get(&id) else {
                    return;
                };
                if found.record.key != p.key {
                    world.invalid_fetched.fetch_add(1, Relaxed);
                    return;
                }
                let Ok(rec) = dht::verify(&found.record.key, &found.record.value, unix_now())
                else {
                    world.invalid_fetched.fetch_add(1, Relaxed);
                    return;
                };
                if let Some(mut q) = kad.query_mut(&id) {
                    q.finish();
                }
                if let Some(p) = lookups.remove(&id) {
                    let _ = p.reply.send(Outcome {
                        initial: p.initial,
                        found: Some(FirstCopy {
                            source: found.peer,
                            seq: rec.seq,
                            requests: stats.num_requests(),
                        }),
                        elapsed: p.start.elapsed(),
                    });
                }
            }
            QueryResult::GetRecord(_) if step.last => {
                if let Some(p) = lookups.remove(&id) {
                    let _ = p.reply.send(Outcome {
                        initial: p.initial,
                        found: None,
                        elapsed: p.start.elapsed(),
                    });
                }
            }
            QueryResult::PutRecord(r) => {
                let Some(own) = n.own.as_mut() else {
                    return;
                };
                let (outcome, acks) = match &r {
                    Ok(_) => ("ok", 1),
                    Err(kad::PutRecordError::QuorumFailed { success, .. }) => {
                        ("quorum failed", success.len())
                    }
                    Err(kad::PutRecordError::Timeout { success, .. }) => ("timeout", success.len()),
                };
                lock(&world.attempts).push(Attempt {
                    outcome,
                    acks,
                    ms: stats.duration().unwrap_or_default().as_secs_f64() * 1000.0,
                    requests: stats.num_requests(),
                    failures: stats.num_failures(),
                    nth: own.attempts,
                });
                if r.is_ok() {
                    world.puts_ok.fetch_add(1, Relaxed);
                    n.own = None;
                } else if own.first.elapsed() + own.backoff >= n.deadline {
                    world.puts_failed.fetch_add(1, Relaxed);
                    n.own = None;
                } else {
                    own.retry_at = Some(Instant::now() + own.backoff);
                    own.backoff = (own.backoff * 2).min(RETRY_MAX);
                }
            }
            _ => {}
        },
        _ => {}
    }
}

// ---- the controller --------------------------------------------------------------------

struct NodeHandle {
    peer: PeerId,
    addr: Multiaddr,
    tx: mpsc::UnboundedSender<Cmd>,
    alive: bool,
}

struct Publisher {
    node: usize,
    key: RecordKey,
    seq: u64,
}

struct Sim {
    args: Args,
    rng: ChaCha8Rng,
    world: Arc<World>,
    nodes: Vec<NodeHandle>,
    publishers: Vec<Publisher>,
    next_probe: u64,
}

/// What one phase measured.
#[derive(Debug, Default)]
struct Phase {
    name: String,
    alive: usize,
    lookups: usize,
    found: usize,
    newest: usize,
    local: usize,
    latency_ms: Vec<f64>,
    failed_ms: Vec<f64>,
    hops: Vec<u32>,
    unknown_hops: usize,
    requests: Vec<u32>,
    seconds: f64,
}

impl Sim {
    fn spawn_node(&mut self) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let key = Keypair::ed25519_from_bytes(seed)?;
        let peer = key.public().to_peer_id();
        let dead = Arc::new(AtomicBool::new(false));
        let link_rng = ChaCha8Rng::seed_from_u64(self.rng.next_u64());
        let mut swarm = build_swarm(
            key,
            self.args.delay_ms,
            link_rng,
            dead.clone(),
            Duration::from_secs(self.args.idle_timeout),
            Duration::from_secs(self.args.query_timeout),
        )?;
        let addr: Multiaddr = format!("/memory/{}", PORT_BASE + i as u64).parse()?;
        swarm.listen_on(addr.clone())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let deadline = Duration::from_secs(self.args.publish_deadline);
        tokio::spawn(node(swarm, rx, self.world.clone(), dead, deadline));
        self.nodes.push(NodeHandle {
            peer,
            addr,
            tx,
            alive: true,
        });
        Ok(i)
    }

    fn send(&self, i: usize, cmd: Cmd) {
        let _ = self.nodes[i].tx.send(cmd);
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n as u64) as usize
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .collect()
    }

    /// Start `count` nodes at the join rate, each dialing random live earlier nodes.
    async fn join(&mut self, count: usize) -> anyhow::Result<()> {
        let gap = Duration::from_secs_f64(1.0 / f64::from(self.args.join_rate.max(1)));
        let mut next = Instant::now();
        for _ in 0..count {
            let earlier = self.live();
            let i = self.spawn_node()?;
            let mut boot = Vec::new();
            while boot.len() < self.args.bootstrap_peers.min(earlier.len()) {
                let j = earlier[self.pick(earlier.len())];
                if !boot.contains(&j) {
                    boot.push(j);
                }
            }
            let peers = boot
                .iter()
                .map(|&j| (self.nodes[j].peer, self.nodes[j].addr.clone()))
                .collect();
            self.send(i, Cmd::Join(peers));
            next += gap;
            sleep_until(next).await;
        }
        Ok(())
    }

    async fn reports(&self) -> Vec<Report> {
        let mut out = Vec::new();
        for i in self.live() {
            let (tx, rx) = oneshot::channel();
            self.send(i, Cmd::Report(tx));
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), rx).await {
                out.push(r);
            }
        }
        out
    }

    async fn describe(&self, what: &str) {
        let r = self.reports().await;
        let mut routing: Vec<usize> = r.iter().map(|r| r.routing).collect();
        routing.sort_unstable();
        let conns: u64 = r.iter().map(|r| u64::from(r.connections)).sum();
        let records: usize = r.iter().map(|r| r.records).sum();
        note!(
            "{what}: {} live nodes, routing table entries min/median/max {}/{}/{}, {} connections, {:.1} stored copies per published key",
            r.len(),
            routing.first().copied().unwrap_or(0),
            routing.get(routing.len() / 2).copied().unwrap_or(0),
            routing.last().copied().unwrap_or(0),
            conns / 2,
            records as f64 / self.publishers.len().max(1) as f64,
        );
    }

    /// Wait until `done` publications finished (or `limit`).
    async fn puts_done(&self, done: u64, limit: Duration) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            let n = self.world.puts_ok.load(Relaxed) + self.world.puts_failed.load(Relaxed);
            if n >= done {
                return;
            }
            sleep(Duration::from_millis(100)).await;
        }
        note!("publications still running after {limit:?}");
    }

    fn publish(&mut self, p: usize, id: &Identity, seq: u64) -> anyhow::Result<()> {
        let node = self.publishers[p].node;
        let now = unix_now().as_secs();
        // Endpoints are never dialled here; any documentation-range address will do.
        let ip = Ipv4Addr::new(198, 18, (node / 250) as u8, (node % 250) as u8 + 1);
        let endpoint = SocketAddr::new(ip.into(), 51820 + (seq % 1000) as u16);
        let value = PeerRecord::new(id, vec![endpoint], vec![], seq, now + 3600).sign(id)?;
        self.publishers[p].seq = seq;
        let key = self.publishers[p].key.clone();
        self.send(node, Cmd::Publish(kad::Record::new(key, value)));
        Ok(())
    }

    async fn lookups(&mut self, name: &str) -> Phase {
        let t0 = Instant::now();
        let mut phase = Phase {
            name: name.into(),
            alive: self.live().len(),
            ..Phase::default()
        };
        let live_publishers: Vec<usize> = (0..self.publishers.len())
            .filter(|&p| self.nodes[self.publishers[p].node].alive)
            .collect();
        let live = self.live();
        if live_publishers.is_empty() {
            return phase;
        }
        for _ in 0..self.args.lookups {
            let p = live_publishers[self.pick(live_publishers.len())];
            let (key, newest, owner) = {
                let p = &self.publishers[p];
                (p.key.clone(), p.seq, p.node)
            };
            let mut querier = live[self.pick(live.len())];
            while querier == owner {
                querier = live[self.pick(live.len())];
            }
            self.next_probe += 1;
            let id = self.next_probe;
            *lock(&self.world.probe) = Some(Probe {
                id,
                key: key.clone(),
            });
            let (tx, rx) = oneshot::channel();
            self.send(querier, Cmd::Lookup { key, reply: tx });
            let outcome = tokio::time::timeout(dht::LOOKUP_TIMEOUT * 2, rx).await;
            *lock(&self.world.probe) = None;
            let hits: Vec<Hit> = std::mem::take(&mut *lock(&self.world.hits))
                .into_iter()
                .filter(|h| h.id == id)
                .collect();
            phase.lookups += 1;
            let Ok(Ok(outcome)) = outcome else {
                continue;
            };
            let ms = outcome.elapsed.as_secs_f64() * 1000.0;
            match outcome.found {
                Some(copy) => {
                    phase.found += 1;
                    phase.latency_ms.push(ms);
                    phase.requests.push(copy.requests);
                    if copy.seq >= newest {
                        phase.newest += 1;
                    }
                    match copy.source {
                        None => {
                            phase.local += 1;
                            phase.hops.push(0);
                        }
                        Some(src) => match hops(&outcome.initial, hits, src) {
                            Some(h) => phase.hops.push(h),
                            None => phase.unknown_hops += 1,
                        },
                    }
                }
                None => phase.failed_ms.push(ms),
            }
            // Let requests of the finished query drain before the next one is traced.
            sleep(Duration::from_millis(200)).await;
        }
        phase.seconds = t0.elapsed().as_secs_f64();
        phase
    }

    fn kill(&mut self, share: f64) -> usize {
        let live = self.live();
        let n = ((live.len() as f64) * share).round() as usize;
        let mut killed = 0;
        while killed < n {
            let i = live[self.pick(live.len())];
            if self.nodes[i].alive {
                self.nodes[i].alive = false;
                self.send(i, Cmd::Kill);
                killed += 1;
            }
        }
        killed
    }
}

/// Depth of `source` in the referral tree of one lookup (see the file's documentation).
fn hops(initial: &[PeerId], mut hits: Vec<Hit>, source: PeerId) -> Option<u32> {
    hits.sort_by_key(|h| h.at);
    let mut known: HashMap<PeerId, u32> = initial.iter().map(|p| (*p, 1)).collect();
    let mut asked: HashMap<PeerId, u32> = HashMap::new();
    for h in hits {
        if asked.contains_key(&h.node) {
            continue;
        }
        let Some(&d) = known.get(&h.node) else {
            continue;
        };
        asked.insert(h.node, d);
        for p in h.closer {
            let e = known.entry(p).or_insert(d + 1);
            *e = (*e).min(d + 1);
        }
    }
    asked.get(&source).copied()
}

/// Nearest-rank percentile of sorted values.
fn pct<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn show<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn print_table(phases: &mut [Phase]) {
    println!();
    println!("| phase | live nodes | lookups | found | newest seq | hops p50 / p90 / max (mean) | requests p50 / p90 | latency ms p50 / p90 / p99 / max | failed after (ms) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for p in phases.iter_mut() {
        p.latency_ms.sort_by(f64::total_cmp);
        p.hops.sort_unstable();
        p.requests.sort_unstable();
        let mean_hops = if p.hops.is_empty() {
            0.0
        } else {
            p.hops.iter().map(|&h| f64::from(h)).sum::<f64>() / p.hops.len() as f64
        };
        let ms = |q| show(pct(&p.latency_ms, q).map(|v| format!("{v:.0}")));
        let failed: Vec<String> = p.failed_ms.iter().map(|v| format!("{v:.0}")).collect();
        println!(
            "| {} | {} | {} | {} ({:.1} %) | {} | {} / {} / {} ({:.2}) | {} / {} | {} / {} / {} / {} | {} |",
            p.name,
            p.alive,
            p.lookups,
            p.found,
            100.0 * p.found as f64 / p.lookups.max(1) as f64,
            p.newest,
            show(pct(&p.hops, 50.0)),
            show(pct(&p.hops, 90.0)),
            show(p.hops.last().copied()),
            mean_hops,
            show(pct(&p.requests, 50.0)),
            show(pct(&p.requests, 90.0)),
            ms(50.0),
            ms(90.0),
            ms(99.0),
            ms(100.0),
            if failed.is_empty() {
                "-".into()
            } else {
                failed.join(", ")
            },
        );
    }
    for p in phases.iter() {
        if p.local > 0 || p.unknown_hops > 0 {
            note!(
                "{}: {} lookups answered from the querier's own store (0 hops), {} without a reconstructed hop count; {:.0} s",
                p.name, p.local, p.unknown_hops, p.seconds
            );
        } else {
            println!("# {}: {:.0} s", p.name, p.seconds);
        }
    }
}

/// Every `put_record` attempt by outcome, and how many attempts publications needed.
fn print_attempts(world: &World) {
    let attempts = lock(&world.attempts);
    println!();
    println!("| put_record attempts | count | duration ms p50 / p90 / max | requests p50 / max | failed requests p50 / max | peers that acked p50 / max |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for outcome in ["ok", "timeout", "quorum failed"] {
        let these: Vec<&Attempt> = attempts.iter().filter(|a| a.outcome == outcome).collect();
        if these.is_empty() {
            continue;
        }
        let mut ms: Vec<f64> = these.iter().map(|a| a.ms).collect();
        ms.sort_by(f64::total_cmp);
        let mut req: Vec<u32> = these.iter().map(|a| a.requests).collect();
        req.sort_unstable();
        let mut fail: Vec<u32> = these.iter().map(|a| a.failures).collect();
        fail.sort_unstable();
        let mut acks: Vec<usize> = these.iter().map(|a| a.acks).collect();
        acks.sort_unstable();
        let f = |v: Option<f64>| show(v.map(|v| format!("{v:.0}")));
        println!(
            "| {outcome} | {} | {} / {} / {} | {} / {} | {} / {} | {} / {} |",
            these.len(),
            f(pct(&ms, 50.0)),
            f(pct(&ms, 90.0)),
            f(ms.last().copied()),
            show(pct(&req, 50.0)),
            show(req.last().copied()),
            show(pct(&fail, 50.0)),
            show(fail.last().copied()),
            show(pct(&acks, 50.0)),
            show(acks.last().copied()),
        );
    }
    let mut by_nth: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
    for a in attempts.iter().filter(|a| a.outcome == "ok") {
        *by_nth.entry(a.nth).or_default() += 1;
    }
    let line: Vec<String> = by_nth
        .iter()
        .map(|(nth, count)| format!("{count} at attempt {nth}"))
        .collect();
    note!(
        "publications acknowledged: {}; given up: {}",
        if line.is_empty() {
            "none".into()
        } else {
            line.join(", ")
        },
        world.puts_failed.load(Relaxed)
    );
}

/// CPU seconds of this process and its peak resident memory in MiB, from /proc.
fn usage() -> (f64, f64) {
    let tck = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tck)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .unwrap_or(0.0);
    (cpu, rss / 1024.0)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    START.get_or_init(std::time::Instant::now);
    note!(
        "dht_scale: {} nodes, {} publishers ({:.0} % publish twice), {} lookups per phase, churn {:.0} %{}, {} bootstrap peers, one-way delay {}-{} ms, join rate {}/s, publication rate {}/s, kad query timeout {} s, publication deadline {} s, seed {}",
        args.nodes,
        args.publishers,
        args.movers * 100.0,
        args.lookups,
        args.churn * 100.0,
        if args.replace { " replaced" } else { "" },
        args.bootstrap_peers,
        args.delay_ms.0,
        args.delay_ms.1,
        args.join_rate,
        args.publish_rate,
        args.query_timeout,
        args.publish_deadline,
        args.seed
    );
    let mut sim = Sim {
        rng: ChaCha8Rng::seed_from_u64(args.seed),
        args,
        world: Arc::new(World::default()),
        nodes: Vec::new(),
        publishers: Vec::new(),
        next_probe: 0,
    };
    let settle = Duration::from_secs(sim.args.settle);

    // Join, settle, one refresh round, settle.
    sim.join(sim.args.nodes).await.context("join")?;
    note!(
        "joined {} nodes in {:.0} s",
        sim.nodes.len(),
        t0.elapsed().as_secs_f64()
    );
    sleep(settle).await;
    sim.describe("after join").await;
    let gap = Duration::from_secs_f64(1.0 / f64::from(sim.args.join_rate.max(1)));
    for i in sim.live() {
        sim.send(i, Cmd::Bootstrap);
        sleep(gap).await;
    }
    sleep(settle).await;
    sim.describe("after refresh").await;

    // Publication: each publisher signs a record under its own wallet key; some publish
    // again with a higher seq, as a host that moved does.
    let mut ids = Vec::new();
    let live = sim.live();
    let mut chosen = Vec::new();
    while chosen.len() < sim.args.publishers {
        let i = live[sim.pick(live.len())];
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    for node in chosen {
        let mut seed = [0u8; 64];
        sim.rng.fill_bytes(&mut seed);
        let id = Identity::generate(&seed);
        let key = dht::record_key(&id.address().ipv6_prefix());
        sim.publishers.push(Publisher { node, key, seq: 0 });
        ids.push(id);
    }
    let base_seq = unix_now().as_nanos() / 1_000_000;
    let pace = Duration::from_secs_f64(1.0 / sim.args.publish_rate.max(0.01));
    let t_pub = Instant::now();
    for (p, id) in ids.iter().enumerate() {
        sim.publish(p, id, base_seq)?;
        sleep(pace).await;
    }
    let mut expected = sim.publishers.len() as u64;
    let wait = Duration::from_secs(sim.args.publish_deadline + 60);
    sim.puts_done(expected, wait).await;
    let movers = ((sim.publishers.len() as f64) * sim.args.movers).round() as usize;
    for (p, id) in ids.iter().enumerate().take(movers) {
        sim.publish(p, id, base_seq + 1)?;
        sleep(pace).await;
    }
    expected += movers as u64;
    sim.puts_done(expected, wait).await;
    note!(
        "published {} records ({} again with a higher seq) in {:.0} s: {} publications ok, {} failed",
        sim.publishers.len(),
        movers,
        t_pub.elapsed().as_secs_f64(),
        sim.world.puts_ok.load(Relaxed),
        sim.world.puts_failed.load(Relaxed)
    );
    print_attempts(&sim.world);
    sleep(Duration::from_secs(2)).await;
    sim.describe("after publication").await;

    let mut phases = Vec::new();
    phases.push(sim.lookups("stable").await);

    let killed = sim.kill(sim.args.churn);
    note!(
        "killed {killed} nodes ({:.0} %) at {:.0} s",
        sim.args.churn * 100.0,
        t0.elapsed().as_secs_f64()
    );
    sleep(Duration::from_secs(2)).await;
    phases.push(
        sim.lookups(&format!("{:.0} % killed", sim.args.churn * 100.0))
            .await,
    );

    if sim.args.replace {
        sim.join(killed).await.context("replacements")?;
        sleep(settle).await;
        sim.describe("after replacements joined").await;
        phases.push(
            sim.lookups(&format!("{:.0} % killed, replaced", sim.args.churn * 100.0))
                .await,
        );
    }
    sim.describe("at the end").await;

    let w = &sim.world;
    note!(
        "record filtering: {} stored, {} refused as invalid, {} refused as not newer, {} store full; {} invalid copies fetched",
        w.accepted.load(Relaxed),
        w.refused_invalid.load(Relaxed),
        w.refused_not_newer.load(Relaxed),
        w.store_full.load(Relaxed),
        w.invalid_fetched.load(Relaxed)
    );
    print_table(&mut phases);
    let (cpu, rss) = usage();
    note!(
        "total {:.0} s wall, {cpu:.0} s CPU, peak RSS {rss:.0} MiB",
        t0.elapsed().as_secs_f64()
    );
    // Dead swarms and live tasks are torn down with the runtime.
    std::process::exit(0);
}
