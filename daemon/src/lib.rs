//! metanetd: a thin shell around `metanet_proto::node::Node`.
//!
//! The data-plane thread (`dataplane.rs`: UDP and TUN batches, the node's timers) is
//! the node's only owner. The control task here (control requests, registry, chain,
//! signals) reaches it through `link.rs`: typed requests on a bounded channel, each
//! query answered on its own one-shot channel, node events coming back as notes. No
//! lock is shared between the two, so nothing the control side does can stall a packet.
//! The protocol decisions are all in `proto`; this crate only moves bytes and files.
//! `unsafe` lives only in [`sys`] (the crate denies it everywhere else).
#![deny(unsafe_code)]

mod attach;
mod batch;
pub mod chain;
mod commands;
pub mod config;
pub mod control;
mod controller;
mod dataplane;
pub mod dht;
pub mod dns;
pub mod filter;
mod group_keys;
mod groups;
pub mod hostdns;
pub mod journal;
mod link;
pub mod metrics;
mod offload;
pub mod policy;
mod registry;
mod reload;
pub mod state;
mod status;
#[allow(unsafe_code)]
pub mod sys;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metanet_proto::control::{self as api, ErrorKind, Reply};
use metanet_proto::node::{self, Event, LocalId, Node};
use metanet_proto::{ip, wire, Address, Instant, Target, UnixTime};
use tokio::sync::mpsc;

/// Everything the daemon needs to start, after flags and file are merged.
#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub port: u16,
    pub tun: String,
    /// Tunnel MTU; `None`: the underlay's MTU minus [`config::OVERHEAD`].
    pub mtu: Option<u16>,
    pub socket_buffer: usize,
    /// Offer and accept AES-256-GCM for data (else ChaCha20-Poly1305 only).
    pub aes_256_gcm: bool,
    /// The post-quantum hybrid handshake mode (docs/protocol.md §5.7).
    pub pq: metanet_proto::pq::PqMode,
    pub static_peers: Vec<config::StaticPeer>,
    /// DHT listen port (TCP).
    pub dht_port: u16,
    /// DHT nodes to join through.
    pub bootstrap: Vec<libp2p::Multiaddr>,
    /// Publication settings per identity.
    pub identities: Vec<config::IdentityConfig>,
    /// Where the `.meta` DNS view listens; `None`: the first identity's overlay IPv6,
    /// port 53.
    pub dns_listen: Option<SocketAddr>,
    /// Where the metrics endpoint listens; `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    /// How the host's resolver is pointed at the DNS view.
    pub dns_system: config::DnsSystem,
    /// Whether `dns_system` came from the `--dns-system` flag (a reload keeps it then).
    pub dns_system_flag: bool,
    /// The hosts file `dns-system = "hosts"` manages.
    pub hosts_file: PathBuf,
    /// The config file, and whether it was named explicitly (SIGHUP re-reads it).
    pub config: (PathBuf, bool),
    /// The chain registry client, when configured.
    pub chain: Option<chain::Config>,
    /// Who holds the operator rights on the control socket besides root.
    pub access: control::Access,
    /// Bounds on control clients.
    pub control_limits: control::Limits,
    /// Install the nftables overlay filter ([`filter`]).
    pub overlay_filter: bool,
    /// Serve as a relay, with these limits.
    pub relay: Option<node::RelayLimits>,
    /// The relays every identity reserves with and lists in its record.
    pub relays: Vec<metanet_proto::record::Relay>,
    /// Whether `--hidden` was given (a reload keeps it).
    pub hidden_flag: bool,
    /// Keepalive on paths that cross a NAT; `None`: off.
    pub keepalive: Option<Duration>,
}

/// Why the daemon stopped with an error; `exit_code` maps it for the binary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    State(#[from] state::Error),
    #[error(transparent)]
    Control(#[from] control::Error),
    #[error("cannot create TUN device {name}: {source} (metanetd needs CAP_NET_ADMIN: run as root or via systemd)")]
    Tun {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot listen on UDP port {port}: {source}")]
    Udp { port: u16, source: std::io::Error },
    #[error("overlay filter: {0}")]
    Filter(#[from] filter::Error),
    #[error("static peer {0}: {1}")]
    Peer(String, String),
    #[error(transparent)]
    Dht(#[from] dht::Error),
    #[error(transparent)]
    Chain(#[from] chain::Error),
    #[error("cannot serve DNS on {addr}: {source}")]
    Dns {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Exit code: 2 configuration, 3 resource in use, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::State(_) | Error::Peer(..) => 2,
            Error::Chain(chain::Error::Rpc(_) | chain::Error::Key(_)) => 2,
            Error::Control(control::Error::InUse(_)) => 3,
            Error::Udp { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => 3,
            Error::Dht(dht::Error::Listen { .. }) => 3,
            Error::Dns { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => 3,
            Error::Metrics { source, .. } => match source.kind() {
                std::io::ErrorKind::AddrInUse => 3,
                std::io::ErrorKind::AddrNotAvailable => 2,
                _ => 1,
            },
            _ => 1,
        }
    }
}

/// The control task: commands, the registry, the chain client. The data plane runs
/// in its own thread (`dataplane.rs`) and owns the node; this side reaches it through
/// `node` ([`link::Link`]).
struct Daemon {
    node: link::Link,
    names: controller::Names,
    state: state::StateDir,
    opts: Options,
    /// The TUN device (its addresses; ICMPv6 errors written from here).
    tun: std::sync::Arc<tun_rs::SyncDevice>,
    /// Wakes the data-plane thread (the watchdog's question).
    wake: std::sync::Arc<sys::EventFd>,
    /// The control task's own counters (its TUN writes).
    counters: batch::Counters,
    /// `connect` requests answered when their session is up or has failed.
    waiting: controller::PendingConnects<ReplyTo>,
    /// The DHT node (registry).
    dht: Option<dht::Dht>,
    /// Publication and lookup state.
    reg: registry::Publications,
    /// Packets to write to the TUN (ICMPv6 errors), sent after each loop turn.
    tun_out: Vec<Vec<u8>>,
    /// The chain registry client (names, revocations), when configured.
    chain: Option<chain::ChainClient>,
    /// Revoked addresses already handed to the node as refused (`Command::Deny`).
    denied: controller::Denied,
    /// The control server's operator rights (replaced on reload).
    access: std::sync::Arc<std::sync::RwLock<control::Access>>,
    /// Bounds the log lines that remote input causes (peer events).
    log_budget: LogBudget,
    /// The nftables overlay filter (removed when the daemon stops).
    filter: Option<filter::OverlayFilter>,
    /// Where the DNS view listens and its state (`serving`, `failed: …`).
    dns_view: (SocketAddr, String),
    /// The chain's names, as the DNS view serves them.
    dns_names: dns::Names,
    /// The host resolver integration (`dns-system`).
    hostdns: hostdns::HostDns,
    /// Identities with a pending wallet-rotation key (adopted once the chain says so).
    pending_rotations: std::collections::BTreeSet<String>,
    /// This host's addresses, as housekeeping last listed them.
    own_ips: std::collections::BTreeSet<IpAddr>,
    /// Answers of `id rotate --wallet` from the chain writer, adopted in the loop.
    rotated: mpsc::Sender<Rotated>,
    /// Network namespaces attached to identities.
    attachments: attach::Attachments,
    /// The tunnel MTU (the host's TUN and every attachment's).
    mtu: u16,
    /// The access policy last given to each identity, and its entries that did not
    /// resolve.
    policies: std::collections::BTreeMap<String, (node::Policy, Vec<String>)>,
    /// Each identity's MLS state of its groups, and the network keys given to the node.
    group_keys: group_keys::GroupKeys,
}

/// A finished wallet rotation: the identity's name, the chain writer's answer and the
/// client waiting for it.
type Rotated = (String, Result<Reply, api::Error>, ReplyTo);

/// A budget of log lines per second for events that remote input causes (a stranger's
/// handshake is a "session up"): beyond it lines are counted, not written, and the
/// count is logged once the next second begins. An attacker cannot flood the journal.
#[derive(Debug)]
struct LogBudget {
    window: std::time::Instant,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    /// Lines per second.
    const PER_SECOND: u32 = 10;

    fn new(now: std::time::Instant) -> Self {
        LogBudget {
            window: now,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be written now.
    fn admit(&mut self, now: std::time::Instant) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            if self.suppressed > 0 {
                tracing::info!(
                    suppressed = self.suppressed,
                    "peer event lines suppressed in the last second (rate limit)"
                );
            }
            *self = LogBudget::new(now);
        }
        if self.used < Self::PER_SECOND {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// How long a `connect` request waits for its session before it is answered as still
/// connecting (below the command line's 30 s, above the node's 10 s of record probes).
const CONNECT_WAIT: Duration = Duration::from_secs(20);

pub(crate) type ReplyTo = tokio::sync::oneshot::Sender<Result<Reply, api::Error>>;

/// Run until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> Result<(), Error> {
    // Before anything opens a descriptor of its own: what the service manager kept.
    let stored: std::collections::BTreeMap<String, std::os::fd::OwnedFd> =
        sys::listen_fds().into_iter().collect();
    let state = state::StateDir::open(&opts.state_dir)?;
    let identities = state.load_identities()?;
    // Before any device exists, so that a bad funding key or RPC URL changes nothing.
    let chain_names: dns::Names = Default::default();
    let chain = opts
        .chain
        .clone()
        .map(|c| chain::ChainClient::spawn(c, &opts.state_dir, chain_names.clone()))
        .transpose()?;
    let origin = std::time::Instant::now();
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&state::random64()?[..32]);
    let node_config = node::Config {
        aes_256_gcm: opts.aes_256_gcm,
        pq: opts.pq,
        relay: opts.relay,
        nat_keepalive: opts.keepalive,
        ..node::Config::default()
    };
    if let Some(limits) = opts.relay {
        tracing::info!(
            rate = limits.rate,
            sessions = limits.sessions,
            clients = limits.clients,
            "serving as a relay"
        );
    }
    tracing::info!(pq = %opts.pq, "post-quantum hybrid handshake (ml-kem-512)");
    tracing::info!(
        aes_256_gcm = opts.aes_256_gcm,
        "data ciphers: chacha20-poly1305{}",
        if opts.aes_256_gcm {
            ", aes-256-gcm"
        } else {
            ""
        }
    );
    let mut node = Node::new(node_config, seed, Instant::ZERO, unix_now());

    let first_ip = identities[0].1.address().ipv6();
    let underlay = underlay_mtu(&opts.tun);
    let mtu = opts
        .mtu
        .unwrap_or_else(|| underlay.saturating_sub(config::OVERHEAD))
        .max(ip::IPV6_MIN_MTU as u16);
    tracing::info!(mtu, underlay, "tunnel MTU");
    let build = |offload: bool| {
        tun_rs::DeviceBuilder::new()
            .name(opts.tun.clone())
            .ipv6(first_ip, 8u8)
            .mtu(mtu)
            .offload(offload)
            .build_sync()
    };
    // Offload (TSO/GRO through the virtio header) where the kernel has it.
    let tun = build(true)
        .or_else(|e| {
            tracing::warn!(error = %e, "TUN offload unavailable: one packet per read");
            build(false)
        })
        .and_then(|t| t.set_nonblocking(true).map(|()| t))
        .map_err(|source| Error::Tun {
            name: opts.tun.clone(),
            source,
        })?;
    let tun = std::sync::Arc::new(tun);
    let mut names = Vec::new();
    for (i, (name, id)) in identities.into_iter().enumerate() {
        if i > 0 {
            // Deprecated, so the default identity stays the source the kernel picks.
            sys::add_deprecated_address(&opts.tun, id.address().ipv6()).map_err(|source| {
                Error::Tun {
                    name: opts.tun.clone(),
                    source,
                }
            })?;
        }
        tracing::info!(identity = %name, address = %id.address(), ipv6 = %id.address().ipv6(), "identity loaded");
        let local = node.add_identity(id);
        let hidden = opts.identities.iter().any(|c| c.name == name && c.hidden);
        for cmd in paths_of(local, hidden, &opts.relays) {
            let _ = node.handle_command(Instant::ZERO, cmd);
        }
        names.push((name, local));
    }
    if !opts.relays.is_empty() {
        let relays: Vec<String> = opts.relays.iter().map(ToString::to_string).collect();
        tracing::info!(?relays, "identities reserve with relays");
    }
    let filter = if opts.overlay_filter {
        let guarded: Vec<Ipv6Addr> = node
            .identities()
            .map(|(_, id)| id.address().ipv6())
            .collect();
        let f = filter::OverlayFilter::install(&opts.tun, &guarded)?;
        tracing::info!(
            table = f.table(),
            "overlay filter: overlay addresses only through the TUN"
        );
        Some(f)
    } else {
        tracing::warn!("overlay filter off: neighbours can send packets with overlay addresses to this host's other interfaces");
        None
    };
    let udp = batch::Sender::new(bind_udp(opts.port, opts.socket_buffer)?).map_err(|source| {
        Error::Udp {
            port: opts.port,
            source,
        }
    })?;
    let listener = control::bind(&opts.socket)?;
    let (jobs_tx, mut jobs) = mpsc::channel::<control::Job>(64);
    let (dht_tx, mut dht_rx) = mpsc::unbounded_channel();
    // One wallet rotation at a time per client; more than 8 in flight wait their turn.
    let (rotated_tx, mut rotated_rx) = mpsc::channel::<Rotated>(8);
    let dht = dht::Dht::spawn(
        dht::Config {
            keypair: state.dht_key()?,
            listen: dht_listen(opts.dht_port),
            bootstrap: opts.bootstrap.clone(),
            // A hidden default identity: the DHT must not spread this host's IP.
            client_only: opts
                .identities
                .iter()
                .any(|c| c.name == state::DEFAULT_NAME && c.hidden),
        },
        dht_tx,
    )?;
    tracing::info!(peer_id = %dht.status().peer_id, port = opts.dht_port, "DHT node started");
    let access = std::sync::Arc::new(std::sync::RwLock::new(opts.access.clone()));
    let server = tokio::spawn(control::serve(
        listener,
        jobs_tx,
        access.clone(),
        opts.control_limits,
    ));
    let dns_view = start_dns(&opts, first_ip, chain_names.clone()).await?;
    // Kept for the whole run, so the loop's scrape branch never sees a closed channel.
    let (metrics_tx, mut scrapes) = mpsc::channel::<metrics::Request>(4);
    let metrics_task = start_metrics(opts.metrics_listen, metrics_tx.clone()).await?;
    let reg = registry::Publications::new(opts.identities.clone());

    let wake = std::sync::Arc::new(sys::EventFd::new()?);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (notes_tx, mut notes) = mpsc::channel(dataplane::NOTES);
    let heartbeat: std::sync::Arc<[std::sync::atomic::AtomicU64; 2]> = Default::default();
    let (link, requests) = link::link(
        wake.clone(),
        node.identities().map(|(l, id)| (l, link::duplicate(id))),
    );
    let host = dataplane::Slot {
        tun: batch::Tun::new(batch::TunDev::Host(tun.clone())),
        ip: None,
        stats: Default::default(),
        gen: 0,
    };
    let locals = node
        .identities()
        .map(|(_, id)| (id.address().ipv6(), 0))
        .collect();
    let plane = dataplane::DataPlane {
        node,
        requests,
        udp: batch::Udp::new(udp.clone()),
        tuns: vec![Some(host)],
        locals,
        poller: sys::Poller::new()?,
        ready: Vec::with_capacity(8),
        local_buf: vec![Vec::with_capacity(dataplane::LOCAL_BUF)],
        origin,
        path_mtu: underlay,
        wake: wake.clone(),
        notes: notes_tx,
        stop: stop.clone(),
        counters: batch::Counters::default(),
        rx: Vec::with_capacity(64),
        fwd: Vec::with_capacity(64),
        obuf: vec![0u8; wire::MAX_DATAGRAM],
        heartbeat: heartbeat.clone(),
    };
    plane.register()?;
    let data_thread = std::thread::Builder::new()
        .name("data".into())
        .spawn(move || plane.run())?;

    let pending_rotations = state.pending_names().into_iter().collect();
    let mut d = Daemon {
        node: link,
        names: controller::Names::new(names),
        state,
        opts,
        tun,
        wake,
        counters: batch::Counters::default(),
        waiting: Default::default(),
        dht: Some(dht),
        reg,
        tun_out: Vec::new(),
        chain,
        denied: Default::default(),
        access,
        log_budget: LogBudget::new(std::time::Instant::now()),
        filter,
        dns_view: (dns_view.listen, dns_view.state.clone()),
        dns_names: chain_names,
        hostdns: hostdns::HostDns::off(),
        own_ips: Default::default(),
        pending_rotations,
        rotated: rotated_tx,
        attachments: Default::default(),
        mtu,
        policies: Default::default(),
        group_keys: Default::default(),
    };
    d.apply_policies();
    d.restore_attachments(stored);
    d.housekeeping();
    for p in d.opts.static_peers.clone() {
        let address = match Target::parse(&p.address) {
            Ok(t) => t,
            Err(e) => return Err(Error::Peer(p.address.clone(), e.to_string())),
        };
        let cmd = controller::LocalRequest::ConnectAt {
            address,
            endpoint: p.endpoint,
            identity: p.identity,
        };
        d.local(cmd)
            .map_err(|e| Error::Peer(p.address, e.message))?;
    }
    d.start_hostdns();
    journal::notify(&format!("READY=1\nSTATUS={}", d.summary()));
    tracing::info!(tun = %d.opts.tun, port = d.opts.port, socket = %d.opts.socket.display(), "metanetd ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // The watchdog is fed from this loop (twice per interval): a wedged control task
    // gets the daemon restarted. Without one, STATUS= still follows the peers.
    let watchdog = journal::watchdog_interval();
    let mut notify_tick = tokio::time::interval(watchdog.map_or(Duration::from_secs(30), |w| {
        (w / 2).max(Duration::from_millis(100))
    }));
    notify_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        let deadline = d.waiting.next_expiry();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(note) = notes.recv() => match note {
                dataplane::Note::Event(ev, trigger) => d.event(ev, trigger.as_deref()),
                dataplane::Note::TunFailed(e) => break Err(Error::Io(e)),
                dataplane::Note::AttachmentFailed(slot, gen, e) => d.attachment_failed(slot, gen, &e),
            },
            Some((cmd, fds, reply)) = jobs.recv() => d.job(cmd, fds, reply),
            Some(reply) = scrapes.recv() => {
                let _ = reply.send(d.metrics_snapshot());
                continue;
            }
            Some(out) = dht_rx.recv() => d.on_dht(out),
            Some((name, result, reply)) = rotated_rx.recv() => d.finish_rotation(&name, result, reply),
            _ = housekeeping.tick() => {
                d.check_attachments();
                d.apply_policies();
                d.sync_groups();
                d.housekeeping();
                d.refresh_hosts();
            }
            () = sleep => {}
            _ = notify_tick.tick() => {
                // The watchdog is fed only while both loops turn: this one, and the
                // data plane, which must have answered the last question.
                use std::sync::atomic::Ordering::Relaxed;
                let asked = heartbeat[0].load(Relaxed);
                let data_alive = heartbeat[1].load(Relaxed) == asked;
                heartbeat[0].store(asked.wrapping_add(1), Relaxed);
                d.wake.signal();
                if !data_alive {
                    tracing::error!("the data plane did not answer the watchdog: not feeding it");
                }
                let dog = if watchdog.is_some() && data_alive { "WATCHDOG=1\n" } else { "" };
                journal::notify(&format!("{dog}STATUS={}", d.summary()));
            }
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            _ = hup.recv() => d.reload(),
        }
        d.after_input();
    };
    journal::notify("STOPPING=1\nSTATUS=stopping");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    d.wake.signal();
    if data_thread.join().is_err() {
        tracing::warn!("data-plane thread panicked");
    }
    server.abort();
    if let Some(t) = dns_view.task {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    drop(metrics_tx);
    d.hostdns.stop();
    let _ = std::fs::remove_file(&d.opts.socket);
    tracing::info!("metanetd stopped");
    result
}

impl Daemon {
    /// Point the overlay filter at the current identities' addresses.
    fn refilter(&self) {
        let Some(f) = &self.filter else { return };
        let guarded: Vec<Ipv6Addr> = self
            .node
            .identities()
            .map(|(_, id)| id.address().ipv6())
            .collect();
        if let Err(e) = f.update(&guarded) {
            tracing::error!(error = %e, "cannot update the overlay filter");
        }
    }

    /// After any input: answer waiting requests and write ICMPv6 errors to the TUN.
    /// (What the node sends because of a request, the data plane sends; its events
    /// come back as notes.)
    fn after_input(&mut self) {
        self.expire_waiting();
        for packet in std::mem::take(&mut self.tun_out) {
            // An ICMPv6 error goes to the TUN of the identity it is addressed to.
            let dev = ip::Ipv6Packet::new_checked(&packet[..])
                .ok()
                .and_then(|p| self.attachments.device_for(p.dst()))
                .map_or_else(
                    || batch::TunDev::Host(self.tun.clone()),
                    batch::TunDev::Attached,
                );
            batch::write_own(&dev, &packet, &mut self.counters);
        }
    }

    fn name_of(&self, local: LocalId) -> String {
        self.names.name_of(local)
    }

    fn local_named(&self, name: Option<&str>) -> Result<LocalId, api::Error> {
        self.names.local(name)
    }

    /// Handle what the node reported. `trigger` is the TUN packet the event is on
    /// behalf of: a lookup the node asks for, and it answers an ICMPv6 error if the
    /// lookup fails.
    fn event(&mut self, ev: Event, trigger: Option<&[u8]>) {
        match ev {
            Event::LookupNeeded { local, ipv6 } => {
                self.lookup_needed(local, ipv6, trigger.unwrap_or_default());
            }
            Event::HandshakeFailed { local, address } => self.handshake_failed(local, address),
            Event::NatChanged { ref reflexive, .. } => self.nat_changed(reflexive.clone()),
            _ => {}
        }
        self.settle(&ev);
        if self.log_budget.admit(std::time::Instant::now()) {
            log_event(&ev);
        }
    }

    /// Send the answer to a control request. A `connect` whose session is not up yet is
    /// answered when the node reports it up or failed, so the command line can say which.
    fn answer(&mut self, result: Result<Reply, api::Error>, reply: ReplyTo) {
        let Ok(Reply::Connected(peer)) = &result else {
            let _ = reply.send(result);
            return;
        };
        let (Ok(address), Ok(local)) = (
            peer.address.parse::<Address>(),
            self.local_named(Some(&peer.identity)),
        ) else {
            let _ = reply.send(result);
            return;
        };
        if let Some(up) = self.peer_info(peer).filter(|p| p.connected) {
            let _ = reply.send(Ok(Reply::Connected(up)));
            return;
        }
        self.waiting.push(
            local,
            address,
            peer.clone(),
            std::time::Instant::now(),
            CONNECT_WAIT,
            reply,
        );
    }

    /// Answer the `connect` requests that `ev` decides.
    fn settle(&mut self, ev: &Event) {
        for (w, outcome) in self.waiting.settle(ev) {
            let now = match outcome {
                controller::Outcome::Up => self.peer_info(&w.peer),
                controller::Outcome::Failed(_) => None,
            };
            let _ = w
                .reply
                .send(controller::connect_answer(outcome, now, w.peer));
        }
    }

    /// Answer `connect` requests that waited [`CONNECT_WAIT`] as still connecting.
    fn expire_waiting(&mut self) {
        for w in self.waiting.expire(std::time::Instant::now()) {
            let _ = w.reply.send(Ok(Reply::Connected(w.peer)));
        }
    }
}

/// How often endpoints are checked and records republished when due.
const HOUSEKEEPING: Duration = Duration::from_secs(2);

/// The DHT listens on TCP `port`, IPv4 and IPv6.
fn dht_listen(port: u16) -> Vec<libp2p::Multiaddr> {
    use libp2p::multiaddr::Protocol;
    [
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ]
    .into_iter()
    .map(|ip| libp2p::Multiaddr::from(ip).with(Protocol::Tcp(port)))
    .collect()
}

fn err(kind: ErrorKind, message: &str) -> api::Error {
    api::Error {
        kind,
        message: message.into(),
    }
}

fn log_event(ev: &Event) {
    match ev {
        Event::PeerUp {
            address, endpoint, ..
        } => tracing::info!(peer = %address, %endpoint, "session up"),
        Event::HandshakeFailed { address, .. } => {
            tracing::warn!(peer = %address, "handshake gave up")
        }
        Event::Roamed {
            address, from, to, ..
        } => tracing::info!(peer = %address, %from, %to, "peer roamed"),
        Event::SessionExpired { address, .. } => tracing::info!(peer = %address, "session expired"),
        Event::ConnectFailed {
            address, endpoint, ..
        } => {
            tracing::warn!(peer = %address, %endpoint, "no valid record from endpoint")
        }
        Event::LookupNeeded { ipv6, .. } => tracing::debug!(%ipv6, "no peer for destination"),
        Event::PathChanged {
            address,
            path,
            endpoint,
            ..
        } => match path {
            node::Path::Direct => {
                tracing::info!(peer = %address, endpoint = ?endpoint, "path: direct")
            }
            node::Path::Relay(relay) => tracing::info!(peer = %address, %relay, "path: relay"),
            node::Path::None => {}
        },
        Event::NatChanged { reflexive, mapping } => {
            tracing::info!(
                ?reflexive,
                mapping = mapping.as_str(),
                "own endpoints as seen by others"
            )
        }
        Event::RelayReserved { relay, .. } => tracing::info!(%relay, "relay reservation held"),
        Event::RelayRefused {
            address, reason, ..
        } => tracing::warn!(peer = %address, reason = reason.as_str(), "relay refused to forward"),
    }
}

/// The node commands that give identity `local` its relays and hidden flag.
pub(crate) fn paths_of(
    local: LocalId,
    hidden: bool,
    relays: &[metanet_proto::record::Relay],
) -> [node::Command; 2] {
    [
        node::Command::SetRelays {
            local,
            relays: relays.to_vec(),
        },
        node::Command::SetHidden { local, hidden },
    ]
}

/// Node time: since the daemon started.
pub(crate) fn now(origin: std::time::Instant) -> Instant {
    Instant::from_nanos(u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

pub(crate) fn unix_now() -> UnixTime {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UnixTime::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// IPv4-mapped IPv6 (from the dual-stack socket) back to IPv4, so endpoints compare
/// and print the way users wrote them.
/// Why `endpoint` cannot be where a peer listens, if it cannot: the unspecified
/// address, port 0, multicast, broadcast (v4 and v4-mapped alike).
pub fn check_endpoint(endpoint: SocketAddr) -> Result<(), &'static str> {
    let ip = normalize(endpoint).ip();
    if endpoint.port() == 0 {
        return Err("port 0 is not a listening port");
    }
    if ip.is_unspecified() {
        return Err("the unspecified address cannot be a peer's");
    }
    if ip.is_multicast() {
        return Err("a multicast address cannot be a peer's");
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Err("the broadcast address cannot be a peer's");
        }
    }
    Ok(())
}

pub(crate) fn normalize(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// The `.meta` DNS view: where it listens, its state for `status`, its task.
struct DnsView {
    listen: SocketAddr,
    state: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Bind the `.meta` DNS view and serve it. A default address that cannot be bound is
/// a warning (and `failed: …` in `status`); an explicitly configured one is an error.
async fn start_dns(
    opts: &Options,
    first_ip: Ipv6Addr,
    names: dns::Names,
) -> Result<DnsView, Error> {
    let listen = opts
        .dns_listen
        .unwrap_or(SocketAddr::new(IpAddr::V6(first_ip), 53));
    let sock = match tokio::net::UdpSocket::bind(listen).await {
        Ok(s) => s,
        Err(source) if opts.dns_listen.is_some() => {
            return Err(Error::Dns {
                addr: listen,
                source,
            })
        }
        Err(e) => {
            tracing::warn!(%listen, error = %e, "no .meta DNS view");
            return Ok(DnsView {
                listen,
                state: format!("failed: cannot bind {listen}: {e}"),
                task: None,
            });
        }
    };
    tracing::info!(%listen, "DNS for .meta");
    Ok(DnsView {
        listen,
        state: "serving".into(),
        task: Some(tokio::spawn(dns::serve(sock, names))),
    })
}

/// Bind the metrics endpoint when configured and serve it. A bind that fails is an
/// error (it was asked for explicitly).
async fn start_metrics(
    addr: Option<SocketAddr>,
    snapshots: mpsc::Sender<metrics::Request>,
) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Metrics { addr, source })?;
    let ip = normalize(addr).ip();
    let overlay = matches!(ip, IpAddr::V6(v6) if v6.octets()[0] == 0xfd);
    if ip.is_loopback() || overlay {
        tracing::info!(%addr, "metrics at http://{addr}/metrics (no authentication)");
    } else {
        tracing::warn!(
            %addr,
            "metrics at http://{addr}/metrics have no authentication and name every peer: \
             bind metrics-listen to loopback or an overlay address"
        );
    }
    Ok(Some(tokio::spawn(metrics::serve(
        listener,
        snapshots,
        metrics::Limits::default(),
    ))))
}

/// The smallest MTU among the interfaces with a usable address (not loopback, not
/// the TUN): the largest datagram we can send without fragmentation. 1500 if none.
fn underlay_mtu(tun: &str) -> u16 {
    let Ok(ifs) = if_addrs::get_if_addrs() else {
        return config::DEFAULT_MTU + config::OVERHEAD;
    };
    ifs.iter()
        .filter(|i| i.name != tun && !i.is_loopback())
        .filter_map(|i| {
            std::fs::read_to_string(format!("/sys/class/net/{}/mtu", i.name))
                .ok()
                .and_then(|t| t.trim().parse::<u16>().ok())
        })
        .min()
        .unwrap_or(config::DEFAULT_MTU + config::OVERHEAD)
}

/// IPv4 endpoints as IPv4-mapped IPv6, for the dual-stack socket.
pub(crate) fn mapped(to: SocketAddr) -> SocketAddr {
    match to {
        SocketAddr::V4(v4) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        v6 => v6,
    }
}

fn bind_udp(port: u16, buffer: usize) -> Result<std::net::UdpSocket, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let e = |source| Error::Udp { port, source };
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).map_err(e)?;
    s.set_only_v6(false).map_err(e)?;
    if let Err(err) = sys::set_buffers_force(&s, buffer) {
        tracing::warn!(error = %err, "could not enlarge UDP socket buffers");
    }
    s.set_nonblocking(true).map_err(e)?;
    s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())
        .map_err(e)?;
    Ok(s.into())
}

/// Tell systemd we are ready (Type=notify), when started by it.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_budget_admits_ten_lines_a_second_then_counts() {
        let t0 = std::time::Instant::now();
        let mut b = LogBudget::new(t0);
        let admitted = (0..1000).filter(|_| b.admit(t0)).count();
        assert_eq!(admitted, LogBudget::PER_SECOND as usize);
        assert_eq!(b.suppressed, 1000 - u64::from(LogBudget::PER_SECOND));
        assert!(b.admit(t0 + Duration::from_secs(1)));
        assert_eq!(b.suppressed, 0);
    }

    #[test]
    fn endpoints_that_cannot_be_a_peer_are_refused() {
        for bad in [
            "0.0.0.0:51820",
            "[::]:51820",
            "[::1]:0",
            "198.18.0.1:0",
            "255.255.255.255:51820",
            "224.0.0.1:51820",
            "[ff02::1]:51820",
            "[::ffff:0.0.0.0]:51820",
            "[::ffff:255.255.255.255]:51820",
        ] {
            let e: SocketAddr = bad.parse().unwrap_or_else(|_| panic!("{bad}"));
            assert!(check_endpoint(e).is_err(), "{bad} accepted");
        }
        for good in ["198.18.0.1:51820", "[2001:db8::1]:51820", "[::1]:51820"] {
            let e: SocketAddr = good.parse().unwrap_or_else(|_| panic!("{good}"));
            assert!(check_endpoint(e).is_ok(), "{good} refused");
        }
    }
}
