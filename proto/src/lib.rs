//! metanet-proto: the sans-IO protocol core of metanet.
//!
//! Everything metanet puts on the wire is decided here: wallet identities and the
//! address/overlay-IPv6 derivation ([`address`], [`identity`]), signed peer records
//! ([`record`]), every message layout ([`wire`]), the Noise IK handshake with identity
//! binding and cookies ([`handshake`]), transport sessions with replay protection and
//! rekeying ([`session`]), and the endpoint state machine the daemon drives ([`node`]).
//!
//! This crate never touches a socket, a file, a thread, the clock or OS randomness.
//! Monotonic time ([`time::Instant`]), Unix time ([`time::UnixTime`]) and random seeds
//! are passed in by the caller; a `clippy.toml` forbids the alternatives. The same seed
//! and the same inputs always produce the same outputs, which is what lets the
//! deterministic simulator in `tests/sim` replay any run.
//!
//! The byte-level specification is `docs/protocol.md`; code that implements a rule
//! cites its section.
#![forbid(unsafe_code)]

pub mod address;
pub mod cipher;
pub mod control;
pub mod handshake;
pub mod identity;
pub mod ip;
pub mod keyfile;
pub mod name;
pub mod node;
pub mod pq;
pub mod record;
pub mod session;
pub mod signal;
pub mod target;
pub mod time;
pub mod wire;

mod bech32;
mod rng;

pub use address::Address;
pub use identity::{Identity, PublicKey, WalletKey};
pub use name::Name;
pub use target::Target;
pub use time::{Instant, UnixTime};
