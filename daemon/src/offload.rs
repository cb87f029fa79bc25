//! TUN offload done in place (docs/architecture.md "Data plane").
//!
//! With `IFF_VNET_HDR` every TUN read and write starts with a virtio-net header. A
//! read may return a TCP (TSO) or UDP (USO) super-packet of up to 64 KiB, which
//! [`Split`] cuts into MTU-sized packets written straight into the buffers they are
//! sealed in. Writes go through [`Gro`], which merges consecutive TCP segments of a
//! flow back into super-packets by reference: the payloads stay in the UDP receive
//! buffers where they were decrypted, and one `writev` hands the kernel a header plus
//! the pieces. No packet is copied in user space on either path.
//!
//! Inner TCP and UDP checksums are not trusted and not computed for plain packets (no
//! IPv6 extension headers): the AEAD authenticates every byte end to end, so the
//! receiver hands each such packet to its kernel marked as needing its checksum
//! (`VIRTIO_NET_HDR_F_NEEDS_CSUM`, pseudo-header sum in the field), as a NIC with
//! checksum offload would, and the kernel does not verify it (docs/protocol.md §7.2,
//! "Inner checksums").

use std::io::IoSlice;

/// Length of the virtio-net header before each packet on an offload TUN.
pub(crate) const VNET_HDR_LEN: usize = 10;
/// Largest super-packet [`Gro`] builds (IPv6 header included).
const MAX_SUPER: usize = 65_535;
/// Most segments merged into one super-packet (and pieces in one `writev`).
pub(crate) const MAX_SEGMENTS: usize = 64;
/// Largest header copied per packet: vnet header, IPv6, TCP with all options.
const HEAD_MAX: usize = VNET_HDR_LEN + IPV6_HDR + 60;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

const IPV6_HDR: usize = 40;
const UDP_HDR: usize = 8;
const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;

const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const CWR: u8 = 0x80;

/// The virtio-net header (little-endian on every host metanet runs on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub(crate) fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    pub(crate) fn emit(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }
}

/// Why a TUN read cannot be used (the packet is dropped and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    #[error("offload packet is not IPv6")]
    NotIpv6,
    #[error("unsupported offload type {0}")]
    GsoType(u8),
    #[error("offload header does not match the packet")]
    Header,
}

/// How one TUN read divides into packets, each sealed into its own data message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Split {
    /// Length of the packet as read.
    total: usize,
    /// Header bytes repeated in every segment (IPv6 with extensions and TCP or UDP).
    hdr_len: usize,
    /// Payload bytes per segment, the last possibly shorter; 0: one packet as read.
    gso_size: usize,
    /// Offset of the TCP or UDP header, and which of the two it is.
    l4: usize,
    proto: u8,
    /// Whether each segment's checksum is computed (not a plain packet).
    checksum: bool,
}

impl Split {
    /// Interpret a read: `hdr` and the packet after it. A single packet whose checksum
    /// the kernel left to us is completed in place unless it is plain TCP or UDP.
    pub(crate) fn new(hdr: &VnetHdr, pkt: &mut [u8]) -> Result<Split, Error> {
        let total = pkt.len();
        let single = Split {
            total,
            hdr_len: total,
            gso_size: 0,
            l4: 0,
            proto: 0,
            checksum: false,
        };
        let gso = hdr.gso_type & !GSO_ECN;
        if gso == GSO_NONE {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                let (start, offset) = (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
                if start + offset + 2 > total {
                    return Err(Error::Header);
                }
                if !plain(pkt, start, offset) {
                    complete_checksum(pkt, start, offset);
                }
            }
            return Ok(single);
        }
        let (proto, csum_at) = match gso {
            GSO_TCPV6 => (TCP, TCP_CSUM),
            GSO_UDP_L4 => (UDP, UDP_CSUM),
            other => return Err(Error::GsoType(other)),
        };
        if pkt.first().map(|b| b >> 4) != Some(6) {
            return Err(Error::NotIpv6);
        }
        let l4 = usize::from(hdr.csum_start);
        if hdr.flags & F_NEEDS_CSUM == 0 || usize::from(hdr.csum_offset) != csum_at || l4 < IPV6_HDR
        {
            return Err(Error::Header);
        }
        let l4_len = if proto == TCP {
            let doff = pkt.get(l4 + 12).ok_or(Error::Header)? >> 4;
            usize::from(doff) * 4
        } else {
            UDP_HDR
        };
        let hdr_len = l4 + l4_len;
        let gso_size = usize::from(hdr.gso_size);
        if (proto == TCP && l4_len < 20) || hdr_len >= total || gso_size == 0 {
            return Err(Error::Header);
        }
        Ok(Split {
            total,
            hdr_len,
            gso_size,
            l4,
            proto,
            checksum: !plain(pkt, l4, csum_at),
        })
    }

    /// Whether the read is a super-packet the kernel left to segment (untouched here).
    pub(crate) fn is_gso(&self) -> bool {
        self.gso_size != 0
    }

    /// How many packets the read holds.
    pub(crate) fn count(&self) -> usize {
        if self.gso_size == 0 {
            1
        } else {
            (self.total - self.hdr_len).div_ceil(self.gso_size)
        }
    }

    /// Length of packet `i`.
    pub(crate) fn len(&self, i: usize) -> usize {
        if self.gso_size == 0 {
            return self.total;
        }
        let start = self.hdr_len + i * self.gso_size;
        self.hdr_len + self.gso_size.min(self.total.saturating_sub(start))
    }

    /// Write packet `i` of the read `pkt` into `out` (at least [`Split::len`] bytes).
    pub(crate) fn write(&self, pkt: &[u8], i: usize, out: &mut [u8]) -> usize {
        let len = self.len(i);
        if self.gso_size == 0 {
            out[..len].copy_from_slice(pkt);
            return len;
        }
        let h = self.hdr_len;
        let start = h + i * self.gso_size;
        out[..h].copy_from_slice(&pkt[..h]);
        out[h..len].copy_from_slice(&pkt[start..start + len - h]);
        put16(out, 4, (len - IPV6_HDR) as u16);
        let l4 = self.l4;
        let last = start + (len - h) >= self.total;
        let csum_at = if self.proto == TCP {
            let seq = u32::from_be_bytes([pkt[l4 + 4], pkt[l4 + 5], pkt[l4 + 6], pkt[l4 + 7]])
                .wrapping_add((i * self.gso_size) as u32);
            out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let flags = &mut out[l4 + 13];
            if i > 0 {
                *flags &= !CWR;
            }
            if !last {
                *flags &= !(FIN | PSH);
            }
            TCP_CSUM
        } else {
            put16(out, l4 + 4, (len - l4) as u16);
            UDP_CSUM
        };
        let partial = pseudo_header(&out[..len], (len - l4) as u32, self.proto);
        put16(out, l4 + csum_at, partial);
        if self.checksum {
            complete_checksum(&mut out[..len], l4, csum_at);
        }
        len
    }
}

/// Whether the transport header at `l4` with its checksum at `l4 + offset` is TCP or
/// UDP right after a plain IPv6 header: the checksum the receiver recomputes.
fn plain(pkt: &[u8], l4: usize, offset: usize) -> bool {
    l4 == IPV6_HDR
        && pkt.len() >= IPV6_HDR
        && pkt[0] >> 4 == 6
        && matches!((pkt[6], offset), (TCP, TCP_CSUM) | (UDP, UDP_CSUM))
}

/// Finish a checksum the kernel left partial: the field at `start + offset` holds the
/// pseudo-header sum; sum everything from `start` and store the complement.
fn complete_checksum(pkt: &mut [u8], start: usize, offset: usize) {
    let sum = fold(sum16(&pkt[start..], 0));
    let mut c = !sum;
    if c == 0 && offset == UDP_CSUM {
        c = 0xffff;
    }
    put16(pkt, start + offset, c);
}

/// The folded (not complemented) IPv6 pseudo-header sum of `pkt` for a transport
/// segment of `len` bytes of protocol `proto`: what a partial checksum field holds.
fn pseudo_header(pkt: &[u8], len: u32, proto: u8) -> u16 {
    let acc = sum16(&pkt[8..40], u64::from(len >> 16) + u64::from(len & 0xffff));
    fold(acc + u64::from(proto))
}

/// One's-complement sum of big-endian 16-bit words, unfolded.
fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut word = [0u8; 4];
    word[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_be_bytes(word))
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// A piece of a packet in the receive buffers: buffer index and byte range.
#[derive(Debug, Clone, Copy)]
struct Piece {
    buf: u32,
    start: u32,
    end: u32,
}

/// One TUN write being built: a header of its own, then pieces by reference.
#[derive(Debug)]
struct Item {
    head: [u8; HEAD_MAX],
    head_len: usize,
    pieces: Vec<Piece>,
    /// TCP merge state (`tcp_hdr == 0`: not TCP).
    tcp_hdr: usize,
    gso_size: usize,
    payload: usize,
    next_seq: u32,
    /// UDP: the checksum field is filled in at write time.
    udp: bool,
}

impl Item {
    fn new() -> Item {
        Item {
            head: [0; HEAD_MAX],
            head_len: 0,
            pieces: Vec::with_capacity(MAX_SEGMENTS),
            tcp_hdr: 0,
            gso_size: 0,
            payload: 0,
            next_seq: 0,
            udp: false,
        }
    }

    fn segments(&self) -> usize {
        self.pieces.len()
    }

    /// Whether TCP packet `p` (a plain IPv6 packet with a `thl`-byte TCP header and
    /// `payload` bytes of data) continues this item's segments.
    fn continues(&self, p: &[u8], thl: usize, payload: usize) -> bool {
        let h = &self.head[VNET_HDR_LEN..];
        let t = IPV6_HDR;
        self.tcp_hdr == thl
            && self.segments() < MAX_SEGMENTS
            && payload <= self.gso_size
            && IPV6_HDR + thl + self.payload + payload <= MAX_SUPER
            && seq_of(p) == self.next_seq
            // version, traffic class and flow label; hop limit
            && h[..4] == p[..4]
            && h[7] == p[7]
            // acknowledgement number, data offset, flags other than PSH
            && h[t + 8..t + 13] == p[t + 8..t + 13]
            && h[t + 13] & !PSH == p[t + 13] & !PSH
            // window, urgent pointer, options
            && h[t + 14..t + 16] == p[t + 14..t + 16]
            && h[t + 18..t + thl] == p[t + 18..t + thl]
    }
}

fn seq_of(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[44], p[45], p[46], p[47]])
}

/// An open TCP merge: the flow's addresses and ports, and its item.
#[derive(Debug, Clone, Copy)]
struct Flow {
    key: [u8; 36],
    item: usize,
}

/// Merges the packets of one receive batch into as few TUN writes as it can.
#[derive(Debug)]
pub(crate) struct Gro {
    items: Vec<Item>,
    used: usize,
    flows: Vec<Flow>,
    /// Bytes of packets held.
    bytes: usize,
    /// Whether the TUN takes virtio headers; without them every packet is written
    /// on its own, as it is (its checksum completed by [`complete_plain_checksum`]).
    vnet: bool,
}

/// Writes per batch before [`Gro`] asks to be flushed.
const MAX_ITEMS: usize = 128;

impl Gro {
    pub(crate) fn new(vnet: bool) -> Gro {
        Gro {
            items: Vec::new(),
            used: 0,
            flows: Vec::new(),
            bytes: 0,
            vnet,
        }
    }

    /// Nothing held.
    pub(crate) fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Bytes of the packets held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Take the packet `bufs[buf][start..end]`: merge it into its flow's write or
    /// start a write of its own. It must stay where it is until [`Gro::writes`].
    /// Returns false, taking nothing, when full: write what is held, then push again.
    pub(crate) fn push(&mut self, bufs: &[Vec<u8>], buf: usize, start: usize, end: usize) -> bool {
        let p = &bufs[buf][start..end];
        self.bytes += p.len();
        let piece = |from: usize| Piece {
            buf: buf as u32,
            start: (start + from) as u32,
            end: end as u32,
        };
        let tcp = tcp_segment(p).filter(|_| self.vnet);
        if let Some((thl, payload, flags)) = tcp {
            let key = flow_key(p);
            if let Some(f) = self.flows.iter().position(|f| f.key == key) {
                let item = &mut self.items[self.flows[f].item];
                let mergeable = payload > 0 && flags & !(ACK | PSH) == 0;
                if mergeable && item.continues(p, thl, payload) {
                    item.pieces.push(piece(IPV6_HDR + thl));
                    item.payload += payload;
                    item.next_seq = item.next_seq.wrapping_add(payload as u32);
                    if flags & PSH != 0 {
                        item.head[VNET_HDR_LEN + IPV6_HDR + 13] |= PSH;
                    }
                    if flags & PSH != 0 || payload < item.gso_size {
                        self.flows.swap_remove(f);
                    }
                    return true;
                }
                // Whatever comes next in this flow goes after this packet.
                self.flows.swap_remove(f);
            }
        }
        if self.used == MAX_ITEMS {
            self.bytes -= p.len();
            return false;
        }
        if self.used == self.items.len() {
            self.items.push(Item::new());
        }
        let index = self.used;
        self.used += 1;
        let item = &mut self.items[index];
        item.pieces.clear();
        item.tcp_hdr = 0;
        item.udp = false;
        let mut vnet = VnetHdr::default();
        let header = match (tcp, self.vnet && udp_datagram(p)) {
            (Some((thl, payload, flags)), _) => {
                vnet.flags = F_NEEDS_CSUM;
                vnet.csum_start = IPV6_HDR as u16;
                vnet.csum_offset = TCP_CSUM as u16;
                item.tcp_hdr = thl;
                item.gso_size = payload;
                item.payload = payload;
                item.next_seq = seq_of(p).wrapping_add(payload as u32);
                if payload > 0 && flags & !(ACK | PSH) == 0 && flags & PSH == 0 {
                    self.flows.push(Flow {
                        key: flow_key(p),
                        item: index,
                    });
                }
                IPV6_HDR + thl
            }
            (None, true) => {
                vnet.flags = F_NEEDS_CSUM;
                vnet.csum_start = IPV6_HDR as u16;
                vnet.csum_offset = UDP_CSUM as u16;
                item.udp = true;
                IPV6_HDR + UDP_HDR
            }
            (None, false) => 0,
        };
        item.head_len = 0;
        if self.vnet {
            vnet.emit(&mut item.head);
            item.head[VNET_HDR_LEN..VNET_HDR_LEN + header].copy_from_slice(&p[..header]);
            item.head_len = VNET_HDR_LEN + header;
        }
        item.pieces.push(piece(header));
        true
    }

    /// The writes held, in order, each with how many packets it carries; leaves the
    /// batch empty. `f` gets the slices of one write (header first).
    pub(crate) fn writes<'b>(
        &'b mut self,
        bufs: &'b [Vec<u8>],
        mut f: impl FnMut(&[IoSlice<'_>], usize),
    ) {
        let mut iov = [IoSlice::new(&[]); MAX_SEGMENTS + 1];
        for item in &mut self.items[..self.used] {
            if self.vnet {
                finish(item);
            }
            iov[0] = IoSlice::new(&item.head[..item.head_len]);
            for (slot, p) in iov[1..].iter_mut().zip(&item.pieces) {
                *slot = IoSlice::new(&bufs[p.buf as usize][p.start as usize..p.end as usize]);
            }
            f(&iov[..=item.pieces.len()], item.segments());
        }
        self.used = 0;
        self.bytes = 0;
        self.flows.clear();
    }
}

/// For a TUN without virtio headers, whose kernel verifies every checksum: complete
/// the checksum of a plain TCP or UDP packet, which senders may leave partial.
pub(crate) fn complete_plain_checksum(p: &mut [u8]) {
    let (proto, at) = if tcp_segment(p).is_some() {
        (TCP, TCP_CSUM)
    } else if udp_datagram(p) {
        (UDP, UDP_CSUM)
    } else {
        return;
    };
    let partial = pseudo_header(p, (p.len() - IPV6_HDR) as u32, proto);
    put16(p, IPV6_HDR + at, partial);
    complete_checksum(p, IPV6_HDR, at);
}

/// Set the lengths, the offload fields and the partial checksum of a write.
fn finish(item: &mut Item) {
    let segments = item.segments();
    let h = &mut item.head;
    if item.tcp_hdr > 0 {
        let l4_len = item.tcp_hdr + item.payload;
        put16(&mut h[VNET_HDR_LEN..], 4, l4_len as u16);
        if segments > 1 {
            let vnet = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV6,
                hdr_len: (IPV6_HDR + item.tcp_hdr) as u16,
                gso_size: item.gso_size as u16,
                csum_start: IPV6_HDR as u16,
                csum_offset: TCP_CSUM as u16,
            };
            vnet.emit(h);
        }
        let partial = pseudo_header(&h[VNET_HDR_LEN..], l4_len as u32, TCP);
        put16(&mut h[VNET_HDR_LEN..], IPV6_HDR + TCP_CSUM, partial);
    } else if item.udp {
        let ip = &mut h[VNET_HDR_LEN..];
        let len = u16::from_be_bytes([ip[IPV6_HDR + 4], ip[IPV6_HDR + 5]]);
        let partial = pseudo_header(ip, u32::from(len), UDP);
        put16(ip, IPV6_HDR + UDP_CSUM, partial);
    }
}

/// A plain IPv6 TCP packet: (TCP header length, payload length, flags).
fn tcp_segment(p: &[u8]) -> Option<(usize, usize, u8)> {
    if p.len() < IPV6_HDR + 20 || p[0] >> 4 != 6 || p[6] != TCP {
        return None;
    }
    if usize::from(u16::from_be_bytes([p[4], p[5]])) != p.len() - IPV6_HDR {
        return None;
    }
    let thl = usize::from(p[IPV6_HDR + 12] >> 4) * 4;
    if thl < 20 || IPV6_HDR + thl > p.len() {
        return None;
    }
    Some((thl, p.len() - IPV6_HDR - thl, p[IPV6_HDR + 13]))
}

/// A plain IPv6 UDP datagram whose lengths agree.
fn udp_datagram(p: &[u8]) -> bool {
    p.len() >= IPV6_HDR + UDP_HDR
        && p[0] >> 4 == 6
        && p[6] == UDP
        && usize::from(u16::from_be_bytes([p[4], p[5]])) == p.len() - IPV6_HDR
        && usize::from(u16::from_be_bytes([p[44], p[45]])) == p.len() - IPV6_HDR
}

/// Source and destination address and port.
fn flow_key(p: &[u8]) -> [u8; 36] {
    let mut k = [0; 36];
    k.copy_from_slice(&p[8..44]);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 16] = [0xfd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const DST: [u8; 16] = [0xfd, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5];

    /// An IPv6 TCP packet: 12 bytes of options (like timestamps), `payload` bytes.
    fn tcp(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let thl = 32;
        let mut p = vec![0u8; IPV6_HDR + thl];
        p[0] = 0x60;
        put16(&mut p, 4, (thl + payload.len()) as u16);
        p[6] = TCP;
        p[7] = 64;
        p[8..24].copy_from_slice(&SRC);
        p[24..40].copy_from_slice(&DST);
        let t = IPV6_HDR;
        put16(&mut p, t, 40000);
        put16(&mut p, t + 2, 5201);
        p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        p[t + 8..t + 12].copy_from_slice(&7u32.to_be_bytes());
        p[t + 12] = ((thl / 4) as u8) << 4;
        p[t + 13] = flags;
        put16(&mut p, t + 14, 512);
        p[t + 20..t + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        p.extend_from_slice(payload);
        p
    }

    fn udp(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; IPV6_HDR + UDP_HDR];
        p[0] = 0x60;
        put16(&mut p, 4, (UDP_HDR + payload.len()) as u16);
        p[6] = UDP;
        p[7] = 64;
        p[8..24].copy_from_slice(&SRC);
        p[24..40].copy_from_slice(&DST);
        put16(&mut p, 40, 5000);
        put16(&mut p, 42, 6000);
        put16(&mut p, 44, (UDP_HDR + payload.len()) as u16);
        p.extend_from_slice(payload);
        p
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// The textbook checksum: 16-bit words, carries folded as they come.
    fn reference_checksum(p: &[u8], proto: u8) -> u16 {
        let l4 = &p[IPV6_HDR..];
        let mut words: Vec<u8> = p[8..40].to_vec();
        words.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        words.extend_from_slice(&[0, 0, 0, proto]);
        words.extend_from_slice(l4);
        if words.len() % 2 == 1 {
            words.push(0);
        }
        let mut sum: u32 = 0;
        for w in words.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn verifies(p: &[u8], proto: u8) -> bool {
        reference_checksum(p, proto) == 0
    }

    fn tso(seq: u32, flags: u8, payload: &[u8], mss: u16) -> (VnetHdr, Vec<u8>) {
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6,
            hdr_len: (IPV6_HDR + 32) as u16,
            gso_size: mss,
            csum_start: IPV6_HDR as u16,
            csum_offset: TCP_CSUM as u16,
        };
        (hdr, tcp(seq, flags, payload))
    }

    fn segments(hdr: &VnetHdr, pkt: &mut [u8]) -> Vec<Vec<u8>> {
        let split = Split::new(hdr, pkt).expect("split");
        (0..split.count())
            .map(|i| {
                let mut out = vec![0u8; split.len(i)];
                assert_eq!(split.write(pkt, i, &mut out), out.len());
                out
            })
            .collect()
    }

    /// Run packets through GRO; returns each write as (virtio header, packet bytes).
    fn gro(packets: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>, usize)> {
        let mut g = Gro::new(true);
        for i in 0..packets.len() {
            assert!(
                g.push(packets, i, 0, packets[i].len()),
                "room for every packet"
            );
        }
        let mut writes = Vec::new();
        g.writes(packets, |iov, n| {
            let bytes: Vec<u8> = iov.iter().flat_map(|s| s.iter().copied()).collect();
            let hdr = VnetHdr::parse(&bytes).unwrap();
            writes.push((hdr, bytes[VNET_HDR_LEN..].to_vec(), n));
        });
        writes
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 72,
            gso_size: 1348,
            csum_start: 40,
            csum_offset: 16,
        };
        let mut b = [0u8; VNET_HDR_LEN];
        h.emit(&mut b);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert_eq!(VnetHdr::parse(&b[..9]), None);
    }

    #[test]
    fn tso_split_makes_mss_segments_in_sequence() {
        let data = pattern(10_000);
        let (hdr, mut pkt) = tso(1000, ACK | PSH, &data, 1348);
        let segs = segments(&hdr, &mut pkt);
        assert_eq!(segs.len(), 8);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let last = i == segs.len() - 1;
            let payload = &s[IPV6_HDR + 32..];
            assert_eq!(payload.len(), if last { 10_000 - 7 * 1348 } else { 1348 });
            assert_eq!(
                usize::from(u16::from_be_bytes([s[4], s[5]])),
                s.len() - IPV6_HDR
            );
            assert_eq!(seq_of(s), 1000 + (i * 1348) as u32);
            assert_eq!(
                s[IPV6_HDR + 13] & PSH != 0,
                last,
                "PSH only on the last segment"
            );
            // Plain TCP: the checksum is left partial (pseudo-header sum).
            let partial = pseudo_header(s, (s.len() - IPV6_HDR) as u32, TCP);
            assert_eq!(u16::from_be_bytes([s[56], s[57]]), partial);
            joined.extend_from_slice(payload);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn split_then_gro_rebuilds_the_super_packet() {
        let data = pattern(30_000);
        let (hdr, mut pkt) = tso(77, ACK | PSH, &data, 1348);
        let original = pkt.clone();
        let segs = segments(&hdr, &mut pkt);
        let writes = gro(&segs);
        assert_eq!(writes.len(), 1, "one flow in sequence: one write");
        let (v, bytes, n) = &writes[0];
        assert_eq!(*n, segs.len());
        assert_eq!(v.gso_type, GSO_TCPV6);
        assert_eq!(v.flags, F_NEEDS_CSUM);
        assert_eq!(usize::from(v.gso_size), 1348);
        assert_eq!(usize::from(v.hdr_len), IPV6_HDR + 32);
        assert_eq!((v.csum_start, v.csum_offset), (40, 16));
        assert_eq!(bytes.len(), original.len());
        // Same bytes but the checksum field, which holds the partial sum.
        assert_eq!(bytes[..56], original[..56]);
        assert_eq!(bytes[58..], original[58..]);
        let partial = pseudo_header(bytes, (bytes.len() - IPV6_HDR) as u32, TCP);
        assert_eq!(u16::from_be_bytes([bytes[56], bytes[57]]), partial);
    }

    #[test]
    fn gro_keeps_flows_apart_and_in_order() {
        let a = |seq: u32, flags: u8, n: usize| tcp(seq, flags, &pattern(n));
        let mut other = tcp(5, ACK, &pattern(100));
        put16(&mut other, IPV6_HDR, 40001); // another source port
        let packets = vec![
            a(0, ACK, 100),
            other.clone(),
            a(100, ACK, 100),
            a(300, ACK, 100), // gap: starts a new write
            a(400, ACK, 0),   // pure ACK: its own write, closes the flow
            a(400, ACK, 100),
            a(500, ACK | FIN, 100),
        ];
        let writes = gro(&packets);
        let shape: Vec<(u32, usize)> = writes.iter().map(|(_, b, n)| (seq_of(b), *n)).collect();
        assert_eq!(
            shape,
            vec![(0, 2), (5, 1), (300, 1), (400, 1), (400, 1), (500, 1)]
        );
        for (v, b, n) in &writes {
            assert_eq!(v.gso_type, if *n > 1 { GSO_TCPV6 } else { GSO_NONE });
            // Every TCP write is marked for the kernel's checksum, partial sum in place.
            assert_eq!(v.flags, F_NEEDS_CSUM);
            let partial = pseudo_header(b, (b.len() - IPV6_HDR) as u32, TCP);
            assert_eq!(u16::from_be_bytes([b[56], b[57]]), partial);
        }
    }

    #[test]
    fn gro_refuses_segments_that_differ() {
        let mut diff_ack = tcp(100, ACK, &pattern(100));
        diff_ack[IPV6_HDR + 11] ^= 1;
        let mut diff_hop = tcp(100, ACK, &pattern(100));
        diff_hop[7] = 63;
        let mut diff_opt = tcp(100, ACK, &pattern(100));
        diff_opt[IPV6_HDR + 31] ^= 1;
        let bigger = tcp(100, ACK, &pattern(101));
        for second in [diff_ack, diff_hop, diff_opt, bigger] {
            let writes = gro(&[tcp(0, ACK, &pattern(100)), second]);
            assert_eq!(writes.len(), 2);
        }
        // A shorter segment is merged and ends the super-packet; PSH likewise.
        let writes = gro(&[
            tcp(0, ACK, &pattern(100)),
            tcp(100, ACK, &pattern(50)),
            tcp(150, ACK, &pattern(50)),
        ]);
        assert_eq!(writes.iter().map(|w| w.2).collect::<Vec<_>>(), vec![2, 1]);
        let writes = gro(&[
            tcp(0, ACK, &pattern(100)),
            tcp(100, ACK | PSH, &pattern(100)),
            tcp(200, ACK, &pattern(100)),
        ]);
        assert_eq!(writes.iter().map(|w| w.2).collect::<Vec<_>>(), vec![2, 1]);
        assert_ne!(writes[0].1[IPV6_HDR + 13] & PSH, 0, "merged PSH kept");
    }

    #[test]
    fn gro_stops_at_the_size_limit() {
        let mss = 1400;
        let packets: Vec<Vec<u8>> = (0..60)
            .map(|i| tcp(i * mss as u32, ACK, &pattern(mss)))
            .collect();
        let writes = gro(&packets);
        let total: usize = writes.iter().map(|w| w.2).sum();
        assert_eq!(total, 60);
        for (_, b, _) in &writes {
            assert!(b.len() <= MAX_SUPER);
        }
        assert_eq!(writes[0].2, (MAX_SUPER - IPV6_HDR - 32) / mss);
    }

    #[test]
    fn udp_and_other_packets_pass_one_by_one() {
        let mut icmp = udp(&pattern(20));
        icmp[6] = 58;
        let writes = gro(&[udp(&pattern(10)), udp(&pattern(10)), icmp.clone()]);
        assert_eq!(writes.len(), 3);
        let (v, b, _) = &writes[0];
        assert_eq!(
            (v.flags, v.csum_start, v.csum_offset),
            (F_NEEDS_CSUM, 40, 6)
        );
        assert_eq!(
            u16::from_be_bytes([b[46], b[47]]),
            pseudo_header(b, (b.len() - IPV6_HDR) as u32, UDP)
        );
        assert_eq!(writes[2].0, VnetHdr::default());
        assert_eq!(writes[2].1, icmp, "not TCP or UDP: written as it came");
    }

    #[test]
    fn uso_split_sets_udp_lengths() {
        let data = pattern(3000);
        let mut pkt = udp(&data);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 48,
            gso_size: 1200,
            csum_start: 40,
            csum_offset: 6,
        };
        let segs = segments(&hdr, &mut pkt);
        assert_eq!(
            segs.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1248, 1248, 648]
        );
        for s in &segs {
            assert_eq!(
                usize::from(u16::from_be_bytes([s[44], s[45]])),
                s.len() - 40
            );
            assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])), s.len() - 40);
        }
    }

    #[test]
    fn checksums_completed_here_verify() {
        for n in [0, 1, 2, 3, 1000, 1001] {
            let mut p = tcp(9, ACK, &pattern(n));
            complete_plain_checksum(&mut p);
            assert!(verifies(&p, TCP), "tcp {n}");
            let mut u = udp(&pattern(n));
            complete_plain_checksum(&mut u);
            assert!(verifies(&u, UDP), "udp {n}");
        }
        // A single read the kernel left partial, behind an extension header: completed.
        let mut p = tcp(9, ACK, &pattern(501));
        p.splice(40..40, [TCP, 0, 0, 0, 0, 0, 0, 0]);
        p[6] = 0; // hop-by-hop options, then TCP
        let len = p.len();
        put16(&mut p, 4, (len - 40) as u16);
        let partial = pseudo_header(&p, (len - 48) as u32, TCP);
        put16(&mut p, 48 + TCP_CSUM, partial);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 48,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        Split::new(&hdr, &mut p).unwrap();
        let mut plain = p[..40].to_vec();
        plain[6] = TCP;
        plain.extend_from_slice(&p[48..]);
        let len = plain.len();
        put16(&mut plain, 4, (len - 40) as u16);
        assert!(verifies(&plain, TCP));
    }

    #[test]
    fn nonsense_reads_are_errors_not_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len > 0 && next() % 2 == 0 {
                buf[0] = 0x60;
            }
            let hdr_bytes: Vec<u8> = (0..VNET_HDR_LEN).map(|_| next() as u8).collect();
            let mut hdr = VnetHdr::parse(&hdr_bytes).unwrap();
            if next() % 2 == 0 {
                hdr.gso_type = [GSO_NONE, GSO_TCPV6, GSO_UDP_L4][(next() % 3) as usize];
                hdr.csum_start = 40 + (next() % 8) as u16;
            }
            if let Ok(split) = Split::new(&hdr, &mut buf) {
                for i in 0..split.count() {
                    let mut out = vec![0u8; split.len(i)];
                    split.write(&buf, i, &mut out);
                }
            }
            let packets = vec![buf.clone(), buf];
            let mut g = Gro::new(true);
            g.push(&packets, 0, 0, packets[0].len());
            g.push(&packets, 1, 0, packets[1].len());
            g.writes(&packets, |_, _| {});
        }
    }
}
