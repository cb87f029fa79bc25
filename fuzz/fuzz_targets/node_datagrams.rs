//! The node state machine driven by arbitrary input, with a scripted peer.
//!
//! One node (one local identity, one known peer) is fed a sequence of operations
//! decoded from the input: `op u8 ‖ len u16le ‖ body[len]`. Besides raw datagrams, TUN
//! packets and clock jumps, the harness plays the peer honestly (real initiations,
//! responses and sealed data) so that fuzzed input is interleaved with live sessions
//! rather than stopping at the first MAC or AEAD check. After every operation all
//! transmits and events are drained; the peer consumes what is addressed to it.
//!
//! The first input byte picks the configuration (odd: tiny queues and load threshold,
//! so that bounds and cookies are reached). Then `op % 10` selects, with `op / 10` as
//! an argument (source endpoint, destination, time scale...):
//!
//! ```text
//! 0 raw datagram               5 the peer initiates (now, or with a stale timestamp)
//! 1 datagram with valid mac1,  6 the peer answers the node's last initiation or
//!   or a record request          record request
//! 2 raw TUN packet             7 the peer sends sealed data, maybe from a new endpoint
//! 3 IPv6 TUN packet from us    8 replay of the last datagram
//! 4 time passes + timeout      9 driver command (remove/add/connect peer, connect by
//!                                endpoint, lookup failed)
//! ```
//!
//! `fuzz/seeds/node_datagrams/` holds a scripted exchange (handshake both ways, data,
//! expiry, replay) to start from.
//!
//! Checked on every run: nothing panics; every packet the node hands to the TUN is
//! IPv6 from the peer's overlay address to ours; every data message the node seals for
//! one of the peer's sessions decrypts; every record the node hands out verifies for
//! its address; after every operation `Node::check_invariants` holds (no session index
//! left behind, maps and bounds consistent).
#![no_main]

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use metanet_proto::handshake::{self, Cookie, ExpectResponse, Remote};
use metanet_proto::ip::{self, Ipv6Packet};
use metanet_proto::node::{Command, Config, LocalId, Node};
use metanet_proto::record::{Lookup, PeerRecord};
use metanet_proto::session::{self, Keypair};
use metanet_proto::wire::{
    self, CookieReplyPacket, CookieReplyRepr, DataPacket, Kind, RecordRequestPacket,
    RecordRequestRepr, RecordResponsePacket, RecordResponseRepr,
};
use metanet_proto::{Address, Identity, Instant, UnixTime};

const UNIX_START: u64 = 1_800_000_000;
const PSK: [u8; 32] = [0; 32];

/// Where datagrams come from: the peer's endpoint first.
fn source(i: u8) -> SocketAddr {
    match i % 4 {
        0 => "198.51.100.7:51820",
        1 => "[2001:db8::9]:4000",
        2 => "203.0.113.5:9999",
        _ => "198.51.100.7:51821",
    }
    .parse()
    .unwrap_or_else(|_| unreachable!())
}

/// The peer's identity: never handed to the node, so it is made once.
fn peer() -> &'static Identity {
    static PEER: OnceLock<Identity> = OnceLock::new();
    PEER.get_or_init(|| Identity::generate(&[0x22; 64]))
}

struct Harness {
    node: Node,
    local: LocalId,
    /// The node's identity, as the peer knows it.
    me: Remote,
    me_address: Address,
    me_ipv6: Ipv6Addr,
    peer: &'static Identity,
    now: Instant,
    /// The peer's handshake in flight, if it initiated.
    pending: Option<ExpectResponse>,
    cookie: Option<Cookie>,
    /// The last initiation the node sent to the peer.
    node_initiation: Option<Vec<u8>>,
    /// The last record request the node sent, and where to.
    node_record_request: Option<(SocketAddr, Vec<u8>)>,
    /// The peer's sessions, newest last (a few, so data on older ones is checked too).
    sessions: Vec<Keypair>,
    /// The peer's next session index: unique, so a data message names one session.
    next_index: u32,
    /// The last datagram given to the node, for replays.
    last: Option<(SocketAddr, Vec<u8>)>,
    out: Vec<u8>,
}

impl Harness {
    fn new(low_limits: bool) -> Self {
        let config = if low_limits {
            // Small enough that queues, lookups and the cookie load threshold fill up
            // within one input.
            Config {
                queue_per_peer: 2,
                max_pending_lookups: 2,
                load_threshold: 1,
                per_source_rate: 1,
                persistent_keepalive: Some(Duration::from_secs(1)),
                // A relay too, so relay messages reach the forwarding checks.
                relay: Some(metanet_proto::node::RelayLimits {
                    rate: 1000,
                    sessions: 1,
                    clients: 2,
                    lifetime: Duration::from_secs(2),
                }),
                ..Config::default()
            }
        } else {
            Config::default()
        };
        let mut node = Node::new(
            config,
            [0; 32],
            Instant::ZERO,
            UnixTime::from_secs(UNIX_START),
        );
        let id = Identity::generate(&[0x11; 64]);
        let (me, me_address) = (Self::remote(&id), id.address());
        let local = node.add_identity(id);
        let mut h = Harness {
            node,
            local,
            me,
            me_address,
            me_ipv6: me_address.ipv6(),
            peer: peer(),
            now: Instant::ZERO,
            pending: None,
            cookie: None,
            node_initiation: None,
            node_record_request: None,
            sessions: Vec::new(),
            next_index: 1,
            last: None,
            out: vec![0; wire::MAX_DATAGRAM],
        };
        h.add_peer(false);
        h
    }

    fn remote(id: &Identity) -> Remote {
        Remote {
            public_key: id.public_key(),
            noise_key: id.noise().public_key(),
        }
    }

    fn add_peer(&mut self, connect: bool) {
        let _ = self.node.handle_command(
            self.now,
            Command::AddPeer {
                local: self.local,
                remote: Self::remote(self.peer),
                endpoint: Some(source(0)),
                candidates: Vec::new(),
                relay: None,
                connect,
            },
        );
    }

    fn unix_now(&self) -> UnixTime {
        UnixTime::from_nanos(UNIX_START * 1_000_000_000 + self.now.as_nanos())
    }

    fn datagram(&mut self, from: SocketAddr, mut bytes: Vec<u8>) {
        self.last = Some((from, bytes.clone()));
        if let Some(range) = self.node.handle_datagram(self.now, from, &mut bytes) {
            let inner = &bytes[range];
            let ip = Ipv6Packet::new_checked(inner).expect("node delivered a non-IPv6 packet");
            assert_eq!(
                ip.src(),
                self.peer.address().ipv6(),
                "delivered from a stranger"
            );
            assert_eq!(ip.dst(), self.me_ipv6, "delivered to a stranger");
        }
    }

    fn tun(&mut self, packet: &[u8]) {
        let mut out = vec![0u8; packet.len() + wire::DATA_OVERHEAD];
        if let Some(t) = self.node.handle_tun_packet(self.now, packet, &mut out) {
            assert!(t.len <= out.len());
            self.peer_receives(t.destination, &out[..t.len]);
        }
    }

    /// Drain everything the node wants to send or say; the peer reads what is its.
    fn drain(&mut self) {
        let mut buf = std::mem::take(&mut self.out);
        while let Some(t) = self.node.poll_transmit(&mut buf) {
            self.peer_receives(t.destination, &buf[..t.len]);
        }
        self.out = buf;
        while self.node.poll_event().is_some() {}
        let _ = self.node.poll_timeout();
        if let Err(e) = self.node.check_invariants() {
            panic!("node state inconsistent: {e}");
        }
    }

    fn new_session(&mut self, kp: Keypair) {
        if self.sessions.len() == 8 {
            self.sessions.remove(0);
        }
        self.sessions.push(kp);
    }

    fn fresh_index(&mut self) -> u32 {
        self.next_index = self.next_index.wrapping_add(1);
        self.next_index
    }

    /// The peer reads a datagram the node sent (wherever to: the peer may have roamed).
    fn peer_receives(&mut self, destination: SocketAddr, msg: &[u8]) {
        match wire::classify(msg) {
            Ok(Kind::RecordRequest) => {
                self.node_record_request = Some((destination, msg.to_vec()));
            }
            Ok(Kind::RecordResponse) => {
                // The node answers only for its own identity.
                let Ok(p) = RecordResponsePacket::new_checked(msg) else {
                    return;
                };
                let lookup = Lookup::Address(self.me_address);
                if let Err(e) = PeerRecord::verify(p.record(), lookup, self.unix_now()) {
                    panic!("the node handed out a record that does not verify: {e}");
                }
            }
            Ok(Kind::Initiation) => self.node_initiation = Some(msg.to_vec()),
            Ok(Kind::Response) => {
                let Some(state) = self.pending.take() else {
                    return;
                };
                let Ok(p) = wire::ResponsePacket::new_checked(msg) else {
                    return;
                };
                if p.receiver() != state.sender() {
                    self.pending = Some(state);
                    return;
                }
                let est = state
                    .handle_response(&p)
                    .expect("the node's response to an honest initiation is valid");
                let kp = Keypair::new(&est, self.now);
                self.new_session(kp);
            }
            Ok(Kind::CookieReply) => {
                let (Some(state), Ok(p)) =
                    (self.pending.as_ref(), CookieReplyPacket::new_checked(msg))
                else {
                    return;
                };
                if let Ok(c) = state.open_cookie(&CookieReplyRepr::parse(&p), self.now) {
                    self.cookie = Some(c);
                }
            }
            Ok(Kind::Data) => {
                let Ok(p) = DataPacket::new_checked(msg) else {
                    return;
                };
                let receiver = p.receiver();
                let Some(kp) = self.sessions.iter_mut().find(|k| k.local_index == receiver) else {
                    return;
                };
                let counter = p.counter();
                let mut m = msg.to_vec();
                // Replayed or expired is fine; a forged-looking message from the node is not.
                assert_ne!(
                    kp.open(&mut m, counter, self.now).err(),
                    Some(session::Error::Decrypt),
                    "the node sealed data that does not open"
                );
            }
            _ => {}
        }
    }

    fn step(&mut self, op: u8, body: &[u8]) {
        let arg = op / 10;
        match op % 10 {
            // A raw datagram.
            0 => self.datagram(source(arg), body.to_vec()),
            // A datagram with a valid mac1 for our identity, or a record request for
            // us or the peer.
            1 => {
                let b = match arg % 3 {
                    0 => {
                        let mut b = body.to_vec();
                        if b.len() >= 2 * wire::MAC_LEN {
                            handshake::write_macs(&mut b, &self.me.noise_key, None);
                        }
                        b
                    }
                    n => {
                        let mut nonce = [0u8; 4];
                        for (d, s) in nonce.iter_mut().zip(body) {
                            *d = *s;
                        }
                        let target = if n == 1 {
                            self.me_address
                        } else {
                            self.peer.address()
                        };
                        let r = RecordRequestRepr {
                            nonce: u32::from_le_bytes(nonce),
                            target: *target.as_bytes(),
                        };
                        let mut b = vec![0u8; r.buffer_len()];
                        r.emit(&mut b);
                        b
                    }
                };
                self.datagram(source(arg / 3), b);
            }
            // A raw TUN packet.
            2 => self.tun(body),
            // A well-formed TUN packet from us to the peer, an unknown overlay address
            // or ourselves.
            3 => {
                let dst = match arg % 3 {
                    0 => self.peer.address().ipv6(),
                    1 => {
                        let mut o = [0xfd; 16];
                        for (d, s) in o[1..].iter_mut().zip(body) {
                            *d = *s;
                        }
                        Ipv6Addr::from(o)
                    }
                    _ => self.me_ipv6,
                };
                let payload = &body[body.len().min(15)..];
                let packet = ip::build_ipv6(self.me_ipv6, dst, payload);
                self.tun(&packet);
            }
            // Time passes.
            4 => {
                let n = u64::from(u16::from_le_bytes([
                    body.first().copied().unwrap_or(0),
                    body.get(1).copied().unwrap_or(0),
                ]));
                self.now = match arg % 4 {
                    0 => self.now + Duration::from_millis(n),
                    1 => self.now + Duration::from_millis(100 * n),
                    2 => self.now + Duration::from_secs(10 * n),
                    _ => self
                        .node
                        .poll_timeout()
                        .filter(|t| t.as_nanos() > self.now.as_nanos())
                        .unwrap_or(self.now),
                };
                self.node.handle_timeout(self.now);
            }
            // The peer initiates.
            5 => {
                let mut seed = [0u8; 32];
                for (d, s) in seed.iter_mut().zip(body) {
                    *d = *s;
                }
                let sender = self.fresh_index();
                // Usually now; sometimes an old timestamp, which must be refused.
                let timestamp = if arg % 4 == 3 {
                    UnixTime::from_nanos(UNIX_START * 1_000_000_000)
                } else {
                    self.unix_now()
                };
                let cookie = self.cookie.as_ref().filter(|c| c.is_fresh(self.now));
                if let Ok((state, msg)) =
                    handshake::initiate(self.peer, self.me, &PSK, sender, timestamp, cookie, seed)
                {
                    self.pending = Some(state);
                    self.datagram(source(arg), msg);
                }
            }
            // The peer answers the node's last record request with its record, from
            // where it was sent or from elsewhere.
            6 if arg & 1 == 1 => {
                let Some((to, req)) = self.node_record_request.take() else {
                    return;
                };
                let Ok(p) = RecordRequestPacket::new_checked(&req[..]) else {
                    return;
                };
                let unix = self.unix_now().as_secs();
                let rec = PeerRecord::new(self.peer, Vec::new(), Vec::new(), unix, unix + 3600);
                let Ok(signed) = rec.sign(self.peer) else {
                    return;
                };
                let r = RecordResponseRepr {
                    nonce: p.nonce(),
                    record: signed,
                };
                let mut b = vec![0u8; r.buffer_len()];
                r.emit(&mut b);
                let from = if arg & 2 == 0 { to } else { source(arg / 4) };
                self.datagram(from, b);
            }
            // The peer answers the node's last initiation.
            6 => {
                let Some(init) = self.node_initiation.take() else {
                    return;
                };
                let Ok(p) = wire::InitiationPacket::new_checked(&init[..]) else {
                    return;
                };
                let mut seed = [0u8; 32];
                for (d, s) in seed.iter_mut().zip(body) {
                    *d = *s;
                }
                let accept = handshake::read_initiation(self.peer, &PSK, &p, seed)
                    .expect("the node's initiation to its peer is valid");
                let index = self.fresh_index();
                if let Ok((est, msg)) = accept.accept(self.peer, index) {
                    let kp = Keypair::new(&est, self.now);
                    self.new_session(kp);
                    self.datagram(source(arg), msg);
                }
            }
            // The peer sends data: an IPv6 packet to us (or arbitrary bytes), possibly
            // from a new endpoint.
            7 => {
                let Some(kp) = self.sessions.last_mut() else {
                    return;
                };
                let plain = if arg & 1 == 0 {
                    ip::build_ipv6(self.peer.address().ipv6(), self.me_ipv6, body)
                } else {
                    body.to_vec()
                };
                let mut buf = vec![0u8; plain.len() + wire::DATA_OVERHEAD];
                buf[wire::DATA_HEADER_LEN..][..plain.len()].copy_from_slice(&plain);
                if let Ok(n) = kp.seal(&mut buf, plain.len(), self.now) {
                    buf.truncate(n);
                    self.datagram(source(arg / 2), buf);
                }
            }
            // A replay of the last datagram, possibly from elsewhere.
            8 => {
                if let Some((from, bytes)) = self.last.clone() {
                    let from = if arg == 0 { from } else { source(arg) };
                    self.datagram(from, bytes);
                }
            }
            // Driver commands.
            _ => match arg % 5 {
                0 => {
                    let _ = self.node.handle_command(
                        self.now,
                        Command::RemovePeer {
                            local: self.local,
                            address: self.peer.address(),
                        },
                    );
                }
                1 => self.add_peer(false),
                2 => self.add_peer(true),
                3 => {
                    let _ = self.node.handle_command(
                        self.now,
                        Command::Connect {
                            local: self.local,
                            address: self.peer.address(),
                            endpoint: source(0),
                        },
                    );
                }
                _ => {
                    let mut o = [0xfd; 16];
                    for (d, s) in o[1..].iter_mut().zip(body) {
                        *d = *s;
                    }
                    let _ = self.node.handle_command(
                        self.now,
                        Command::LookupFailed {
                            local: self.local,
                            ipv6: Ipv6Addr::from(o),
                        },
                    );
                }
            },
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, mut rest)) = data.split_first() else {
        return;
    };
    let mut h = Harness::new(config & 1 == 1);
    while let [op, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(tail.len());
        let (body, next) = tail.split_at(len);
        h.step(*op, body);
        h.drain();
        rest = next;
    }
});
