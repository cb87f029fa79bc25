//! The slice of the Solidity ABI the registry contract needs: function selectors,
//! `uint64` and `bytes` arguments, and the `Claim(uint64,bytes)` event. Pure
//! functions; decoding is bounded and never panics on node-supplied data.

use crate::evm::keccak256;

/// Why ABI data from the node was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("ABI data is truncated")]
    Truncated,
    #[error("ABI data has a bad offset or length")]
    BadOffset,
    #[error("ABI integer does not fit 64 bits")]
    Overflow,
    #[error("ABI data has non-zero padding")]
    BadPadding,
}

/// The 4-byte selector of a function signature such as `"submit(bytes)"`.
pub fn selector(signature: &str) -> [u8; 4] {
    let h = keccak256(signature.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

/// The topic of an event signature such as `"Claim(uint64,bytes)"`.
pub fn event_topic(signature: &str) -> [u8; 32] {
    keccak256(signature.as_bytes())
}

/// One `uint256` word holding `n`.
pub fn word_u64(n: u64) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[24..].copy_from_slice(&n.to_be_bytes());
    w
}

/// Call data for a function with one `bytes` argument.
pub fn call_with_bytes(signature: &str, arg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 64 + arg.len().div_ceil(32) * 32);
    out.extend_from_slice(&selector(signature));
    out.extend_from_slice(&word_u64(32));
    out.extend_from_slice(&encode_bytes_tail(arg));
    out
}

/// Call data for a function without arguments.
pub fn call_no_args(signature: &str) -> Vec<u8> {
    selector(signature).to_vec()
}

/// A `uint64` from one 32-byte word (the value must fit).
pub fn decode_u64(word: &[u8]) -> Result<u64, Error> {
    if word.len() != 32 {
        return Err(Error::Truncated);
    }
    if word[..24].iter().any(|&b| b != 0) {
        return Err(Error::Overflow);
    }
    let mut be = [0u8; 8];
    be.copy_from_slice(&word[24..]);
    Ok(u64::from_be_bytes(be))
}

/// The single `bytes` value of ABI-encoded data (`offset ‖ length ‖ data ‖ padding`),
/// as in a `Claim` event's data. At most `max` bytes are accepted.
pub fn decode_single_bytes(data: &[u8], max: usize) -> Result<Vec<u8>, Error> {
    let offset = decode_u64(data.get(..32).ok_or(Error::Truncated)?)?;
    if offset != 32 {
        return Err(Error::BadOffset);
    }
    let len = decode_u64(data.get(32..64).ok_or(Error::Truncated)?)?;
    let len = usize::try_from(len).map_err(|_| Error::BadOffset)?;
    if len > max {
        return Err(Error::BadOffset);
    }
    let padded = len.div_ceil(32) * 32;
    if data.len() != 64 + padded {
        return Err(Error::BadOffset);
    }
    if data[64 + len..].iter().any(|&b| b != 0) {
        return Err(Error::BadPadding);
    }
    Ok(data[64..64 + len].to_vec())
}

/// `length ‖ data ‖ zero padding to 32 bytes`.
fn encode_bytes_tail(arg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + arg.len().div_ceil(32) * 32);
    out.extend_from_slice(&word_u64(arg.len() as u64));
    out.extend_from_slice(arg);
    out.resize(32 + arg.len().div_ceil(32) * 32, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_the_artifact() {
        // Values solc printed into contracts/artifacts/MetanetRegistry.json.
        assert_eq!(selector("submit(bytes)"), [0xef, 0x7f, 0xa7, 0x1b]);
        assert_eq!(selector("count()"), [0x06, 0x66, 0x1a, 0xbd]);
        assert_eq!(
            selector("transfer(address,uint256)"),
            [0xa9, 0x05, 0x9c, 0xbb]
        );
    }

    #[test]
    fn bytes_round_trip() {
        for len in [0usize, 1, 31, 32, 33, 100] {
            let arg: Vec<u8> = (0..len).map(|i| i as u8 + 1).collect();
            let call = call_with_bytes("submit(bytes)", &arg);
            assert_eq!((call.len() - 4) % 32, 0);
            assert_eq!(decode_single_bytes(&call[4..], 1024).unwrap(), arg);
            assert_eq!(
                decode_single_bytes(&call[4..], len.saturating_sub(1)).is_err(),
                len > 0
            );
        }
    }

    #[test]
    fn bad_data_is_refused() {
        let good = call_with_bytes("f(bytes)", b"abc");
        assert_eq!(decode_single_bytes(&good[4..40], 10), Err(Error::Truncated));
        let mut bad = good[4..].to_vec();
        bad[31] = 64;
        assert_eq!(decode_single_bytes(&bad, 10), Err(Error::BadOffset));
        let mut bad = good[4..].to_vec();
        bad[70] = 1;
        assert_eq!(decode_single_bytes(&bad, 10), Err(Error::BadPadding));
        let mut bad = good[4..].to_vec();
        bad[0] = 1;
        assert_eq!(decode_single_bytes(&bad, 10), Err(Error::Overflow));
    }
}
