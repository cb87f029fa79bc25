//! The few RLP encoders a legacy transaction needs (Ethereum yellow paper, appendix B).
//! Encode only: metanet never parses RLP.

/// Append the RLP encoding of a byte string.
pub fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    match b {
        [single] if *single < 0x80 => out.push(*single),
        _ => {
            header(out, 0x80, b.len());
            out.extend_from_slice(b);
        }
    }
}

/// Append the RLP encoding of an unsigned integer: big-endian, no leading zeros, and
/// zero as the empty string.
pub fn uint(out: &mut Vec<u8>, n: u128) {
    uint_be(out, &n.to_be_bytes());
}

/// Append the RLP encoding of an unsigned integer given as big-endian bytes of any
/// width (e.g. a 256-bit signature value).
pub fn uint_be(out: &mut Vec<u8>, be: &[u8]) {
    let first = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    bytes(out, &be[first..]);
}

/// Wrap already encoded items as a list.
pub fn list(items: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() + 9);
    header(&mut out, 0xc0, items.len());
    out.extend_from_slice(items);
    out
}

/// A string (`base` 0x80) or list (`base` 0xc0) header for a payload of `len` bytes.
fn header(out: &mut Vec<u8>, base: u8, len: usize) {
    if len < 56 {
        // len < 56, so it fits the short form.
        out.push(base + len as u8);
    } else {
        let be = (len as u64).to_be_bytes();
        let first = be.iter().position(|&b| b != 0).unwrap_or(be.len() - 1);
        let len_bytes = &be[first..];
        // At most 8 length bytes.
        out.push(base + 55 + len_bytes.len() as u8);
        out.extend_from_slice(len_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc_bytes(b: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        bytes(&mut v, b);
        v
    }

    fn enc_uint(n: u128) -> Vec<u8> {
        let mut v = Vec::new();
        uint(&mut v, n);
        v
    }

    #[test]
    fn yellow_paper_examples() {
        assert_eq!(enc_bytes(b"dog"), b"\x83dog");
        assert_eq!(enc_bytes(b""), [0x80]);
        assert_eq!(enc_bytes(&[0x00]), [0x00]);
        assert_eq!(enc_bytes(&[0x0f]), [0x0f]);
        assert_eq!(enc_bytes(&[0x80]), [0x81, 0x80]);
        assert_eq!(enc_uint(0), [0x80]);
        assert_eq!(enc_uint(15), [0x0f]);
        assert_eq!(enc_uint(1024), [0x82, 0x04, 0x00]);
        let mut items = Vec::new();
        bytes(&mut items, b"cat");
        bytes(&mut items, b"dog");
        assert_eq!(list(&items), b"\xc8\x83cat\x83dog");
        assert_eq!(list(&[]), [0xc0]);
        let lorem = b"Lorem ipsum dolor sit amet, consectetur adipisicing elit";
        let mut want = vec![0xb8, 0x38];
        want.extend_from_slice(lorem);
        assert_eq!(enc_bytes(lorem), want);
        let long = vec![0u8; 1024];
        assert_eq!(&enc_bytes(&long)[..3], &[0xb9, 0x04, 0x00]);
    }
}
