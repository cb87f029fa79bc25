//! A DNS view of the overlay (`.meta`): AAAA answers for `<address>.meta` (any `mn1…`
//! address: its overlay IPv6 needs no lookup) and `<name>.meta` (names registered on
//! the chain, from a shared table the chain client fills).
//!
//! Only what a stub resolver needs: one question per query, class IN, UDP. AAAA for a
//! known name gets the address; other types for a known name get an empty answer
//! (NODATA); unknown `.meta` names get NXDOMAIN; names outside `.meta` get REFUSED, so
//! this never becomes an open resolver. NXDOMAIN and NODATA answers carry the SOA of
//! `meta.` in the authority section (RFC 2308), so resolvers cache them for
//! [`NEGATIVE_TTL`] seconds. EDNS(0) (RFC 6891): a query with an OPT record gets one
//! back (payload size [`EDNS_PAYLOAD`], no options, the DO bit copied), an EDNS version
//! other than 0 gets BADVERS. Malformed queries get FORMERR when the header can be read
//! and are dropped otherwise; nothing here panics on input.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use metanet_proto::Address;

/// The domain the overlay answers for.
pub const DOMAIN: &str = "meta";
/// Answer TTL in seconds: short, names and keys can change.
const TTL: u32 = 60;
/// How long resolvers may cache a negative answer (the SOA's MINIMUM and its TTL).
pub const NEGATIVE_TTL: u32 = 30;
/// The UDP payload size advertised in EDNS answers (the DNS flag day 2020 value: no
/// fragmentation on any usual path).
pub const EDNS_PAYLOAD: u16 = 1232;
const TYPE_SOA: u16 = 6;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;
const RCODE_FORMERR: u8 = 1;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_NOTIMP: u8 = 4;
const RCODE_REFUSED: u8 = 5;
/// BADVERS (16): 0 in the header, 1 in the OPT record's extended RCODE byte.
const RCODE_BADVERS: u16 = 16;
/// SOA timers (seconds): refresh, retry, expire. Nothing transfers this zone; they are
/// there because the record has them.
const SOA_TIMERS: [u32; 3] = [3600, 600, 86400];

/// Names (lowercase, without `.meta`) to addresses, filled by the chain client.
pub type Names = Arc<RwLock<HashMap<String, Address>>>;

/// What a query asked for, once parsed.
struct Query<'a> {
    id: [u8; 2],
    /// The RD bit, echoed.
    rd: bool,
    labels: Vec<String>,
    qtype: u16,
    qclass: u16,
    /// The question section as received (name, type, class).
    question: &'a [u8],
    /// The query's OPT record, if any.
    edns: Option<Edns>,
}

/// The fields of an OPT record a responder looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Edns {
    version: u8,
    dnssec_ok: bool,
}

/// Why a query cannot be answered normally.
enum Reject {
    /// Unreadable header, or a response: stay silent.
    Silent,
    /// Answer with this RCODE and no question (the query could not be read further).
    Bare(u8),
}

/// Build the answer to `query`, or `None` to stay silent (unreadable header, or a
/// response rather than a query).
pub fn answer(query: &[u8], names: &HashMap<String, Address>) -> Option<Vec<u8>> {
    let q = match parse(query) {
        Ok(q) => q,
        Err(Reject::Silent) => return None,
        Err(Reject::Bare(rcode)) => return Some(bare(query, rcode)),
    };
    let mut r = Response::new(&q);
    if let Some(e) = q.edns {
        if e.version != 0 {
            r.finish(RCODE_BADVERS, false);
            return Some(r.buf);
        }
    }
    let in_domain = q.labels.last().is_some_and(|l| l == DOMAIN);
    if !in_domain || !(q.qclass == CLASS_IN || q.qclass == CLASS_ANY) {
        r.finish(u16::from(RCODE_REFUSED), false);
        return Some(r.buf);
    }
    let apex = q.labels.len() == 1;
    let wants = |t: u16| q.qtype == t || q.qtype == TYPE_ANY;
    let rcode = if apex {
        if wants(TYPE_SOA) {
            r.soa(true);
        }
        0
    } else if let Some(target) = resolve(&q.labels, names) {
        if wants(TYPE_AAAA) {
            r.aaaa(target.ipv6());
        }
        0
    } else if has_descendant(&q.labels, names) {
        0 // an empty non-terminal (`game.meta` when `sony.game` exists): NODATA
    } else {
        u16::from(RCODE_NXDOMAIN)
    };
    if r.answers == 0 {
        r.soa(false);
    }
    r.finish(rcode, true);
    Some(r.buf)
}

/// Read the header, the question and the additional section's OPT record.
fn parse(msg: &[u8]) -> Result<Query<'_>, Reject> {
    let header = msg.get(..12).ok_or(Reject::Silent)?;
    let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let flags = word(2);
    if flags & 0x8000 != 0 {
        return Err(Reject::Silent); // a response: never answer those (no reflection loops)
    }
    if (flags >> 11) & 0xf != 0 {
        return Err(Reject::Bare(RCODE_NOTIMP));
    }
    let (qdcount, ancount, nscount, arcount) = (word(4), word(6), word(8), word(10));
    let formerr = || Reject::Bare(RCODE_FORMERR);
    if qdcount != 1 {
        return Err(formerr());
    }
    let (labels, end) = read_name(msg, 12).ok_or_else(formerr)?;
    let tail = msg.get(end..end + 4).ok_or_else(formerr)?;
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    let qclass = u16::from_be_bytes([tail[2], tail[3]]);
    let question = &msg[12..end + 4];
    let mut pos = end + 4;
    for _ in 0..u32::from(ancount) + u32::from(nscount) {
        pos = skip_record(msg, pos).ok_or_else(formerr)?.end;
    }
    let mut edns = None;
    for _ in 0..arcount {
        let rr = skip_record(msg, pos).ok_or_else(formerr)?;
        if rr.rtype == TYPE_OPT {
            // One OPT at most, owned by the root name, with well-formed options.
            if edns.is_some() || rr.name_len != 1 || !options_ok(&msg[rr.rdata..rr.end]) {
                return Err(formerr());
            }
            edns = Some(Edns {
                version: rr.ttl.to_be_bytes()[1],
                dnssec_ok: rr.ttl & 0x8000 != 0,
            });
        }
        pos = rr.end;
    }
    Ok(Query {
        id: [header[0], header[1]],
        rd: flags & 0x0100 != 0,
        labels,
        qtype,
        qclass,
        question,
        edns,
    })
}

/// A header-only answer with `rcode` (no question: it could not be read).
fn bare(query: &[u8], rcode: u8) -> Vec<u8> {
    let flags = u16::from_be_bytes([query[2], query[3]]);
    // QR, opcode and RD echoed; RA off (we do not recurse).
    let out = 0x8000 | (flags & 0x7900) | u16::from(rcode);
    let mut h = Vec::with_capacity(12);
    h.extend_from_slice(&query[..2]);
    h.extend_from_slice(&out.to_be_bytes());
    h.extend_from_slice(&[0; 8]);
    h
}

/// An answer being built: header, the question echoed, then records.
struct Response {
    buf: Vec<u8>,
    answers: u16,
    authority: u16,
    /// Offset of the `meta` label in the echoed question (for compression pointers).
    domain_at: Option<u16>,
    edns: Option<Edns>,
    rd: bool,
}

impl Response {
    fn new(q: &Query<'_>) -> Self {
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(&q.id);
        buf.extend_from_slice(&[0; 10]); // flags and counts, set by `finish`
        buf.extend_from_slice(q.question);
        // The last label of the question's name starts after the others.
        let before: usize = q.labels.iter().rev().skip(1).map(|l| l.len() + 1).sum();
        let domain_at = (q.labels.last().is_some_and(|l| l == DOMAIN))
            .then(|| u16::try_from(12 + before).ok())
            .flatten();
        Response {
            buf,
            answers: 0,
            authority: 0,
            domain_at,
            edns: q.edns,
            rd: q.rd,
        }
    }

    /// The AAAA record of the question's name.
    fn aaaa(&mut self, ip: Ipv6Addr) {
        self.buf.extend_from_slice(&[0xc0, 12]); // pointer to the question's name
        self.record_head(TYPE_AAAA, TTL, 16);
        self.buf.extend_from_slice(&ip.octets());
        self.answers += 1;
    }

    /// The SOA of `meta.`, as an answer or in the authority section.
    fn soa(&mut self, answer: bool) {
        let Some(at) = self.domain_at else {
            return;
        };
        let ptr = (0xc000 | at).to_be_bytes();
        self.buf.extend_from_slice(&ptr);
        let hostmaster = b"\x0ahostmaster";
        let rdlen = 2 + hostmaster.len() + 2 + 5 * 4;
        self.record_head(TYPE_SOA, NEGATIVE_TTL, rdlen as u16);
        self.buf.extend_from_slice(&ptr); // MNAME: meta.
        self.buf.extend_from_slice(hostmaster); // RNAME: hostmaster.meta.
        self.buf.extend_from_slice(&ptr);
        self.buf.extend_from_slice(&1u32.to_be_bytes()); // serial
        for t in SOA_TIMERS {
            self.buf.extend_from_slice(&t.to_be_bytes());
        }
        self.buf.extend_from_slice(&NEGATIVE_TTL.to_be_bytes()); // MINIMUM
        if answer {
            self.answers += 1;
        } else {
            self.authority += 1;
        }
    }

    fn record_head(&mut self, rtype: u16, ttl: u32, rdlen: u16) {
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        self.buf.extend_from_slice(&rdlen.to_be_bytes());
    }

    /// Write flags and counts, and the OPT record when the query had one. `rcode` may
    /// be an extended RCODE (above 15), which needs EDNS.
    fn finish(&mut self, rcode: u16, authoritative: bool) {
        let aa = if authoritative { 0x0400 } else { 0 };
        let rd = if self.rd { 0x0100 } else { 0 };
        let flags = 0x8000 | aa | rd | (rcode & 0xf);
        self.buf[2..4].copy_from_slice(&flags.to_be_bytes());
        self.buf[4..6].copy_from_slice(&1u16.to_be_bytes());
        self.buf[6..8].copy_from_slice(&self.answers.to_be_bytes());
        self.buf[8..10].copy_from_slice(&self.authority.to_be_bytes());
        let additional = u16::from(self.edns.is_some());
        self.buf[10..12].copy_from_slice(&additional.to_be_bytes());
        if let Some(e) = self.edns {
            // Root name, type OPT, class = our payload size, TTL = extended RCODE,
            // version 0, DO copied (RFC 3225); no options.
            self.buf.push(0);
            self.buf.extend_from_slice(&TYPE_OPT.to_be_bytes());
            self.buf.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
            let ext = u8::try_from(rcode >> 4).unwrap_or(0);
            let dnssec_ok = if e.dnssec_ok { 0x80 } else { 0 };
            self.buf.extend_from_slice(&[ext, 0, dnssec_ok, 0, 0, 0]);
        }
    }
}

/// One resource record's position in a message.
struct Record {
    /// Bytes of its owner name (1: the root).
    name_len: usize,
    rtype: u16,
    ttl: u32,
    /// Offset of its RDATA.
    rdata: usize,
    /// Offset after it.
    end: usize,
}

/// Step over the record at `pos` (its name may be compressed).
fn skip_record(msg: &[u8], pos: usize) -> Option<Record> {
    let fixed = skip_name(msg, pos)?;
    let f = msg.get(fixed..fixed + 10)?;
    let rtype = u16::from_be_bytes([f[0], f[1]]);
    let ttl = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
    let rdlen = usize::from(u16::from_be_bytes([f[8], f[9]]));
    let rdata = fixed + 10;
    let end = rdata.checked_add(rdlen).filter(|e| *e <= msg.len())?;
    Some(Record {
        name_len: fixed - pos,
        rtype,
        ttl,
        rdata,
        end,
    })
}

/// The offset after the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            1..=63 => pos += 1 + usize::from(len),
            0xc0..=0xff => return msg.get(pos + 1).map(|_| pos + 2),
            _ => return None, // reserved label types
        }
    }
}

/// Whether EDNS option data is a well-formed sequence of (code, length, value).
fn options_ok(mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let Some(head) = data.get(..4) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let Some(rest) = data.get(4 + len..) else {
            return false;
        };
        data = rest;
    }
    true
}

/// The address a `.meta` name stands for.
fn resolve(labels: &[String], names: &HashMap<String, Address>) -> Option<Address> {
    let (last, rest) = labels.split_last()?;
    if last != DOMAIN || rest.is_empty() {
        return None;
    }
    if let [one] = rest {
        if let Ok(a) = one.parse::<Address>() {
            return Some(a);
        }
    }
    names.get(&rest.join(".")).copied()
}

/// Whether a registered name lies below the `.meta` name `labels` (which then exists,
/// with no records of its own).
fn has_descendant(labels: &[String], names: &HashMap<String, Address>) -> bool {
    let Some((_, rest)) = labels.split_last() else {
        return false;
    };
    let suffix = format!(".{}", rest.join("."));
    names.keys().any(|n| n.ends_with(&suffix))
}

/// Read an uncompressed name at `pos` (queries carry no compression), lowercased.
/// Returns the labels and the offset after the name.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(Vec<String>, usize)> {
    let mut labels = Vec::new();
    let mut total = 0usize;
    loop {
        let len = usize::from(*msg.get(pos)?);
        pos += 1;
        if len == 0 {
            return Some((labels, pos));
        }
        if len > 63 {
            return None; // compression pointers and reserved label types
        }
        total += len + 1;
        if total > 255 || labels.len() >= 127 {
            return None;
        }
        let label = msg.get(pos..pos + len)?;
        if !label.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += len;
    }
}

/// Serve DNS on `sock` until the task is dropped.
pub async fn serve(sock: tokio::net::UdpSocket, names: Names) {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, from): (usize, SocketAddr) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "dns receive failed");
                continue;
            }
        };
        let reply = match names.read() {
            Ok(table) => answer(&buf[..n], &table),
            Err(poisoned) => answer(&buf[..n], &poisoned.into_inner()),
        };
        if let Some(reply) = reply {
            if let Err(e) = sock.send_to(&reply, from).await {
                tracing::debug!(error = %e, "dns send failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    /// `query` with an OPT record: payload 4096, `version`, DO bit, `options` as RDATA.
    fn with_opt(mut q: Vec<u8>, version: u8, dnssec_ok: bool, options: &[u8]) -> Vec<u8> {
        let ar = u16::from_be_bytes([q[10], q[11]]) + 1;
        q[10..12].copy_from_slice(&ar.to_be_bytes());
        q.push(0);
        q.extend_from_slice(&TYPE_OPT.to_be_bytes());
        q.extend_from_slice(&4096u16.to_be_bytes());
        q.extend_from_slice(&[0, version, if dnssec_ok { 0x80 } else { 0 }, 0]);
        q.extend_from_slice(&(options.len() as u16).to_be_bytes());
        q.extend_from_slice(options);
        q
    }

    fn rcode(r: &[u8]) -> u8 {
        r[3] & 0xf
    }

    fn count(r: &[u8], section: usize) -> u16 {
        u16::from_be_bytes([r[4 + 2 * section], r[5 + 2 * section]])
    }

    fn ancount(r: &[u8]) -> u16 {
        count(r, 1)
    }

    /// The records of a response, in order, after checking that every section is
    /// well formed and the message ends exactly after the last record.
    fn records(r: &[u8]) -> Vec<Record> {
        let (_, end) = read_name(r, 12).unwrap();
        let mut pos = end + 4;
        let mut out = Vec::new();
        for _ in 0..ancount(r) + count(r, 2) + count(r, 3) {
            let rr = skip_record(r, pos).unwrap();
            pos = rr.end;
            out.push(rr);
        }
        assert_eq!(pos, r.len(), "trailing bytes in the response");
        out
    }

    fn addr() -> Address {
        Address::from_public_key(&[4; 32])
    }

    fn names() -> HashMap<String, Address> {
        let mut names = HashMap::new();
        names.insert("sony.game".to_owned(), addr());
        names
    }

    /// The SOA in the authority section: (TTL, MINIMUM), after checking its names.
    fn authority_soa(r: &[u8]) -> (u32, u32) {
        assert_eq!((ancount(r), count(r, 2)), (0, 1), "one authority record");
        let rr = records(r).remove(0);
        assert_eq!(rr.rtype, TYPE_SOA);
        let rdata = &r[rr.rdata..rr.end];
        // Owner, MNAME and RNAME end in a pointer to the question's `meta` label.
        let ptr = u16::from_be_bytes([r[rr.end - rdata.len() - 12], r[rr.end - rdata.len() - 11]]);
        let at = usize::from(ptr & 0x3fff);
        assert_eq!(&r[at..at + 5].to_ascii_lowercase(), b"\x04meta");
        assert_eq!(&rdata[2..13], b"\x0ahostmaster");
        let minimum = u32::from_be_bytes(rdata[rdata.len() - 4..].try_into().unwrap());
        (rr.ttl, minimum)
    }

    #[test]
    fn address_names_answer_their_overlay_ipv6() {
        let a = addr();
        let r = answer(&query(&format!("{a}.meta"), TYPE_AAAA), &HashMap::new()).unwrap();
        assert_eq!((rcode(&r), ancount(&r)), (0, 1));
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(&r[r.len() - 16..], &a.ipv6().octets());
        assert_eq!(records(&r)[0].ttl, TTL);
        assert_ne!(r[2] & 0x04, 0, "authoritative");
        // Case-insensitive.
        let upper = format!("{a}.META").to_uppercase();
        let r = answer(&query(&upper, TYPE_AAAA), &HashMap::new()).unwrap();
        assert_eq!(ancount(&r), 1);
    }

    #[test]
    fn registered_names_unknown_names_and_other_domains() {
        let names = names();
        let r = answer(&query("Sony.Game.meta", TYPE_AAAA), &names).unwrap();
        assert_eq!(&r[r.len() - 16..], &addr().ipv6().octets());
        // A record of a known name: NODATA.
        let r = answer(&query("sony.game.meta", 1), &names).unwrap();
        assert_eq!((rcode(&r), ancount(&r)), (0, 0));
        let r = answer(&query("nobody.meta", TYPE_AAAA), &names).unwrap();
        assert_eq!(rcode(&r), RCODE_NXDOMAIN);
        let r = answer(&query("example.com", TYPE_AAAA), &names).unwrap();
        assert_eq!(rcode(&r), RCODE_REFUSED);
        assert_eq!((ancount(&r), count(&r, 2)), (0, 0), "no SOA outside .meta");
        records(&r);
    }

    #[test]
    fn nxdomain_and_nodata_carry_the_soa_of_meta_with_the_negative_ttl() {
        let names = names();
        let nx = answer(&query("nobody.META", TYPE_AAAA), &names).unwrap();
        assert_eq!(rcode(&nx), RCODE_NXDOMAIN);
        assert_eq!(authority_soa(&nx), (NEGATIVE_TTL, NEGATIVE_TTL));
        let nodata = answer(&query("sony.game.meta", 1), &names).unwrap();
        assert_eq!(rcode(&nodata), 0);
        assert_eq!(authority_soa(&nodata), (NEGATIVE_TTL, NEGATIVE_TTL));
        // `game.meta` exists (a name lies below it) but has no records: NODATA.
        let ent = answer(&query("game.meta", TYPE_AAAA), &names).unwrap();
        assert_eq!(rcode(&ent), 0);
        authority_soa(&ent);
        // The apex has its SOA, and NODATA for anything else.
        let soa = answer(&query("meta", TYPE_SOA), &names).unwrap();
        assert_eq!((rcode(&soa), ancount(&soa), count(&soa, 2)), (0, 1, 0));
        assert_eq!(records(&soa)[0].rtype, TYPE_SOA);
        let apex = answer(&query("meta", TYPE_AAAA), &names).unwrap();
        assert_eq!(rcode(&apex), 0);
        authority_soa(&apex);
    }

    #[test]
    fn edns_queries_get_an_opt_record_back() {
        let names = names();
        let plain = answer(&query("sony.game.meta", TYPE_AAAA), &names).unwrap();
        assert_eq!(count(&plain, 3), 0, "no OPT without one in the query");
        // An option we do not implement (a cookie) is not echoed.
        let cookie = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        for (dnssec_ok, options) in [(false, &[][..]), (true, &cookie[..])] {
            let q = with_opt(query("sony.game.meta", TYPE_AAAA), 0, dnssec_ok, options);
            let r = answer(&q, &names).unwrap();
            assert_eq!((rcode(&r), ancount(&r), count(&r, 3)), (0, 1, 1));
            let opt = records(&r).pop().unwrap();
            assert_eq!(opt.rtype, TYPE_OPT);
            assert_eq!(opt.name_len, 1, "owned by the root");
            let class = u16::from_be_bytes([r[opt.rdata - 8], r[opt.rdata - 7]]);
            assert_eq!(class, EDNS_PAYLOAD);
            assert_eq!(
                opt.ttl.to_be_bytes()[..2],
                [0, 0],
                "extended rcode 0, version 0"
            );
            assert_eq!(opt.ttl & 0x8000 != 0, dnssec_ok, "DO copied");
            assert_eq!(opt.rdata, opt.end, "no options");
        }
        // Negative answers keep the SOA before the OPT.
        let q = with_opt(query("nobody.meta", TYPE_AAAA), 0, false, &[]);
        let r = answer(&q, &names).unwrap();
        assert_eq!(
            (rcode(&r), count(&r, 2), count(&r, 3)),
            (RCODE_NXDOMAIN, 1, 1)
        );
        let rrs = records(&r);
        assert_eq!((rrs[0].rtype, rrs[1].rtype), (TYPE_SOA, TYPE_OPT));
    }

    #[test]
    fn unknown_edns_versions_get_badvers() {
        let q = with_opt(query("sony.game.meta", TYPE_AAAA), 1, false, &[]);
        let r = answer(&q, &names()).unwrap();
        assert_eq!((rcode(&r), ancount(&r), count(&r, 3)), (0, 0, 1));
        let opt = records(&r).pop().unwrap();
        let [ext, version, ..] = opt.ttl.to_be_bytes();
        assert_eq!(u16::from(ext) << 4, RCODE_BADVERS);
        assert_eq!(version, 0, "the version we speak");
    }

    #[test]
    fn malformed_queries_get_formerr() {
        let names = names();
        let formerr = |q: &[u8]| {
            let r = answer(q, &names).unwrap();
            assert_eq!(rcode(&r), RCODE_FORMERR, "{q:?}");
            assert_eq!(r.len(), 12, "header only");
        };
        let good = query("sony.game.meta", TYPE_AAAA);
        let mut q = good.clone();
        q.truncate(q.len() - 3);
        formerr(&q);
        for qd in [0u8, 2] {
            let mut q = good.clone();
            q[5] = qd;
            formerr(&q);
        }
        // A compression pointer in the question.
        let mut q = good.clone();
        q[12] = 0xc0;
        formerr(&q);
        // Two OPT records.
        formerr(&with_opt(
            with_opt(good.clone(), 0, false, &[]),
            0,
            false,
            &[],
        ));
        // An option longer than the record.
        formerr(&with_opt(good.clone(), 0, false, &[0, 10, 0, 9, 1]));
        // An OPT not owned by the root.
        let mut q = with_opt(good.clone(), 0, false, &[]);
        let at = good.len();
        q.splice(at..at + 1, [1, b'x', 0]);
        formerr(&q);
        // An additional record promised but missing; an RDATA past the end.
        let mut q = good.clone();
        q[11] = 1;
        formerr(&q);
        let mut q = with_opt(good.clone(), 0, false, &[]);
        let n = q.len();
        q[n - 1] = 5;
        formerr(&q);
        // Another opcode: NOTIMP.
        let mut q = good.clone();
        q[2] |= 0x28; // opcode 5 (UPDATE)
        assert_eq!(rcode(&answer(&q, &names).unwrap()), RCODE_NOTIMP);
    }

    #[test]
    fn malformed_input_never_panics() {
        let names = names();
        assert!(answer(&[], &names).is_none());
        assert!(answer(&[0; 11], &names).is_none());
        let mut r = query("a.meta", TYPE_AAAA);
        r[2] |= 0x80;
        assert!(answer(&r, &names).is_none(), "responses are never answered");
        for len in 0..40 {
            for seed in 0..50u8 {
                let junk: Vec<u8> = (0..len).map(|i| seed.wrapping_mul(31) ^ i as u8).collect();
                let _ = answer(&junk, &names);
            }
        }
        // Every single-byte change and every truncation of valid queries (with and
        // without EDNS): an answer, when there is one, is a well-formed message.
        let bases = [
            query("sony.game.meta", TYPE_AAAA),
            with_opt(
                query("nobody.meta", TYPE_ANY),
                0,
                true,
                &[0, 10, 0, 2, 1, 2],
            ),
            with_opt(query("meta", TYPE_SOA), 3, false, &[]),
        ];
        for base in bases {
            for i in 0..base.len() {
                for v in [0u8, 1, 0x3f, 0x40, 0x80, 0xc0, 0xff] {
                    let mut q = base.clone();
                    q[i] = v;
                    if let Some(r) = answer(&q, &names) {
                        if r.len() > 12 {
                            records(&r);
                        }
                    }
                }
                let _ = answer(&base[..i], &names);
            }
        }
    }
}
