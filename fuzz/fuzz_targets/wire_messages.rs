//! Every wire view over arbitrary bytes: `classify` agrees with the checked
//! constructors, no accessor panics, and whatever parses re-emits to the same bytes
//! (the encoding is canonical, except for a record request's padding, which the
//! receiver does not check: docs/protocol.md §3.5).
#![no_main]

use libfuzzer_sys::fuzz_target;
use metanet_proto::wire::{
    self, CookieReplyPacket, CookieReplyRepr, DataPacket, DataRepr, InitiationPacket,
    InitiationRepr, Kind, RecordCookiePacket, RecordCookieRepr, RecordRequestPacket,
    RecordRequestRepr, RecordResponsePacket, RecordResponseRepr, ResponsePacket, ResponseRepr,
};

fuzz_target!(|data: &[u8]| {
    let kind = wire::classify(data);

    let initiation = InitiationPacket::new_checked(data);
    assert_eq!(initiation.is_ok(), kind == Ok(Kind::Initiation));
    if let Ok(p) = initiation {
        let r = InitiationRepr::parse(&p);
        assert_eq!(p.noise(), &r.noise[..]);
        assert_eq!(emit(r.buffer_len(), |b| r.emit(b)), data);
    }

    let response = ResponsePacket::new_checked(data);
    assert_eq!(response.is_ok(), kind == Ok(Kind::Response));
    if let Ok(p) = response {
        let r = ResponseRepr::parse(&p);
        assert_eq!(p.noise(), &r.noise[..]);
        assert_eq!(emit(r.buffer_len(), |b| r.emit(b)), data);
    }

    let cookie_reply = CookieReplyPacket::new_checked(data);
    assert_eq!(cookie_reply.is_ok(), kind == Ok(Kind::CookieReply));
    if let Ok(p) = cookie_reply {
        let r = CookieReplyRepr::parse(&p);
        assert_eq!(emit(r.buffer_len(), |b| r.emit(b)), data);
    }

    let data_packet = DataPacket::new_checked(data);
    assert_eq!(data_packet.is_ok(), kind == Ok(Kind::Data));
    if let Ok(p) = data_packet {
        let r = DataRepr::parse(&p);
        assert_eq!(p.is_keepalive(), r.ciphertext.len() == wire::TAG_LEN);
        assert_eq!(emit(r.buffer_len(), |b| r.emit(b)), data);
    }

    let record_request = RecordRequestPacket::new_checked(data);
    assert_eq!(record_request.is_ok(), kind == Ok(Kind::RecordRequest));
    if let Ok(p) = record_request {
        let r = RecordRequestRepr::parse(&p);
        let again = emit(r.buffer_len(), |b| r.emit(b));
        assert_eq!(again[..28], data[..28]);
        assert!(again[28..].iter().all(|&b| b == 0));
    }

    let record_response = RecordResponsePacket::new_checked(data);
    assert_eq!(record_response.is_ok(), kind == Ok(Kind::RecordResponse));
    if let Ok(p) = record_response {
        let r = RecordResponseRepr::parse(&p);
        assert_eq!(p.record(), &r.record[..]);
        assert_eq!(emit(r.buffer_len(), |b| r.emit(b)), data);
    }

    let record_cookie = RecordCookiePacket::new_checked(data);
    assert_eq!(record_cookie.is_ok(), kind == Ok(Kind::RecordCookie));
    if let Ok(p) = record_cookie {
        let r = RecordCookieRepr::parse(&p);
        assert_eq!(emit(r.buffer_len(), |b| r.emit(b)), data);
    }

    let relay = wire::RelayPacket::new_checked(data);
    assert_eq!(
        relay.is_ok(),
        matches!(kind, Ok(Kind::Relay | Kind::Relayed))
    );
    if let Ok(p) = relay {
        assert_eq!(p.is_relayed(), kind == Ok(Kind::Relayed));
        // The inner message is one a relay carries, itself valid.
        let inner = wire::classify(p.inner()).unwrap();
        assert!(matches!(
            inner,
            Kind::Initiation | Kind::Response | Kind::CookieReply | Kind::Data
        ));
        let again = match p.destination() {
            Some(d) => wire::relay_message(&d, &p.source(), p.inner()),
            None => wire::relayed_message(&p.source(), p.inner()),
        };
        assert_eq!(again, data);
    }

    // Exhaustive on purpose: a new message kind does not build here until it has a
    // view checked above.
    match kind {
        Ok(
            Kind::Initiation
            | Kind::Response
            | Kind::CookieReply
            | Kind::Data
            | Kind::RecordRequest
            | Kind::RecordResponse
            | Kind::RecordCookie
            | Kind::Relay
            | Kind::Relayed,
        )
        | Err(_) => {}
    }
});

fn emit(len: usize, f: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    f(&mut buf);
    buf
}
