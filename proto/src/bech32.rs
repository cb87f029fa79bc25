//! Bech32m (BIP-350) text encoding, strict: one case only, checksum verified, padding
//! bits zero. Used only for addresses (`address` module); errors are mapped there.

const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const BECH32M_CONST: u32 = 0x2bc8_30a3;
const GENERATORS: [u32; 5] = [
    0x3b6a_57b2,
    0x2650_8e6d,
    0x1ea1_19fa,
    0x3d42_33dd,
    0x2a14_62b3,
];
const CHECKSUM_LEN: usize = 6;
/// BIP-173 limit on the whole string.
pub(crate) const MAX_LEN: usize = 90;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Error {
    TooLong,
    MixedCase,
    NoSeparator,
    /// Separator present, but fewer characters after it than the checksum alone.
    TooShort {
        chars: usize,
    },
    InvalidChar {
        position: usize,
    },
    BadChecksum,
    NonZeroPadding,
}

/// Decoded human-readable part (lowercase) and data bytes.
pub(crate) struct Decoded {
    pub(crate) hrp: String,
    pub(crate) data: Vec<u8>,
}

pub(crate) fn encode(hrp: &str, data: &[u8]) -> String {
    let values = to_base32(data);
    let checksum = create_checksum(hrp.as_bytes(), &values);
    let mut out = String::with_capacity(hrp.len() + 1 + values.len() + CHECKSUM_LEN);
    out.push_str(hrp);
    out.push('1');
    for v in values.iter().chain(checksum.iter()) {
        out.push(char::from(CHARSET[usize::from(*v)]));
    }
    out
}

pub(crate) fn decode(text: &str) -> Result<Decoded, Error> {
    if text.len() > MAX_LEN {
        return Err(Error::TooLong);
    }
    let has_lower = text.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = text.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper {
        return Err(Error::MixedCase);
    }
    if let Some(position) = text.bytes().position(|b| !(33..=126).contains(&b)) {
        return Err(Error::InvalidChar { position });
    }
    let lower = text.to_ascii_lowercase();
    let sep = lower.rfind('1').ok_or(Error::NoSeparator)?;
    if sep == 0 {
        return Err(Error::NoSeparator);
    }
    if lower.len() - sep - 1 < CHECKSUM_LEN {
        return Err(Error::TooShort { chars: lower.len() });
    }
    let hrp = &lower[..sep];
    let mut values = Vec::with_capacity(lower.len() - sep - 1);
    for (i, b) in lower.bytes().enumerate().skip(sep + 1) {
        let v = CHARSET
            .iter()
            .position(|c| *c == b)
            .ok_or(Error::InvalidChar { position: i })?;
        values.push(v as u8);
    }
    if polymod_with_hrp(hrp.as_bytes(), &values) != BECH32M_CONST {
        return Err(Error::BadChecksum);
    }
    values.truncate(values.len() - CHECKSUM_LEN);
    let data = from_base32(&values)?;
    Ok(Decoded {
        hrp: hrp.to_owned(),
        data,
    })
}

fn polymod(values: impl Iterator<Item = u8>) -> u32 {
    let mut chk: u32 = 1;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GENERATORS.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

fn hrp_expand(hrp: &[u8]) -> impl Iterator<Item = u8> + '_ {
    hrp.iter()
        .map(|b| b >> 5)
        .chain(core::iter::once(0))
        .chain(hrp.iter().map(|b| b & 31))
}

fn polymod_with_hrp(hrp: &[u8], values: &[u8]) -> u32 {
    polymod(hrp_expand(hrp).chain(values.iter().copied()))
}

fn create_checksum(hrp: &[u8], values: &[u8]) -> [u8; CHECKSUM_LEN] {
    let pm = polymod(
        hrp_expand(hrp)
            .chain(values.iter().copied())
            .chain([0u8; CHECKSUM_LEN]),
    ) ^ BECH32M_CONST;
    let mut out = [0u8; CHECKSUM_LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = ((pm >> (5 * (5 - i))) & 31) as u8;
    }
    out
}

fn to_base32(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((data.len() * 8).div_ceil(5));
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in data {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(((acc >> bits) & 31) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (5 - bits)) & 31) as u8);
    }
    out
}

fn from_base32(values: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(values.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in values {
        acc = ((acc << 5) | u32::from(*v)) & 0xfff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    // BIP-173: at most 4 padding bits, all zero.
    if bits >= 5 || (acc << (8 - bits)) & 0xff != 0 {
        return Err(Error::NonZeroPadding);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bip350_valid_vectors_have_valid_checksums() {
        for s in [
            "A1LQFN3A",
            "a1lqfn3a",
            "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
            "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
            "?1v759aa",
        ] {
            let lower = s.to_ascii_lowercase();
            let sep = lower.rfind('1').unwrap();
            let values: Vec<u8> = lower[sep + 1..]
                .bytes()
                .map(|b| CHARSET.iter().position(|c| *c == b).unwrap() as u8)
                .collect();
            assert_eq!(
                polymod_with_hrp(&lower.as_bytes()[..sep], &values),
                BECH32M_CONST,
                "{s}"
            );
        }
    }

    #[test]
    fn round_trip_and_strictness() {
        let data: Vec<u8> = (0u8..20).collect();
        let text = encode("mn", &data);
        let d = decode(&text).unwrap();
        assert_eq!((d.hrp.as_str(), d.data), ("mn", data));
        assert!(decode(&text.to_ascii_uppercase()).is_ok());
        let mut mixed = text.clone();
        mixed.replace_range(3..4, &text[3..4].to_ascii_uppercase());
        if mixed != text {
            assert_eq!(decode(&mixed).err(), Some(Error::MixedCase));
        }
    }
}
