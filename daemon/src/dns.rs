//! A DNS view of the overlay (`.meta`): AAAA answers for `<address>.meta` (any `mn1…`
//! address: its overlay IPv6 needs no lookup) and `<name>.meta` (names registered on
//! the chain, from a shared table the chain client fills).
//!
//! Only what a stub resolver needs: one question per query, class IN, UDP. AAAA for a
//! known name gets the address; other types for a known name get an empty answer
//! (NODATA); unknown `.meta` names get NXDOMAIN; names outside `.meta` get REFUSED, so
//! this never becomes an open resolver. Malformed queries get FORMERR when the header
//! can be read and are dropped otherwise; nothing here panics on input.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use metanet_proto::Address;

/// The domain the overlay answers for.
pub const DOMAIN: &str = "meta";
/// Answer TTL in seconds: short, names and keys can change.
const TTL: u32 = 60;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const RCODE_FORMERR: u8 = 1;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_NOTIMP: u8 = 4;
const RCODE_REFUSED: u8 = 5;

/// Names (lowercase, without `.meta`) to addresses, filled by the chain client.
pub type Names = Arc<RwLock<HashMap<String, Address>>>;

/// Build the answer to `query`, or `None` to stay silent (unreadable header, or a
/// response rather than a query).
pub fn answer(query: &[u8], names: &HashMap<String, Address>) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let flags = u16::from_be_bytes([query[2], query[3]]);
    if flags & 0x8000 != 0 {
        return None; // a response: never answer those (no reflection loops)
    }
    let opcode = (flags >> 11) & 0xf;
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    let header = |rcode: u8, answers: u16, questions: u16| {
        let mut h = Vec::with_capacity(512);
        h.extend_from_slice(&query[..2]);
        // QR, opcode echoed, AA, RD echoed; RA off (we do not recurse).
        let out = 0x8000 | (opcode << 11) | 0x0400 | (flags & 0x0100) | u16::from(rcode);
        h.extend_from_slice(&out.to_be_bytes());
        h.extend_from_slice(&questions.to_be_bytes());
        h.extend_from_slice(&answers.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h
    };
    if opcode != 0 {
        return Some(header(RCODE_NOTIMP, 0, 0));
    }
    if qdcount != 1 {
        return Some(header(RCODE_FORMERR, 0, 0));
    }
    let Some((labels, end)) = read_name(query, 12) else {
        return Some(header(RCODE_FORMERR, 0, 0));
    };
    let Some(tail) = query.get(end..end + 4) else {
        return Some(header(RCODE_FORMERR, 0, 0));
    };
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    let qclass = u16::from_be_bytes([tail[2], tail[3]]);
    let question = &query[12..end + 4];
    let with_question = |rcode: u8, answer: Option<Ipv6Addr>| {
        let mut r = header(rcode, u16::from(answer.is_some()), 1);
        r.extend_from_slice(question);
        if let Some(ip) = answer {
            r.extend_from_slice(&[0xc0, 12]); // pointer to the question's name
            r.extend_from_slice(&TYPE_AAAA.to_be_bytes());
            r.extend_from_slice(&CLASS_IN.to_be_bytes());
            r.extend_from_slice(&TTL.to_be_bytes());
            r.extend_from_slice(&16u16.to_be_bytes());
            r.extend_from_slice(&ip.octets());
        }
        r
    };
    let Some(target) = resolve(&labels, names) else {
        let in_domain = labels.last().is_some_and(|l| l == DOMAIN);
        let rcode = if in_domain {
            RCODE_NXDOMAIN
        } else {
            RCODE_REFUSED
        };
        return Some(with_question(rcode, None));
    };
    let ip = (qtype == TYPE_AAAA && qclass == CLASS_IN).then(|| target.ipv6());
    Some(with_question(0, ip))
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

    fn rcode(r: &[u8]) -> u8 {
        r[3] & 0xf
    }

    fn ancount(r: &[u8]) -> u16 {
        u16::from_be_bytes([r[6], r[7]])
    }

    fn addr() -> Address {
        Address::from_public_key(&[4; 32])
    }

    #[test]
    fn address_names_answer_their_overlay_ipv6() {
        let a = addr();
        let r = answer(&query(&format!("{a}.meta"), TYPE_AAAA), &HashMap::new()).unwrap();
        assert_eq!((rcode(&r), ancount(&r)), (0, 1));
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(&r[r.len() - 16..], &a.ipv6().octets());
        // Case-insensitive.
        let upper = format!("{a}.META").to_uppercase();
        let r = answer(&query(&upper, TYPE_AAAA), &HashMap::new()).unwrap();
        assert_eq!(ancount(&r), 1);
    }

    #[test]
    fn registered_names_unknown_names_and_other_domains() {
        let mut names = HashMap::new();
        names.insert("sony.game".to_owned(), addr());
        let r = answer(&query("Sony.Game.meta", TYPE_AAAA), &names).unwrap();
        assert_eq!(&r[r.len() - 16..], &addr().ipv6().octets());
        // A record of a known name: NODATA.
        let r = answer(&query("sony.game.meta", 1), &names).unwrap();
        assert_eq!((rcode(&r), ancount(&r)), (0, 0));
        let r = answer(&query("nobody.meta", TYPE_AAAA), &names).unwrap();
        assert_eq!(rcode(&r), RCODE_NXDOMAIN);
        let r = answer(&query("example.com", TYPE_AAAA), &names).unwrap();
        assert_eq!(rcode(&r), RCODE_REFUSED);
    }

    #[test]
    fn malformed_input_never_panics() {
        let names = HashMap::new();
        assert!(answer(&[], &names).is_none());
        assert!(answer(&[0; 11], &names).is_none());
        let mut q = query("a.meta", TYPE_AAAA);
        q.truncate(q.len() - 3);
        assert_eq!(rcode(&answer(&q, &names).unwrap()), RCODE_FORMERR);
        let mut r = query("a.meta", TYPE_AAAA);
        r[2] |= 0x80;
        assert!(answer(&r, &names).is_none(), "responses are never answered");
        for len in 0..40 {
            for seed in 0..50u8 {
                let junk: Vec<u8> = (0..len).map(|i| seed.wrapping_mul(31) ^ i as u8).collect();
                let _ = answer(&junk, &names);
            }
        }
    }
}
