//! The one source of randomness in proto: a ChaCha20 stream from a caller-supplied seed.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Deterministic CSPRNG seeded by the driver (OS entropy in the daemon, a test seed in
/// the simulator).
#[derive(Debug, Clone)]
pub(crate) struct Rng(ChaCha20Rng);

impl Rng {
    pub(crate) fn from_seed(seed: [u8; 32]) -> Self {
        Rng(ChaCha20Rng::from_seed(seed))
    }

    pub(crate) fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.0.fill_bytes(&mut out);
        out
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }

    pub(crate) fn u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    /// A uniform value in `0..bound` (`bound > 0`), bias negligible for small bounds.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.0.next_u64() % bound.max(1)
    }
}
