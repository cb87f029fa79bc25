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
    /// The TUN device failed: the daemon stops.
    TunFailed(std::io::Error),
}

/// Decrypted bytes held for the TUN before they are written mid-batch: a few
/// super-packets, so GRO has whole flights to merge and the data is still cached.
const FLUSH_BYTES: usize = 192 * 1024;

/// Bits of [`sys::wait_readable`]'s answer, in the order of the fds given to it.
const UDP_READY: u32 = 1;
const TUN_READY: u32 = 2;
const WAKE_READY: u32 = 4;

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
    pub tun: batch::Tun,
    pub origin: std::time::Instant,
    /// Largest datagram the underlay carries (see `Daemon::path_mtu`).
    pub path_mtu: u16,
    pub wake: Arc<sys::EventFd>,
    pub notes: Sender<Note>,
    pub stop: Arc<AtomicBool>,
    pub counters: Counters,
    /// Where the packets decrypted from the current UDP slot lie: (start, end).
    pub rx: Vec<(usize, usize)>,
    /// Relay messages of the current slot to forward: (start, end, destination).
    pub fwd: Vec<(usize, usize, std::net::SocketAddr)>,
    pub obuf: Vec<u8>,
    /// The watchdog's question and this thread's answer: every turn of the loop copies
    /// the first into the second, so the control task sees whether the data plane
    /// still turns (it asks, and wakes the loop, before each `WATCHDOG=1`).
    pub heartbeat: Arc<[AtomicU64; 2]>,
}

impl DataPlane {
    /// Serve until `stop` is set (and the eventfd signalled) or the TUN fails.
    pub(crate) fn run(mut self) {
        let fds = [
            self.udp.tx.sock.as_raw_fd(),
            self.tun.dev.as_raw_fd(),
            self.wake.raw(),
        ];
        while !self.stop.load(Ordering::Relaxed) {
            self.serve();
            let timeout = self.timers();
            let ready = sys::wait_readable(&fds, timeout);
            let asked = self.heartbeat[0].load(Ordering::Relaxed);
            self.heartbeat[1].store(asked, Ordering::Relaxed);
            if ready & WAKE_READY != 0 {
                self.wake.drain();
            }
            // Read what is ready until it runs dry. A datagram written to the TUN is
            // often answered at once (a ping, a TCP ACK), so the TUN is tried after.
            let (mut udp, mut tun) = (ready & UDP_READY != 0, ready & TUN_READY != 0);
            for _ in 0..ROUNDS {
                if udp {
                    match self.udp.recv() {
                        Ok(0) => udp = false,
                        Ok(n) => {
                            self.on_udp(n);
                            tun = true;
                        }
                        Err(e) => {
                            udp = false;
                            tracing::debug!(error = %e, "udp receive failed");
                        }
                    }
                }
                if tun {
                    match self.tun.recv(&mut self.counters) {
                        Ok(false) => tun = false,
                        Ok(true) => self.on_tun(),
                        Err(e) => {
                            // Must arrive: the daemon stops on it (this thread is not in the runtime).
                            let _ = self.notes.blocking_send(Note::TunFailed(e));
                            return;
                        }
                    }
                }
                if !udp && !tun {
                    break;
                }
                // A control request waits at most one batch, also at line rate.
                self.serve();
            }
        }
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
                }
                Request::RemoveIdentity(local) => {
                    self.node.remove_identity(local);
                }
                Request::Snapshot(answer) => {
                    let _ = answer.try_send(Snapshot {
                        peers: self.node.peers(now),
                        stats: self.node.stats().clone(),
                        data: self.counters,
                        relay: self.node.relay_status(now),
                        relays: self.node.relays_in_use(now),
                        nat: self.node.nat_status(now),
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
        let complete = self.tun.verifies_checksums();
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
                        if complete {
                            offload::complete_plain_checksum(&mut datagram[range.clone()]);
                        }
                        self.rx.push((at + range.start, at + range.end));
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
            for &(start, end) in &self.rx {
                if !self.tun.push(bufs, i, start, end) {
                    self.tun.flush(bufs, &mut self.counters);
                    self.tun.push(bufs, i, start, end);
                }
            }
            if self.tun.queued() >= FLUSH_BYTES {
                self.tun.flush(bufs, &mut self.counters);
            }
        }
        self.tun.flush(self.udp.bufs(), &mut self.counters);
        if forwarded {
            self.udp.flush(&mut self.counters);
        }
    }

    /// A TUN read: cut each packet of it into the UDP stage and seal it there, then
    /// send the stage.
    fn on_tun(&mut self) {
        let now = crate::now(self.origin);
        for i in 0..self.tun.count() {
            let len = self.tun.len(i);
            if len + usize::from(config::OVERHEAD) > usize::from(self.path_mtu) {
                self.too_big(i);
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
            self.tun.write_packet(i, &mut out[wire::DATA_HEADER_LEN..]);
            if let Some(tx) = self.node.handle_tun_packet_in_place(now, out, len) {
                self.udp.commit(tx.destination, tx.len);
            }
            // Events here are on this packet's behalf (a lookup it waits for).
            if self.node.has_events() {
                let packet = self.tun.packet_vec(i);
                self.drain(Some(&packet));
            }
        }
        self.drain(None);
        self.udp.flush(&mut self.counters);
    }

    /// TUN packet `i` cannot cross the underlay once sealed: tell its sender the MTU
    /// that fits (path-MTU discovery), instead of letting it vanish.
    fn too_big(&mut self, i: usize) {
        let packet = self.tun.packet_vec(i);
        let Ok(p) = ip::Ipv6Packet::new_checked(&packet) else {
            return;
        };
        let fits = u32::from(self.path_mtu.saturating_sub(config::OVERHEAD));
        if let Some(icmp) = ip::icmpv6_packet_too_big(&packet, p.dst(), fits) {
            self.counters.too_big += 1;
            self.tun.write_own(&icmp, &mut self.counters);
        }
    }
}
