//! Batched I/O for the data plane (docs/architecture.md "Data plane").
//!
//! Per-packet system calls, not crypto, limit a userspace tunnel. Both devices are
//! therefore read and written in batches:
//!
//! - **TUN** with offload (`IFF_VNET_HDR`, TSO/USO): one read returns a TCP or UDP
//!   super-packet of up to 64 KiB that [`crate::offload::Split`] cuts into MTU-sized
//!   packets straight into the buffers they are sealed in; writes go through
//!   [`crate::offload::Gro`], which merges consecutive segments of a flow back into
//!   super-packets by reference to where they were decrypted, so the kernel's TCP
//!   stack sees few large packets and no packet is copied in user space.
//! - **UDP** through quinn-udp: `recvmmsg` with UDP GRO (one slot holds up to 64
//!   datagrams of one sender), and `sendmsg` with UDP GSO (`UDP_SEGMENT`): the sealed
//!   segments of one super-packet leave in one call.
//!
//! Buffers are allocated once and reused; nothing here allocates per packet.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tun_rs::SyncDevice;

use crate::offload::{Gro, Split, VnetHdr, VNET_HDR_LEN};

/// Largest IP packet.
const MAX_PACKET: usize = 65_535;
/// UDP receive slots per `recvmmsg`.
const UDP_SLOTS: usize = 16;
/// Bytes per UDP receive slot: one GRO train of up to 64 datagrams.
const UDP_SLOT_LEN: usize = 64 * 1024;
/// Most bytes in one GSO send (a UDP datagram's payload limit, with margin).
const MAX_GSO_BYTES: usize = 65_000;
/// Datagrams staged before a send (a 64 KiB super-packet is about 46).
const MAX_RUNS: usize = 128;
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
    /// TUN reads dropped because their offload header made no sense, and failed writes.
    pub tun_bad_offload: u64,
    pub tun_write_errors: u64,
    /// UDP sends that failed (or found the socket buffer full for too long).
    pub udp_send_errors: u64,
    /// Node events the data plane dropped because the control task fell behind.
    pub notes_dropped: u64,
    /// Packets between two identities of this daemon, delivered without UDP.
    pub local_packets: u64,
    /// TUN packets refused because their source is not an identity of that TUN's.
    pub source_refused: u64,
}

impl Counters {
    /// Field by field sum (the data-plane thread's and the control task's).
    pub(crate) fn add(&self, o: &Counters) -> Counters {
        Counters {
            tun_reads: self.tun_reads + o.tun_reads,
            tun_packets_in: self.tun_packets_in + o.tun_packets_in,
            tun_packets_out: self.tun_packets_out + o.tun_packets_out,
            tun_merged_out: self.tun_merged_out + o.tun_merged_out,
            udp_recv_calls: self.udp_recv_calls + o.udp_recv_calls,
            udp_datagrams_in: self.udp_datagrams_in + o.udp_datagrams_in,
            udp_send_calls: self.udp_send_calls + o.udp_send_calls,
            udp_datagrams_out: self.udp_datagrams_out + o.udp_datagrams_out,
            too_big: self.too_big + o.too_big,
            tun_bad_offload: self.tun_bad_offload + o.tun_bad_offload,
            tun_write_errors: self.tun_write_errors + o.tun_write_errors,
            udp_send_errors: self.udp_send_errors + o.udp_send_errors,
            notes_dropped: self.notes_dropped + o.notes_dropped,
            local_packets: self.local_packets + o.local_packets,
            source_refused: self.source_refused + o.source_refused,
        }
    }
}

/// A TUN device: the host's own (built by tun-rs) or an attachment's, adopted by
/// descriptor from inside its network namespace.
#[derive(Clone)]
pub(crate) enum TunDev {
    Host(Arc<SyncDevice>),
    Attached(Arc<crate::sys::TunFd>),
}

impl std::fmt::Debug for TunDev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunDev::Host(_) => f.write_str("TunDev::Host"),
            TunDev::Attached(t) => write!(f, "TunDev::Attached({})", t.name()),
        }
    }
}

impl TunDev {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            TunDev::Host(d) => d.recv(buf),
            TunDev::Attached(d) => d.recv(buf),
        }
    }

    fn send_vectored(&self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            TunDev::Host(d) => d.send_vectored(iov),
            TunDev::Attached(d) => d.send_vectored(iov),
        }
    }

    /// Whether reads and writes carry the virtio-net header.
    pub(crate) fn vnet(&self) -> bool {
        match self {
            TunDev::Host(d) => d.tcp_gso(),
            TunDev::Attached(d) => d.vnet(),
        }
    }

    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            TunDev::Host(d) => d.as_raw_fd(),
            TunDev::Attached(d) => d.raw(),
        }
    }
}

/// The TUN device: reads are split by [`Split`], writes merged by [`Gro`].
pub(crate) struct Tun {
    pub dev: TunDev,
    /// Whether reads and writes carry a virtio-net header (offload on).
    vnet: bool,
    /// The last read (after its virtio header), and how it divides.
    rbuf: Vec<u8>,
    /// Where the last read's packet lies in `rbuf` (after the virtio header).
    rpkt: std::ops::Range<usize>,
    split: Split,
    gro: Gro,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun").field("vnet", &self.vnet).finish()
    }
}

impl Tun {
    /// `dev` must be non-blocking.
    pub(crate) fn new(dev: TunDev) -> Self {
        let vnet = dev.vnet();
        Tun {
            dev,
            vnet,
            rbuf: vec![0; VNET_HDR_LEN + MAX_PACKET],
            rpkt: 0..0,
            split: Split::default(),
            gro: Gro::new(vnet),
        }
    }

    /// Whether packets need their checksums completed before [`Tun::push`] (no
    /// offload: the kernel verifies them).
    pub(crate) fn verifies_checksums(&self) -> bool {
        !self.vnet
    }

    /// Read one packet or super-packet if there is one (`false`: none waiting);
    /// afterwards [`Tun::count`] packets are there. A read the offload header makes
    /// no sense of is dropped and counted.
    pub(crate) fn recv(&mut self, c: &mut Counters) -> io::Result<bool> {
        loop {
            let n = match self.dev.recv(&mut self.rbuf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let (hdr, at) = if self.vnet {
                match VnetHdr::parse(&self.rbuf[..n]) {
                    Some(h) => (h, VNET_HDR_LEN),
                    None => {
                        c.tun_bad_offload += 1;
                        continue;
                    }
                }
            } else {
                (VnetHdr::default(), 0)
            };
            match Split::new(&hdr, &mut self.rbuf[at..n]) {
                Ok(split) => {
                    self.rpkt = at..n;
                    self.split = split;
                    c.tun_reads += 1;
                    c.tun_packets_in += split.count() as u64;
                    return Ok(true);
                }
                Err(e) => {
                    c.tun_bad_offload += 1;
                    tracing::debug!(error = %e, ?hdr, "TUN read dropped");
                }
            }
        }
    }

    /// Packets in the last read.
    pub(crate) fn count(&self) -> usize {
        self.split.count()
    }

    /// Length of packet `i` of the last read.
    pub(crate) fn len(&self, i: usize) -> usize {
        self.split.len(i)
    }

    /// Write packet `i` of the last read into `out`; returns its length.
    pub(crate) fn write_packet(&self, i: usize, out: &mut [u8]) -> usize {
        self.split.write(&self.rbuf[self.rpkt.clone()], i, out)
    }

    /// The last read's source and destination (all its packets share them).
    pub(crate) fn addresses(&self) -> Option<(std::net::Ipv6Addr, std::net::Ipv6Addr)> {
        let p = self.rbuf.get(self.rpkt.clone())?;
        if p.len() < 40 || p[0] >> 4 != 6 {
            return None;
        }
        let src: [u8; 16] = p[8..24].try_into().ok()?;
        let dst: [u8; 16] = p[24..40].try_into().ok()?;
        Some((src.into(), dst.into()))
    }

    /// The last read as it came, virtio header first, when it is a super-packet the
    /// kernel left whole: another TUN with offloads takes it as it is.
    pub(crate) fn whole_read(&self) -> Option<&[u8]> {
        (self.vnet && self.split.is_gso()).then(|| &self.rbuf[..self.rpkt.end])
    }

    /// Write `bytes` (virtio header first) as one write.
    pub(crate) fn write_whole(&self, bytes: &[u8], packets: usize, c: &mut Counters) {
        c.tun_packets_out += packets as u64;
        if let Err(e) = self.dev.send_vectored(&[IoSlice::new(bytes)]) {
            c.tun_write_errors += 1;
            tracing::debug!(error = %e, "tun write failed");
        }
    }

    /// Packet `i` of the last read, copied (for the rare paths that keep it).
    pub(crate) fn packet_vec(&self, i: usize) -> Vec<u8> {
        let mut v = vec![0; self.len(i)];
        self.write_packet(i, &mut v);
        v
    }

    /// Queue the packet `bufs[buf][start..end]` for the TUN; it must stay there until
    /// [`Tun::flush`]. Returns false when the batch is full: flush, then push again.
    pub(crate) fn push(&mut self, bufs: &[Vec<u8>], buf: usize, start: usize, end: usize) -> bool {
        self.gro.push(bufs, buf, start, end)
    }

    /// Bytes queued by [`Tun::push`] since the last flush.
    pub(crate) fn queued(&self) -> usize {
        self.gro.bytes()
    }

    /// Write what is queued, merged where possible. `bufs` are those given to
    /// [`Tun::push`].
    pub(crate) fn flush(&mut self, bufs: &[Vec<u8>], c: &mut Counters) {
        if self.gro.is_empty() {
            return;
        }
        let dev = &self.dev;
        self.gro.writes(bufs, |iov, packets| {
            c.tun_packets_out += packets as u64;
            if packets > 1 {
                c.tun_merged_out += 1;
            }
            if let Err(e) = dev.send_vectored(iov) {
                c.tun_write_errors += 1;
                tracing::debug!(error = %e, "tun write failed");
            }
        });
    }

    /// Write one packet of our own (an ICMPv6 error), checksum complete.
    pub(crate) fn write_own(&self, packet: &[u8], c: &mut Counters) {
        write_own(&self.dev, packet, c);
    }
}

/// Write one packet of our own (an ICMPv6 error, checksum complete) to `dev`.
pub(crate) fn write_own(dev: &TunDev, packet: &[u8], c: &mut Counters) {
    let hdr = [0u8; VNET_HDR_LEN];
    let head: &[u8] = if dev.vnet() { &hdr } else { &[] };
    c.tun_packets_out += 1;
    if let Err(e) = dev.send_vectored(&[IoSlice::new(head), IoSlice::new(packet)]) {
        c.tun_write_errors += 1;
        tracing::debug!(error = %e, "tun write failed");
    }
}

/// The UDP socket's sending side. Only the data-plane thread sends (data, handshakes,
/// keepalives, cookies: everything the node transmits).
#[derive(Clone)]
pub(crate) struct Sender {
    pub sock: Arc<std::net::UdpSocket>,
    state: Arc<UdpSocketState>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// How long a send waits for room in a full socket buffer before the datagram is
/// dropped (the sender's congestion control or retry timer takes it from there).
const SEND_WAIT: Duration = Duration::from_millis(20);

impl Sender {
    /// `sock` must be non-blocking.
    pub(crate) fn new(sock: std::net::UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&sock))?;
        tracing::info!(
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "UDP offload"
        );
        Ok(Sender {
            sock: Arc::new(sock),
            state: Arc::new(state),
        })
    }

    /// Send one datagram now (handshakes, keepalives, cookie replies).
    pub(crate) fn send_one(&self, bytes: &[u8], to: SocketAddr, c: &mut Counters) {
        self.send(bytes, to, None, c);
    }

    /// Send `contents`, as GSO segments of `segment` bytes if given.
    fn send(&self, contents: &[u8], to: SocketAddr, segment: Option<usize>, c: &mut Counters) {
        let t = Transmit {
            destination: crate::mapped(to),
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        let mut waited = false;
        loop {
            match self.state.try_send(UdpSockRef::from(&*self.sock), &t) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !waited => {
                    waited = true;
                    crate::sys::wait_writable(self.sock.as_raw_fd(), SEND_WAIT);
                }
                Err(e) => {
                    c.udp_send_errors += 1;
                    tracing::debug!(error = %e, %to, "udp send failed");
                    return;
                }
            }
        }
        c.udp_send_calls += 1;
        c.udp_datagrams_out += segment.map_or(1, |s| contents.len().div_ceil(s)) as u64;
    }
}

/// The data-plane side of the UDP socket, with its batch buffers.
pub(crate) struct Udp {
    pub tx: Sender,
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
    pub(crate) fn new(tx: Sender) -> Self {
        Udp {
            tx,
            rbufs: (0..UDP_SLOTS).map(|_| vec![0; UDP_SLOT_LEN]).collect(),
            metas: vec![RecvMeta::default(); UDP_SLOTS],
            stage: vec![0; STAGE_LEN],
            staged: 0,
            runs: Vec::with_capacity(MAX_RUNS),
        }
    }

    /// Receive a batch if one is waiting; returns how many slots hold data (0: none;
    /// see [`Udp::slot`]).
    pub(crate) fn recv(&mut self) -> io::Result<usize> {
        let mut slices: [IoSliceMut<'_>; UDP_SLOTS] = {
            let mut it = self.rbufs.iter_mut();
            std::array::from_fn(|_| IoSliceMut::new(it.next().map_or(&mut [][..], |b| &mut b[..])))
        };
        match self.tx.state.recv(
            UdpSockRef::from(&*self.tx.sock),
            &mut slices,
            &mut self.metas,
        ) {
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }
    /// The receive buffers (slots), which [`Tun::push`] refers into.
    pub(crate) fn bufs(&self) -> &[Vec<u8>] {
        &self.rbufs
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

    /// Stage bytes `start..end` of receive slot `i` to go to `to` unchanged (a relay
    /// forwarding a datagram it rewrote in place); flushes the stage first if full.
    pub(crate) fn forward(
        &mut self,
        i: usize,
        start: usize,
        end: usize,
        to: SocketAddr,
        c: &mut Counters,
    ) {
        let len = end.saturating_sub(start);
        if self.stage_buf(len).is_none() {
            self.flush(c);
        }
        let Some(src) = self.rbufs.get(i).and_then(|b| b.get(start..end)) else {
            return;
        };
        if STAGE_LEN - self.staged < len || self.runs.len() == self.runs.capacity() {
            return;
        }
        self.stage[self.staged..self.staged + len].copy_from_slice(src);
        self.commit(to, len);
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

    /// Send everything staged: runs of equal-sized datagrams to one destination (the
    /// last of a run may be shorter) go out as one GSO send.
    pub(crate) fn flush(&mut self, c: &mut Counters) {
        let max_segments = self.tx.state.max_gso_segments().max(1);
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
            self.tx
                .send(&self.stage[start..start + total], to, segment, c);
            start += total;
            i = j;
        }
        self.staged = 0;
        self.runs = runs;
        self.runs.clear();
    }
}
