//! The data-plane thread: moves packets between the TUN and the UDP socket.
//!
//! It blocks in `ppoll` on the two devices (and an eventfd the control task signals
//! when it changed the node), reads a batch, and runs it through the node under the
//! shared lock; the node's timers fire here too. What the node reports comes out as
//! [`Note`]s for the control task (lookups, sessions up, failures). A thread of its
//! own with plain blocking calls, not a tokio task: from a wake-up to the read is a
//! few instructions, which is what an idle round trip pays four times over.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metanet_proto::node::Event;
use metanet_proto::{ip, wire};
use tokio::sync::mpsc::UnboundedSender;

use crate::batch::{self, Counters};
use crate::{config, lock, normalize, offload, sys, Core};

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

/// Batches served before timers are looked at again.
const ROUNDS: usize = 64;

pub(crate) struct DataPlane {
    pub core: Arc<Mutex<Core>>,
    pub udp: batch::Udp,
    pub tun: batch::Tun,
    pub origin: std::time::Instant,
    /// Largest datagram the underlay carries (see `Daemon::path_mtu`).
    pub path_mtu: u16,
    pub wake: Arc<sys::EventFd>,
    pub notes: UnboundedSender<Note>,
    pub stop: Arc<AtomicBool>,
    pub counters: Counters,
    /// Where the packets decrypted from the current UDP slot lie: (start, end).
    pub rx: Vec<(usize, usize)>,
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
                            let _ = self.notes.send(Note::TunFailed(e));
                            return;
                        }
                    }
                }
                if !udp && !tun {
                    break;
                }
            }
        }
    }

    /// Fire the node's timers if due and publish the counters; returns how long to
    /// sleep until the next timer.
    fn timers(&mut self) -> Option<Duration> {
        let core = self.core.clone();
        let mut core = lock(&core);
        let now = crate::now(self.origin);
        if core.node.poll_timeout().is_some_and(|t| t <= now) {
            core.node.handle_timeout(now);
            self.drain(&mut core, None);
        }
        core.data = self.counters;
        core.node
            .poll_timeout()
            .map(|t| Duration::from_nanos(t.as_nanos().saturating_sub(now.as_nanos())))
    }

    /// Send what the node queued and pass its events on (`trigger`: the TUN packet
    /// they are on behalf of).
    fn drain(&mut self, core: &mut Core, trigger: Option<&[u8]>) {
        while let Some(tx) = core.node.poll_transmit(&mut self.obuf) {
            self.udp
                .tx
                .send_one(&self.obuf[..tx.len], tx.destination, &mut self.counters);
        }
        while let Some(ev) = core.node.poll_event() {
            let _ = self
                .notes
                .send(Note::Event(ev, trigger.map(<[u8]>::to_vec)));
        }
    }

    /// A batch of UDP datagrams: slot by slot, decrypt each in place under the lock,
    /// then hand the packets to the TUN where they lie (merged by GRO). Written once
    /// [`FLUSH_BYTES`] are held (so that they are still in the cache) and at the end.
    fn on_udp(&mut self, slots: usize) {
        self.udp.count_recv(slots, &mut self.counters);
        let now = crate::now(self.origin);
        let complete = self.tun.verifies_checksums();
        let core = self.core.clone();
        for i in 0..slots {
            self.rx.clear();
            {
                let mut core = lock(&core);
                let (from, stride, bytes) = self.udp.slot(i);
                let from = normalize(from);
                for (j, datagram) in bytes.chunks_mut(stride).enumerate() {
                    if let Some(range) = core.node.handle_datagram(now, from, datagram) {
                        if complete {
                            offload::complete_plain_checksum(&mut datagram[range.clone()]);
                        }
                        let at = j * stride;
                        self.rx.push((at + range.start, at + range.end));
                    }
                }
                self.drain(&mut core, None);
            }
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
    }

    /// A TUN read: cut each packet of it into the UDP stage and seal it there under
    /// the lock, then send the stage.
    fn on_tun(&mut self) {
        let now = crate::now(self.origin);
        let core = self.core.clone();
        let mut core = lock(&core);
        for i in 0..self.tun.count() {
            let len = self.tun.len(i);
            if len + usize::from(config::OVERHEAD) > usize::from(self.path_mtu) {
                self.too_big(i);
                continue;
            }
            let need = len + wire::DATA_OVERHEAD;
            if self.udp.stage_buf(need).is_none() {
                self.udp.flush(&mut self.counters);
            }
            let Some(out) = self.udp.stage_buf(need) else {
                continue;
            };
            self.tun.write_packet(i, &mut out[wire::DATA_HEADER_LEN..]);
            if let Some(tx) = core.node.handle_tun_packet_in_place(now, out, len) {
                self.udp.commit(tx.destination, tx.len);
            }
            // Events here are on this packet's behalf (a lookup it waits for).
            if core.node.has_events() {
                let packet = self.tun.packet_vec(i);
                self.drain(&mut core, Some(&packet));
            }
        }
        self.drain(&mut core, None);
        drop(core);
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
