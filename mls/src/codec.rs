//! The byte format of saved states: a tagged, authenticated envelope around a body of
//! length-prefixed fields.
//!
//! ```text
//! envelope = magic (4 bytes) || version (1 byte, 1) || body || tag (32 bytes)
//! tag      = blake3::keyed_hash(state key, magic || version || len(address) (u32 BE)
//!                               || address || body)
//! ```
//!
//! The state key is `blake3::derive_key("metanet v1 mls state", seed)`, so only the
//! identity that wrote a state can load it, and a corrupted state is refused before
//! any of it is decoded.

use zeroize::Zeroizing;

use crate::Error;

const VERSION: u8 = 1;
const TAG_LEN: usize = 32;

/// Magic of a saved [`crate::Member`].
pub(crate) const MEMBER_MAGIC: [u8; 4] = *b"MNmk";
/// Magic of a saved [`crate::Group`].
pub(crate) const GROUP_MAGIC: [u8; 4] = *b"MNmg";

/// The key that authenticates an identity's saved states.
pub(crate) fn state_key(seed: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(blake3::derive_key("metanet v1 mls state", seed))
}

fn tag(key: &[u8; 32], magic: &[u8; 4], address: &str, body: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(magic);
    h.update(&[VERSION]);
    h.update(&(address.len() as u32).to_be_bytes());
    h.update(address.as_bytes());
    h.update(body);
    h.finalize()
}

/// Wraps `body` in an authenticated envelope.
pub(crate) fn seal(key: &[u8; 32], magic: &[u8; 4], address: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(magic.len() + 1 + body.len() + TAG_LEN);
    out.extend_from_slice(magic);
    out.push(VERSION);
    out.extend_from_slice(body);
    out.extend_from_slice(tag(key, magic, address, body).as_bytes());
    out
}

/// Checks an envelope made by [`seal`] with the same key, magic and address and
/// returns its body.
pub(crate) fn open<'a>(
    key: &[u8; 32],
    magic: &[u8; 4],
    address: &str,
    sealed: &'a [u8],
) -> Result<&'a [u8], Error> {
    let head = magic.len() + 1;
    if sealed.len() < head + TAG_LEN {
        return Err(Error::Decode("saved state too short".into()));
    }
    if sealed[..magic.len()] != magic[..] {
        return Err(Error::Decode("not a saved state of this kind".into()));
    }
    if sealed[magic.len()] != VERSION {
        return Err(Error::Decode("unknown saved state version".into()));
    }
    let (rest, got) = sealed[head..].split_at(sealed.len() - head - TAG_LEN);
    let got: [u8; TAG_LEN] = got
        .try_into()
        .map_err(|_| Error::Decode("saved state too short".into()))?;
    // `blake3::Hash` compares in constant time.
    if tag(key, magic, address, rest) != blake3::Hash::from(got) {
        return Err(Error::Decode(
            "saved state does not authenticate (corrupt, or saved by another identity)".into(),
        ));
    }
    Ok(rest)
}

/// Appends a u32 length prefix and `bytes`.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), Error> {
    let len = u32::try_from(bytes.len()).map_err(|_| Error::Invalid("field too long".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Reads what [`put_bytes`] wrote.
#[derive(Debug)]
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or_else(|| Error::Decode("truncated".into()))?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return Err(Error::Decode("truncated".into()));
        }
        let (field, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(field)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Decode("trailing bytes".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open() {
        let key = state_key(&[7; 32]);
        let s = seal(&key, &GROUP_MAGIC, "mn1a", b"body");
        assert_eq!(open(&key, &GROUP_MAGIC, "mn1a", &s).unwrap(), b"body");
        assert!(open(&key, &MEMBER_MAGIC, "mn1a", &s).is_err());
        assert!(open(&key, &GROUP_MAGIC, "mn1b", &s).is_err());
        assert!(open(&state_key(&[8; 32]), &GROUP_MAGIC, "mn1a", &s).is_err());
        for i in 0..s.len() {
            assert!(open(&key, &GROUP_MAGIC, "mn1a", &s[..i]).is_err());
            for bit in 0..8 {
                let mut f = s.clone();
                f[i] ^= 1 << bit;
                assert!(open(&key, &GROUP_MAGIC, "mn1a", &f).is_err());
            }
        }
    }

    #[test]
    fn reader() {
        let mut out = Vec::new();
        put_bytes(&mut out, b"ab").unwrap();
        put_bytes(&mut out, b"").unwrap();
        let mut r = Reader::new(&out);
        assert_eq!(r.bytes().unwrap(), b"ab");
        assert_eq!(r.bytes().unwrap(), b"");
        r.finish().unwrap();
        let mut r = Reader::new(&out[..3]);
        assert!(r.bytes().is_err());
        let mut r = Reader::new(&[0, 0, 0, 9, 1]);
        assert!(r.bytes().is_err());
    }
}
