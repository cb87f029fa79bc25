//! Batched I/O for the data plane (docs/architecture.md "Data plane").
//!
//! Per-packet system calls, not crypto, limit a userspace tunnel. Both devices are
//! therefore read and written in batches:
//!
//! - **TUN** with offload (`IFF_VNET_HDR`, TSO/USO): one read returns a TCP or UDP
//!   super-packet of up to 64 KiB that tun-rs splits into MTU-sized segments; writes go
//!   through a GRO table that merges consecutive segments of a flow back into
//!   super-packets, so the kernel's TCP stack sees few large packets.
//! - **UDP** through quinn-udp: `recvmmsg` with UDP GRO (one slot holds up to 64
//!   datagrams of one sender), and `sendmsg` with UDP GSO (`UDP_SEGMENT`): the sealed
//!   segments of one super-packet leave in one call.
//!
//! Buffers are allocated once and reused; nothing here allocates per packet.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tun_rs::{AsyncDevice, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Headroom before each packet in TUN buffers (the virtio header goes there).
pub(crate) const TUN_OFFSET: usize = 2 * VIRTIO_NET_HDR_LEN;
/// Largest IP packet.
const MAX_PACKET: usize = 65_535;
/// UDP receive slots per `recvmmsg`.
const UDP_SLOTS: usize = 16;
/// Bytes per UDP receive slot: one GRO train of up to 64 datagrams.
const UDP_SLOT_LEN: usize = 64 * 1024;
/// Most bytes in one GSO send (a UDP datagram's payload limit, with margin).
const MAX_GSO_BYTES: usize = 65_000;
/// Bytes of sealed datagrams staged before a send.
const STAGE_LEN: usize = 512 * 1024;

/// Counters that show the fast paths are taken (exported in `metanet status`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    /// TUN reads, and the packets they yielded (more packets than reads: TSO splits).
    pub tun_reads: u64,
    pub tun_packets_in: u64,
    /// Packets handed to the TUN, and the super-packets GRO merged some of them into.
    pub tun_packets_out: u64,
    pub tun_merged_out: u64,
    /// UDP receive calls, and the datagrams they returned (recvmmsg and GRO).
    pub udp_recv_calls: u64,
    pub udp_datagrams_in: u64,
    /// UDP send calls, and the datagrams they carried (GSO).
    pub udp_send_calls: u64,
    pub udp_datagrams_out: u64,
    /// TUN packets answered with ICMPv6 Packet Too Big.
    pub too_big: u64,
}

/// The TUN device with its batch buffers.
pub(crate) struct Tun {
    pub dev: AsyncDevice,
    orig: Vec<u8>,
    rbufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// Packets read by the last [`Tun::recv`].
    pub count: usize,
    wbufs: Vec<Vec<u8>>,
    /// Lengths of the write buffers before the last GRO pass.
    lens: Vec<usize>,
    pending: usize,
    gro: GROTable,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("pending", &self.pending)
            .finish()
    }
}

impl Tun {
    pub(crate) fn new(dev: AsyncDevice) -> Self {
        Tun {
            dev,
            orig: vec![0; VIRTIO_NET_HDR_LEN + MAX_PACKET],
            rbufs: (0..IDEAL_BATCH_SIZE)
                .map(|_| vec![0; TUN_OFFSET + MAX_PACKET])
                .collect(),
            sizes: vec![0; IDEAL_BATCH_SIZE],
            count: 0,
            // GRO appends merged segments to the first buffer of a flow: each needs room
            // for a whole super-packet, or tun-rs quietly writes one packet at a time.
            wbufs: (0..IDEAL_BATCH_SIZE)
                .map(|_| Vec::with_capacity(2 * TUN_OFFSET + MAX_PACKET))
                .collect(),
            lens: vec![0; IDEAL_BATCH_SIZE],
            pending: 0,
            gro: GROTable::default(),
        }
    }

    /// Read one batch; afterwards packets `0..count` are at [`Tun::packet`].
    pub(crate) async fn recv(&mut self) -> io::Result<()> {
        self.count = 0;
        let n = self
            .dev
            .recv_multiple(&mut self.orig, &mut self.rbufs, &mut self.sizes, TUN_OFFSET)
            .await?;
        self.count = n;
        Ok(())
    }

    /// Count the batch just read.
    pub(crate) fn count_read(&self, c: &mut Counters) {
        c.tun_reads += 1;
        c.tun_packets_in += self.count as u64;
    }

    /// Packet `i` of the last batch read.
    pub(crate) fn packet(&self, i: usize) -> &[u8] {
        &self.rbufs[i][TUN_OFFSET..TUN_OFFSET + self.sizes[i]]
    }

    /// Whether the write batch is full (flush before pushing more).
    pub(crate) fn full(&self) -> bool {
        self.pending == self.wbufs.len()
    }

    /// Queue a packet for the TUN; the caller flushes when [`Tun::full`].
    pub(crate) fn push(&mut self, packet: &[u8]) {
        let Some(buf) = self.wbufs.get_mut(self.pending) else {
            return;
        };
        buf.clear();
        buf.resize(TUN_OFFSET, 0);
        buf.extend_from_slice(packet);
        self.pending += 1;
    }

    /// Write what is queued, merged by GRO where possible.
    pub(crate) async fn flush(&mut self, c: &mut Counters) {
        if self.pending == 0 {
            return;
        }
        let n = self.pending;
        self.pending = 0;
        for (len, buf) in self.lens.iter_mut().zip(&self.wbufs[..n]) {
            *len = buf.len();
        }
        c.tun_packets_out += n as u64;
        match self
            .dev
            .send_multiple(&mut self.gro, &mut self.wbufs[..n], TUN_OFFSET)
            .await
        {
            // A buffer that grew absorbed the segments after it: one super-packet.
            Ok(_) => {
                c.tun_merged_out += self.wbufs[..n]
                    .iter()
                    .zip(&self.lens)
                    .filter(|(b, l)| b.len() > **l)
                    .count() as u64;
            }
            Err(e) => tracing::debug!(error = %e, "tun write failed"),
        }
    }
}

/// The UDP socket with its batch buffers.
pub(crate) struct Udp {
    pub sock: UdpSocket,
    state: UdpSocketState,
    rbufs: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    /// Sealed datagrams staged for sending, back to back.
    stage: Vec<u8>,
    staged: usize,
    /// (destination, length) of each staged datagram, in order.
    runs: Vec<(SocketAddr, usize)>,
}

impl std::fmt::Debug for Udp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udp").field("staged", &self.staged).finish()
    }
}

impl Udp {
    pub(crate) fn new(sock: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&sock))?;
        tracing::info!(
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "UDP offload"
        );
        Ok(Udp {
            sock,
            state,
            rbufs: (0..UDP_SLOTS).map(|_| vec![0; UDP_SLOT_LEN]).collect(),
            metas: vec![RecvMeta::default(); UDP_SLOTS],
            stage: vec![0; STAGE_LEN],
            staged: 0,
            runs: Vec::with_capacity(IDEAL_BATCH_SIZE),
        })
    }

    /// Receive a batch; returns how many slots hold data (see [`Udp::slot`]).
    pub(crate) async fn recv(&mut self) -> io::Result<usize> {
        loop {
            self.sock.readable().await?;
            let mut slices: [IoSliceMut<'_>; UDP_SLOTS] = {
                let mut it = self.rbufs.iter_mut();
                std::array::from_fn(|_| {
                    IoSliceMut::new(it.next().map_or(&mut [][..], |b| &mut b[..]))
                })
            };
            let state = &self.state;
            let metas = &mut self.metas;
            let sock = &self.sock;
            match sock.try_io(Interest::READABLE, || {
                state.recv(UdpSockRef::from(sock), &mut slices, metas)
            }) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Count the `n` slots just received.
    pub(crate) fn count_recv(&self, n: usize, c: &mut Counters) {
        c.udp_recv_calls += 1;
        c.udp_datagrams_in += self.metas[..n]
            .iter()
            .map(|m| m.len.div_ceil(m.stride.max(1)) as u64)
            .sum::<u64>();
    }

    /// Slot `i` of the last receive: sender, segment size, and the bytes (several
    /// datagrams of `stride` bytes each, the last possibly shorter).
    pub(crate) fn slot(&mut self, i: usize) -> (SocketAddr, usize, &mut [u8]) {
        let m = &self.metas[i];
        let len = m.len.min(UDP_SLOT_LEN);
        (m.addr, m.stride.max(1), &mut self.rbufs[i][..len])
    }

    /// Room to seal the next datagram into, or `None` when the stage must be flushed
    /// first (`need` bytes are not free).
    pub(crate) fn stage_buf(&mut self, need: usize) -> Option<&mut [u8]> {
        if STAGE_LEN - self.staged < need || self.runs.len() == self.runs.capacity() {
            return None;
        }
        Some(&mut self.stage[self.staged..])
    }

    /// The datagram just sealed into [`Udp::stage_buf`]: `len` bytes for `to`.
    pub(crate) fn commit(&mut self, to: SocketAddr, len: usize) {
        self.staged += len;
        self.runs.push((to, len));
    }

    /// Send one datagram now (handshakes, keepalives, cookie replies).
    pub(crate) async fn send_one(&self, bytes: &[u8], to: SocketAddr, c: &mut Counters) {
        self.send(bytes, to, None, c).await;
    }

    /// Send everything staged: runs of equal-sized datagrams to one destination (the
    /// last of a run may be shorter) go out as one GSO send.
    pub(crate) async fn flush(&mut self, c: &mut Counters) {
        let max_segments = self.state.max_gso_segments().max(1);
        let runs = std::mem::take(&mut self.runs);
        let mut start = 0;
        let mut i = 0;
        while i < runs.len() {
            let (to, size) = runs[i];
            let mut j = i + 1;
            let mut total = size;
            // Extend while same destination and size; a shorter one ends the run.
            while j < runs.len()
                && j - i < max_segments
                && runs[j].0 == to
                && runs[j].1 <= size
                && total + runs[j].1 <= MAX_GSO_BYTES
            {
                total += runs[j].1;
                j += 1;
                if runs[j - 1].1 < size {
                    break;
                }
            }
            let segment = (j - i > 1).then_some(size);
            self.send(&self.stage[start..start + total], to, segment, c)
                .await;
            start += total;
            i = j;
        }
        self.staged = 0;
        self.runs = runs;
        self.runs.clear();
    }

    async fn send(
        &self,
        contents: &[u8],
        to: SocketAddr,
        segment: Option<usize>,
        c: &mut Counters,
    ) {
        let destination = crate::mapped(to);
        let t = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        loop {
            match self.sock.try_io(Interest::WRITABLE, || {
                self.state.try_send(UdpSockRef::from(&self.sock), &t)
            }) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.sock.writable().await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, %to, "udp send failed");
                    return;
                }
            }
        }
        c.udp_send_calls += 1;
        c.udp_datagrams_out += segment.map_or(1, |s| contents.len().div_ceil(s)) as u64;
    }
}
