//! Transport sessions: keys, counters, the replay window and the timer constants
//! (docs/protocol.md §6).
//!
//! A [`Keypair`] is the result of one handshake: two keys (ring) of the data cipher
//! the handshake negotiated ([`Cipher`]: ChaCha20-Poly1305, or AES-256-GCM when both
//! sides offer it),
//! our and the peer's session index, a send counter used as the explicit nonce, and a
//! [`ReplayWindow`]. The node keeps up to three keypairs per peer (previous, current,
//! next) so that rekeying never drops traffic. Sealing and opening work in place on
//! caller buffers: no allocation per packet.

use core::fmt;
use core::time::Duration;

use ring::aead::{self, LessSafeKey, Nonce, UnboundKey};

use crate::handshake::Established;
use crate::time::Instant;
use crate::wire::{self, DATA_HEADER_LEN, TAG_LEN};

/// Initiator starts a new handshake when sending on a keypair this old.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// A keypair this old is never used to send or receive.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Retransmit an unanswered initiation after this long.
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Give up a handshake attempt after this long.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Send a keepalive when we received data but sent nothing for this long.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer created by an inbound handshake whose keys have all expired is forgotten
/// this long after it was last active (docs/protocol.md §7.6): `REJECT_AFTER_TIME` × 3,
/// when WireGuard erases all key material of a session.
pub const SESSION_EXPIRY: Duration = Duration::from_secs(3 * REJECT_AFTER_TIME.as_secs());
/// Initiator rekeys after this many messages.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// Counters at or past this are never sent or accepted.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// Size of the sliding replay window in packets.
pub const WINDOW_SIZE: u64 = 2048;

const WORD_BITS: u64 = 64;
const WORDS: usize = (WINDOW_SIZE / WORD_BITS) as usize + 1;

/// Why a data message could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Open: the peer's (or an attacker's) message was seen before or is too old.
    #[error("counter was already seen or is too old for the replay window")]
    Replayed,
    /// Open: the message does not authenticate under this keypair.
    #[error("data message failed to authenticate")]
    Decrypt,
    /// Seal or open: the keypair is `REJECT_AFTER_TIME` old.
    #[error("keypair has expired")]
    Expired,
    /// Seal or open: the send counter reached `REJECT_AFTER_MESSAGES`.
    #[error("send counter exhausted")]
    CounterExhausted,
    /// Seal: the caller's buffer has no room for header, payload and tag.
    #[error("buffer too small")]
    BufferTooSmall,
    /// Seal: the AEAD refused to seal (a local failure, never the peer's doing).
    #[error("data message could not be sealed")]
    Seal,
}

pub use crate::cipher::Cipher;

/// Sliding-window replay filter (RFC 6479 bitmap): accepts each counter at most once and
/// only if it is within [`WINDOW_SIZE`] of the highest counter accepted so far.
#[derive(Clone)]
pub struct ReplayWindow {
    highest: u64,
    any: bool,
    bitmap: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            highest: 0,
            any: false,
            bitmap: [0; WORDS],
        }
    }
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("highest", &self.highest)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// Whether `counter` would be accepted (no state change: check before decrypting).
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if !self.any || counter > self.highest {
            return true;
        }
        if self.highest - counter >= WINDOW_SIZE {
            return false;
        }
        let (word, bit) = Self::position(counter);
        self.bitmap[word] & bit == 0
    }

    /// Record `counter` after it authenticated; returns false (and changes nothing) if
    /// it must be rejected.
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if !self.any || counter > self.highest {
            let current = if self.any {
                self.highest / WORD_BITS
            } else {
                0
            };
            let target = counter / WORD_BITS;
            let clear = if self.any {
                (target - current).min(WORDS as u64)
            } else {
                WORDS as u64
            };
            for i in 1..=clear {
                let w = ((current + i) % WORDS as u64) as usize;
                self.bitmap[w] = 0;
            }
            if !self.any {
                self.bitmap = [0; WORDS];
            }
            self.highest = counter;
            self.any = true;
        }
        let (word, bit) = Self::position(counter);
        self.bitmap[word] |= bit;
        true
    }

    fn position(counter: u64) -> (usize, u64) {
        (
            ((counter / WORD_BITS) % WORDS as u64) as usize,
            1u64 << (counter % WORD_BITS),
        )
    }
}

/// One handshake's transport state.
pub struct Keypair {
    send: LessSafeKey,
    recv: LessSafeKey,
    /// The data cipher of both keys.
    pub cipher: Cipher,
    /// The KEM of the handshake when it was hybrid (§5.7).
    pub pq: Option<crate::pq::Kem>,
    /// Our session index.
    pub local_index: u32,
    /// The peer's session index.
    pub remote_index: u32,
    /// Whether we initiated the handshake that made this keypair.
    pub initiator: bool,
    /// When the handshake completed.
    pub created: Instant,
    send_counter: u64,
    replay: ReplayWindow,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("cipher", &self.cipher)
            .field("created", &self.created)
            .field("send_counter", &self.send_counter)
            .finish_non_exhaustive()
    }
}

impl Keypair {
    /// Transport state from a completed handshake.
    pub fn new(est: &Established, now: Instant) -> Self {
        Keypair {
            send: key(est.cipher, &est.send_key),
            recv: key(est.cipher, &est.recv_key),
            cipher: est.cipher,
            pq: est.pq,
            local_index: est.local_index,
            remote_index: est.remote_index,
            initiator: est.initiator,
            created: now,
            send_counter: 0,
            replay: ReplayWindow::default(),
        }
    }

    /// Whether this keypair may still send or receive at `now`.
    pub fn is_usable(&self, now: Instant) -> bool {
        self.check_usable(now).is_ok()
    }

    /// Why this keypair may no longer send or receive at `now`, if it may not.
    fn check_usable(&self, now: Instant) -> Result<(), Error> {
        if self.send_counter >= REJECT_AFTER_MESSAGES {
            return Err(Error::CounterExhausted);
        }
        if now.saturating_duration_since(self.created) >= REJECT_AFTER_TIME {
            return Err(Error::Expired);
        }
        Ok(())
    }

    /// The first instant at which this keypair is no longer usable: when it is erased.
    pub fn usable_until(&self) -> Instant {
        if self.send_counter >= REJECT_AFTER_MESSAGES {
            self.created
        } else {
            self.created + REJECT_AFTER_TIME
        }
    }

    /// Whether the initiator should start a new handshake before sending on this.
    pub fn wants_rekey(&self, now: Instant) -> bool {
        self.initiator
            && (now.saturating_duration_since(self.created) >= REKEY_AFTER_TIME
                || self.send_counter >= REKEY_AFTER_MESSAGES)
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.send_counter
    }

    /// Seal a data message in place. `buf[16..16 + len]` holds the plaintext and `buf`
    /// has room for the tag; writes the header and returns the message length.
    pub fn seal(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Result<usize, Error> {
        let total = DATA_HEADER_LEN + len + TAG_LEN;
        if buf.len() < total {
            return Err(Error::BufferTooSmall);
        }
        self.check_usable(now)?;
        let counter = self.send_counter;
        self.send_counter += 1;
        wire::emit_data_header(buf, self.remote_index, counter);
        let (payload, tag_space) = buf[DATA_HEADER_LEN..total].split_at_mut(len);
        let tag = self
            .send
            .seal_in_place_separate_tag(nonce(counter), aead::Aad::empty(), payload)
            .map_err(|_| Error::Seal)?;
        tag_space.copy_from_slice(tag.as_ref());
        Ok(total)
    }

    /// Open a data message in place (`msg` is the whole message, already checked by
    /// `wire::DataPacket::new_checked`). Returns the plaintext range within `msg`.
    pub fn open(
        &mut self,
        msg: &mut [u8],
        counter: u64,
        now: Instant,
    ) -> Result<core::ops::Range<usize>, Error> {
        self.check_usable(now)?;
        if !self.replay.check(counter) {
            return Err(Error::Replayed);
        }
        let plain_len = self
            .recv
            .open_in_place(
                nonce(counter),
                aead::Aad::empty(),
                &mut msg[DATA_HEADER_LEN..],
            )
            .map_err(|_| Error::Decrypt)?
            .len();
        if !self.replay.update(counter) {
            return Err(Error::Replayed);
        }
        Ok(DATA_HEADER_LEN..DATA_HEADER_LEN + plain_len)
    }
}

fn key(cipher: Cipher, bytes: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is always valid for ChaCha20-Poly1305 and for AES-256-GCM.
    match UnboundKey::new(cipher.algorithm(), bytes) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("32-byte key for {cipher}"),
    }
}

/// Nonce: 4 zero bytes ‖ counter little-endian (docs/protocol.md §6.1).
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(now: Instant) -> Keypair {
        keypair_with(now, Cipher::ChaCha20Poly1305)
    }

    fn keypair_with(now: Instant, cipher: Cipher) -> Keypair {
        let peer = crate::Identity::generate(&[3; 64]);
        let est = Established {
            send_key: zeroize::Zeroizing::new([1; 32]),
            recv_key: zeroize::Zeroizing::new([1; 32]),
            local_index: 1,
            remote_index: 2,
            remote: crate::handshake::Remote {
                public_key: peer.public_key(),
                noise_key: peer.noise().public_key(),
            },
            initiator: true,
            cipher,
            pq: None,
        };
        Keypair::new(&est, now)
    }

    #[test]
    fn both_ciphers_round_trip_and_never_open_each_other() {
        let t0 = Instant::ZERO;
        for cipher in [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm] {
            assert_eq!(Cipher::from_choice(cipher.choice()), Some(cipher));
            let mut kp = keypair_with(t0, cipher);
            let mut other = keypair_with(
                t0,
                match cipher {
                    Cipher::ChaCha20Poly1305 => Cipher::Aes256Gcm,
                    Cipher::Aes256Gcm => Cipher::ChaCha20Poly1305,
                },
            );
            let mut buf = [0u8; DATA_HEADER_LEN + 100 + TAG_LEN];
            buf[DATA_HEADER_LEN..DATA_HEADER_LEN + 100].fill(7);
            let len = kp.seal(&mut buf, 100, t0).unwrap();
            assert_eq!(len, buf.len());
            // Same key bytes, other cipher: never opens.
            assert_eq!(other.open(&mut buf.clone(), 0, t0), Err(Error::Decrypt));
            let range = kp.open(&mut buf, 0, t0).unwrap();
            assert!(buf[range].iter().all(|&b| b == 7));
        }
        assert_eq!(Cipher::from_choice(2), None);
    }

    #[test]
    fn errors_name_what_went_wrong() {
        let t0 = Instant::ZERO;
        let mut kp = keypair(t0);
        let mut buf = [0u8; DATA_HEADER_LEN + TAG_LEN];
        assert_eq!(kp.seal(&mut buf[..20], 0, t0), Err(Error::BufferTooSmall));
        let len = kp.seal(&mut buf, 0, t0).unwrap();
        // Tampered: a decryption failure. (Same keys both ways, so it opens itself.)
        let mut bad = buf;
        bad[len - 1] ^= 1;
        assert_eq!(kp.open(&mut bad, 0, t0), Err(Error::Decrypt));
        assert_eq!(
            kp.open(&mut buf.clone(), 0, t0),
            Ok(DATA_HEADER_LEN..DATA_HEADER_LEN)
        );
        assert_eq!(kp.open(&mut buf.clone(), 0, t0), Err(Error::Replayed));
        // Too old: expired both ways, and never a decryption failure.
        let late = t0 + REJECT_AFTER_TIME;
        assert_eq!(kp.seal(&mut buf, 0, late), Err(Error::Expired));
        assert_eq!(kp.open(&mut buf.clone(), 1, late), Err(Error::Expired));
        assert_eq!(kp.usable_until(), late);
        // Out of counters: exhausted, and the keypair is unusable from now on.
        kp.send_counter = REJECT_AFTER_MESSAGES;
        assert_eq!(kp.seal(&mut buf, 0, t0), Err(Error::CounterExhausted));
        assert_eq!(
            kp.open(&mut buf.clone(), 1, t0),
            Err(Error::CounterExhausted)
        );
        assert_eq!(kp.usable_until(), t0);
    }

    #[test]
    fn window_basics() {
        let mut w = ReplayWindow::default();
        assert!(w.update(0));
        assert!(!w.update(0));
        assert!(w.update(5000));
        assert!(!w.update(5000 - WINDOW_SIZE));
        assert!(w.update(5000 - WINDOW_SIZE + 1));
        assert!(w.update(4999));
        assert!(!w.update(4999));
        assert!(!w.update(REJECT_AFTER_MESSAGES));
    }
}
