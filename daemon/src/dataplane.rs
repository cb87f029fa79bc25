//! The data-plane thread: owns the node and moves packets between the TUN and the UDP
//! socket.
//!
//! It blocks in `ppoll` on the two devices (and an eventfd the control task signals
//! when it queued a request, see [`crate::link`]), serves the control task's requests,
//! reads a batch and runs it through the node; the node's timers fire here too. What
//! the node reports comes out as [`Note`]s for the control task (lookups, sessions up,
//! failures) on a bounded channel: when the control task falls behind, notes are
//! dropped and counted, and packets keep moving. A thread of its own with plain
//! blocking calls, not a tokio task: from a wake-up to the read is a few instructions,
//! which is what an idle round trip pays four times over.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use metanet_proto::node::{Event, Node, Received};
use metanet_proto::{ip, wire};
use tokio::sync::mpsc::Sender;

use crate::batch::{self, Counters};
use crate::link::{Request, Snapshot};
use crate::{config, normalize, offload, sys};

/// What the data plane tells the control task.
#[derive(Debug)]
pub(crate) enum Note {
    /// A node event, with the TUN packet it is on behalf of (a lookup it waits for).
    Event(Event, Option<Vec<u8>>),
    /// The host's TUN device failed: the daemon stops.
    TunFailed(std::io::Error),
    /// An attachment's TUN failed (its interface was deleted): it is no longer read.
    /// (slot, its generation, the error.)
    AttachmentFailed(usize, u64, std::io::Error),
}

/// A TUN the data plane reads: the host's (slot 0, its identities' packets) or an
/// attachment's (one identity's, in another network namespace).
pub(crate) struct Slot {
    pub tun: batch::Tun,
    /// The one source address an attachment may send from; `None` for the host.
    pub ip: Option<Ipv6Addr>,
    pub stats: SlotStats,
    /// Which occupant of the slot this is: a freed slot may take a new attachment
    /// while a note or request about the old one is still on its way.
    pub gen: u64,
}

/// What one attachment moved.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SlotStats {
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub spoofed: u64,
}

/// Poll tokens: the UDP socket, the eventfd, then TUN slot `k` as `TUN_TOKEN + k`.
const UDP_TOKEN: u64 = 0;
const WAKE_TOKEN: u64 = 1;
const TUN_TOKEN: u64 = 2;

/// Scratch for packets delivered locally one by one (merged by the target's GRO).
pub(crate) const LOCAL_BUF: usize = 256 * 1024;

/// Decrypted bytes held for the TUN before they are written mid-batch: a few
/// super-packets, so GRO has whole flights to merge and the data is still cached.
const FLUSH_BYTES: usize = 192 * 1024;

/// Batches served before timers and requests are looked at again.
const ROUNDS: usize = 64;

/// Notes queued for the control task at most (beyond: dropped and counted).
pub(crate) const NOTES: usize = 4096;

pub(crate) struct DataPlane {
    /// The node: this thread is its only owner.
    pub node: Node,
    /// The control task's requests.
    pub requests: Receiver<Request>,
    pub udp: batch::Udp,
    /// The TUNs: slot 0 is the host's; attachments take the others (`None`: free).
    pub tuns: Vec<Option<Slot>>,
    /// Which slot each local identity's address lives on (host identities: 0).
    pub locals: HashMap<Ipv6Addr, usize>,
    pub poller: sys::Poller,
    /// Slots with packets waiting, and scratch for local delivery.
    pub ready: Vec<usize>,
    pub local_buf: Vec<Vec<u8>>,
    pub origin: std::time::Instant,
    /// Largest datagram the underlay carries (see `Daemon::path_mtu`).
    pub path_mtu: u16,
    pub wake: Arc<sys::EventFd>,
    pub notes: Sender<Note>,
    pub stop: Arc<AtomicBool>,
    pub counters: Counters,
    /// Where the packets decrypted from the current UDP slot lie, and the TUN slot
    /// each goes to: (start, end, tun slot).
    pub rx: Vec<(usize, usize, usize)>,
    /// Relay messages of the current slot to forward: (start, end, destination).
    pub fwd: Vec<(usize, usize, std::net::SocketAddr)>,
    pub obuf: Vec<u8>,
    /// The watchdog's question and this thread's answer: every turn of the loop copies
    /// the first into the second, so the control task sees whether the data plane
    /// still turns (it asks, and wakes the loop, before each `WATCHDOG=1`).
    pub heartbeat: Arc<[AtomicU64; 2]>,
}

impl DataPlane {
    /// Register the UDP socket, the eventfd and the host TUN with the poller.
    pub(crate) fn register(&self) -> std::io::Result<()> {
        self.poller.add(self.udp.tx.sock.as_raw_fd(), UDP_TOKEN)?;
        self.poller.add(self.wake.raw(), WAKE_TOKEN)?;
        if let Some(host) = &self.tuns[0] {
            self.poller.add(host.tun.dev.raw_fd(), TUN_TOKEN)?;
        }
        Ok(())
    }

    /// Serve until `stop` is set (and the eventfd signalled) or the host TUN fails.
    pub(crate) fn run(mut self) {
        let mut tokens = Vec::with_capacity(64);
        while !self.stop.load(Ordering::Relaxed) {
            self.serve();
            let timeout = self.timers();
            self.poller.wait(timeout, &mut tokens);
            let asked = self.heartbeat[0].load(Ordering::Relaxed);
            self.heartbeat[1].store(asked, Ordering::Relaxed);
            let mut udp = false;
            self.ready.clear();
            for &t in &tokens {
                match t {
                    UDP_TOKEN => udp = true,
                    WAKE_TOKEN => self.wake.drain(),
                    t => self.ready.push((t - TUN_TOKEN) as usize),
                }
            }
            // Read what is ready until it runs dry. A datagram written to the TUN is
            // often answered at once (a ping, a TCP ACK), so the TUN is tried after.
            for _ in 0..ROUNDS {
                if udp {
                    match self.udp.recv() {
                        Ok(0) => udp = false,
                        Ok(n) => {
                            self.on_udp(n);
                            if !self.ready.contains(&0) {
                                self.ready.push(0);
                            }
                        }
                        Err(e) => {
                            udp = false;
                            tracing::debug!(error = %e, "udp receive failed");
                        }
                    }
                }
                let mut k = 0;
                while k < self.ready.len() {
                    let slot = self.ready[k];
                    match self.read_tun(slot) {
                        Ok(true) => k += 1,
                        Ok(false) => {
                            self.ready.swap_remove(k);
                        }
                        Err(e) if slot == 0 => {
                            // Must arrive: the daemon stops on it (this thread is not in the runtime).
                            let _ = self.notes.blocking_send(Note::TunFailed(e));
                            return;
                        }
                        Err(e) => {
                            self.ready.swap_remove(k);
                            let gen = self.tuns[slot].as_ref().map_or(0, |s| s.gen);
                            self.drop_slot(slot);
                            if self
                                .notes
                                .try_send(Note::AttachmentFailed(slot, gen, e))
                                .is_err()
                            {
                                self.counters.notes_dropped += 1;
                            }
                        }
                    }
                }
                if !udp && self.ready.is_empty() {
                    break;
                }
                // A control request waits at most one batch, also at line rate.
                self.serve();
            }
        }
    }

    /// One read from TUN `slot`, handled: `Ok(false)` when nothing was waiting.
    fn read_tun(&mut self, slot: usize) -> std::io::Result<bool> {
        let Some(mut s) = self.tuns.get_mut(slot).and_then(Option::take) else {
            return Ok(false);
        };
        let read = s.tun.recv(&mut self.counters);
        if let Ok(true) = read {
            self.on_tun(slot, &mut s);
        }
        self.tuns[slot] = Some(s);
        read
    }

    /// Stop reading slot `slot` and close its TUN.
    fn drop_slot(&mut self, slot: usize) {
        if let Some(s) = self.tuns.get_mut(slot).and_then(Option::take) {
            self.poller.remove(s.tun.dev.raw_fd());
            self.locals.retain(|_, k| *k != slot);
        }
    }

    /// Which slot each local address lives on: every identity of the node on the
    /// host's, unless an attachment holds it.
    fn relocate(&mut self) {
        let attached: HashMap<Ipv6Addr, usize> = self
            .tuns
            .iter()
            .enumerate()
            .filter_map(|(k, s)| Some((s.as_ref()?.ip?, k)))
            .collect();
        self.locals = self
            .node
            .identities()
            .map(|(_, id)| {
                let ip = id.address().ipv6();
                (ip, attached.get(&ip).copied().unwrap_or(0))
            })
            .collect();
    }

    /// Serve the control task's queued requests, then send what they caused.
    fn serve(&mut self) {
        let mut served = false;
        while let Ok(request) = self.requests.try_recv() {
            served = true;
            let now = crate::now(self.origin);
            // A control task that gave up waiting has dropped its answer channel: the
            // answer is then simply not delivered.
            match request {
                Request::Command(command, answer) => {
                    let result = self.node.handle_command(now, command);
                    if let Some(a) = answer {
                        let _ = a.try_send(result);
                    }
                }
                Request::AddIdentity(identity, answer) => {
                    let _ = answer.try_send(self.node.add_identity(identity));
                    self.relocate();
                }
                Request::RemoveIdentity(local) => {
                    self.node.remove_identity(local);
                    self.relocate();
                }
                Request::Attach { ip, dev, answer } => {
                    let _ = answer.try_send(self.attach(ip, dev));
                }
                Request::Policy { local, answer } => {
                    let keys = self.node.network_keys(now, local).unwrap_or_default();
                    let policy = self
                        .node
                        .policy(local)
                        .map(|(p, c)| (p.clone(), c.clone(), keys));
                    let _ = answer.try_send(policy);
                }
                Request::Detach(slot, gen) => {
                    // Only the occupant asked about: the slot may hold a newer one.
                    let current = self.tuns.get(slot).and_then(Option::as_ref);
                    if slot > 0 && current.is_some_and(|s| s.gen == gen) {
                        self.drop_slot(slot);
                        self.relocate();
                    }
                }
                Request::Snapshot(answer) => {
                    let _ = answer.try_send(Snapshot {
                        peers: self.node.peers(now),
                        stats: self.node.stats().clone(),
                        data: self.counters,
                        relay: self.node.relay_status(now),
                        relays: self.node.relays_in_use(now),
                        nat: self.node.nat_status(now),
                        slots: self
                            .tuns
                            .iter()
                            .enumerate()
                            .filter_map(|(k, s)| Some((k, s.as_ref()?.stats)))
                            .collect(),
                    });
                }
                Request::Peer {
                    local,
                    address,
                    answer,
                } => {
                    let _ = answer.try_send(self.node.peer(now, local, &address));
                }
            }
        }
        if served {
            self.drain(None);
        }
    }

    /// Fire the node's timers if due; returns how long to sleep until the next timer.
    fn timers(&mut self) -> Option<Duration> {
        let now = crate::now(self.origin);
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
            self.drain(None);
        }
        self.node
            .poll_timeout()
            .map(|t| Duration::from_nanos(t.as_nanos().saturating_sub(now.as_nanos())))
    }

    /// Send what the node queued and pass its events on (`trigger`: the TUN packet
    /// they are on behalf of).
    fn drain(&mut self, trigger: Option<&[u8]>) {
        while let Some(tx) = self.node.poll_transmit(&mut self.obuf) {
            self.udp
                .tx
                .send_one(&self.obuf[..tx.len], tx.destination, &mut self.counters);
        }
        while let Some(ev) = self.node.poll_event() {
            let note = Note::Event(ev, trigger.map(<[u8]>::to_vec));
            if self.notes.try_send(note).is_err() {
                self.counters.notes_dropped += 1;
            }
        }
    }

    /// A batch of UDP datagrams: slot by slot, decrypt each in place, then hand the packets to the TUN where they lie (merged by GRO). Written once
    /// [`FLUSH_BYTES`] are held (so that they are still in the cache) and at the end.
    fn on_udp(&mut self, slots: usize) {
        self.udp.count_recv(slots, &mut self.counters);
        let now = crate::now(self.origin);
        let mut forwarded = false;
        for i in 0..slots {
            self.rx.clear();
            self.fwd.clear();
            let (from, stride, bytes) = self.udp.slot(i);
            let from = normalize(from);
            for (j, datagram) in bytes.chunks_mut(stride).enumerate() {
                let at = j * stride;
                match self.node.handle_datagram_forwarding(now, from, datagram) {
                    Received::Tun(range) => {
                        let slot = destination(&datagram[range.clone()])
                            .and_then(|d| self.locals.get(&d).copied())
                            .unwrap_or(0);
                        let Some(Some(s)) = self.tuns.get_mut(slot) else {
                            continue;
                        };
                        if s.tun.verifies_checksums() {
                            offload::complete_plain_checksum(&mut datagram[range.clone()]);
                        }
                        s.stats.rx_packets += 1;
                        self.rx.push((at + range.start, at + range.end, slot));
                    }
                    Received::Forward { to, start } => {
                        self.fwd.push((at + start, at + datagram.len(), to));
                    }
                    Received::Nothing => {}
                }
            }
            // Relayed datagrams leave as they came, batched like sealed ones.
            for k in 0..self.fwd.len() {
                let (start, end, to) = self.fwd[k];
                self.udp.forward(i, start, end, to, &mut self.counters);
                forwarded = true;
            }
            self.drain(None);
            let bufs = self.udp.bufs();
            for &(start, end, slot) in &self.rx {
                let Some(Some(s)) = self.tuns.get_mut(slot) else {
                    continue;
                };
                if !s.tun.push(bufs, i, start, end) {
                    s.tun.flush(bufs, &mut self.counters);
                    s.tun.push(bufs, i, start, end);
                }
                if s.tun.queued() >= FLUSH_BYTES {
                    s.tun.flush(bufs, &mut self.counters);
                }
            }
        }
        let bufs = self.udp.bufs();
        for s in self.tuns.iter_mut().flatten() {
            s.tun.flush(bufs, &mut self.counters);
        }
        if forwarded {
            self.udp.flush(&mut self.counters);
        }
    }

    /// A read from TUN `slot` (taken out of `tuns` meanwhile): its source checked
    /// against the slot's identities, then delivered to another local identity's TUN,
    /// or cut into the UDP stage packet by packet and sealed there, the stage sent.
    fn on_tun(&mut self, slot: usize, s: &mut Slot) {
        let Some((src, dst)) = s.tun.addresses() else {
            // Not IPv6: the node counts it as invalid.
            return self.seal(s);
        };
        let owner = self.locals.get(&src).copied();
        let allowed = match s.ip {
            Some(ip) => ip == src,
            None => owner.is_none_or(|k| k == 0),
        };
        if !allowed {
            // Another overlay address is a spoof; link-local chatter (router and
            // listener solicitations) is simply not for the overlay.
            if src.octets()[0] == metanet_proto::address::OVERLAY_FIRST_BYTE {
                self.counters.source_refused += s.tun.count() as u64;
                s.stats.spoofed += s.tun.count() as u64;
            }
            return;
        }
        s.stats.tx_packets += s.tun.count() as u64;
        match self.locals.get(&dst).copied() {
            Some(target) if target != slot && dst != src => self.deliver(s, target),
            _ => self.seal(s),
        }
    }

    /// Hand the read to the local identity on slot `target`: as it was read when it is
    /// a super-packet both TUNs take whole, else packet by packet through the target's
    /// GRO (as if decrypted).
    fn deliver(&mut self, s: &mut Slot, target: usize) {
        // The destination's policy holds for its neighbours too (one check per read:
        // a super-packet's segments share their headers).
        let now = crate::now(self.origin);
        let first = s.tun.packet_vec(0);
        if !self.node.local_delivery_passes(now, &first) {
            return;
        }
        let Some(Some(t)) = self.tuns.get_mut(target) else {
            return;
        };
        let count = s.tun.count();
        self.counters.local_packets += count as u64;
        t.stats.rx_packets += count as u64;
        if t.tun.verifies_checksums() {
            // No offload at the target: packets one by one, checksums complete.
            for i in 0..count {
                let mut p = s.tun.packet_vec(i);
                offload::complete_plain_checksum(&mut p);
                t.tun.write_own(&p, &mut self.counters);
            }
            return;
        }
        if let Some(whole) = s.tun.whole_read() {
            t.tun.write_whole(whole, count, &mut self.counters);
            return;
        }
        self.local_buf[0].clear();
        for i in 0..count {
            let len = s.tun.len(i);
            if self.local_buf[0].len() + len > LOCAL_BUF {
                t.tun.flush(&self.local_buf, &mut self.counters);
                self.local_buf[0].clear();
            }
            let start = self.local_buf[0].len();
            self.local_buf[0].resize(start + len, 0);
            s.tun.write_packet(i, &mut self.local_buf[0][start..]);
            if !t.tun.push(&self.local_buf, 0, start, start + len) {
                // Full: write what is held (the buffer stays), then take this one.
                t.tun.flush(&self.local_buf, &mut self.counters);
                t.tun.push(&self.local_buf, 0, start, start + len);
            }
        }
        t.tun.flush(&self.local_buf, &mut self.counters);
    }

    /// Seal each packet of the read for its peer in the UDP stage, then send the stage.
    fn seal(&mut self, s: &mut Slot) {
        let now = crate::now(self.origin);
        for i in 0..s.tun.count() {
            let len = s.tun.len(i);
            if len + usize::from(config::OVERHEAD) > usize::from(self.path_mtu) {
                self.too_big(s, i);
                continue;
            }
            // Room for a relay header too, should the peer be relayed.
            let need = len + wire::DATA_OVERHEAD + wire::RELAY_HEADER_LEN;
            if self.udp.stage_buf(need).is_none() {
                self.udp.flush(&mut self.counters);
            }
            let Some(out) = self.udp.stage_buf(need) else {
                continue;
            };
            s.tun.write_packet(i, &mut out[wire::DATA_HEADER_LEN..]);
            if let Some(tx) = self.node.handle_tun_packet_in_place(now, out, len) {
                self.udp.commit(tx.destination, tx.len);
            }
            // Events here are on this packet's behalf (a lookup it waits for).
            if self.node.has_events() {
                let packet = s.tun.packet_vec(i);
                self.drain(Some(&packet));
            }
        }
        self.drain(None);
        self.udp.flush(&mut self.counters);
    }

    /// TUN packet `i` cannot cross the underlay once sealed: tell its sender the MTU
    /// that fits (path-MTU discovery), instead of letting it vanish.
    fn too_big(&mut self, s: &Slot, i: usize) {
        let packet = s.tun.packet_vec(i);
        let Ok(p) = ip::Ipv6Packet::new_checked(&packet) else {
            return;
        };
        let fits = u32::from(self.path_mtu.saturating_sub(config::OVERHEAD));
        if let Some(icmp) = ip::icmpv6_packet_too_big(&packet, p.dst(), fits) {
            self.counters.too_big += 1;
            s.tun.write_own(&icmp, &mut self.counters);
        }
    }

    /// Start reading attachment TUN `dev`, whose identity's address is `ip`; returns
    /// its slot and the occupant's generation.
    fn attach(&mut self, ip: Ipv6Addr, dev: std::sync::Arc<sys::TunFd>) -> Option<(usize, u64)> {
        static GENERATION: AtomicU64 = AtomicU64::new(1);
        let slot = match self.tuns.iter().skip(1).position(Option::is_none) {
            Some(k) => k + 1,
            None => {
                self.tuns.push(None);
                self.tuns.len() - 1
            }
        };
        let tun = batch::Tun::new(batch::TunDev::Attached(dev));
        if let Err(e) = self.poller.add(tun.dev.raw_fd(), TUN_TOKEN + slot as u64) {
            tracing::warn!(error = %e, "cannot poll an attachment's TUN");
            return None;
        }
        let gen = GENERATION.fetch_add(1, Ordering::Relaxed);
        self.tuns[slot] = Some(Slot {
            tun,
            ip: Some(ip),
            stats: SlotStats::default(),
            gen,
        });
        self.relocate();
        Some((slot, gen))
    }
}

/// The destination of an IPv6 packet.
fn destination(p: &[u8]) -> Option<Ipv6Addr> {
    let d: [u8; 16] = p.get(24..40)?.try_into().ok()?;
    (p[0] >> 4 == 6).then_some(Ipv6Addr::from(d))
}
