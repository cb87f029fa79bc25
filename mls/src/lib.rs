//! metanet private-group keys: MLS ([RFC 9420]) groups whose only product is one
//! 32-byte network key per epoch.
//!
//! A private group's members are identities named by their overlay address. The group's
//! admin adds and removes members with MLS commits; the chain orders those commits, and
//! every member applies them in that order. Each epoch's *network key*
//! ([`Group::network_key`]) is the MLS exporter secret with label
//! `"metanet v1 network key"` and the group id as context, so that:
//!
//! - a removed member cannot derive the keys of epochs after its removal (forward
//!   security: the removing commit carries an update path that the removed leaf cannot
//!   decrypt);
//! - a new member cannot derive the keys of epochs before it joined (backward security:
//!   the Welcome gives it the joiner secret of the new epoch only, and the key schedule
//!   is one-way).
//!
//! # Choices
//!
//! - Cipher suite: `MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519` (id 3), from the
//!   pure-Rust `mls-rs-crypto-rustcrypto` provider, which is restricted to that suite:
//!   key packages, Welcomes and commits of any other suite are refused.
//! - Credentials: MLS `BasicCredential` whose identity is the member's overlay address
//!   verbatim (printable ASCII, 1 to [`MAX_ADDRESS_LEN`] bytes; anything else is refused
//!   in key packages, Welcomes and commits). An address appears at most once in a group.
//! - Signature keys: Ed25519, derived from the identity's 32-byte seed with
//!   `blake3::derive_key("metanet v1 mls signature", seed)`, so a restart with the same
//!   seed has the same MLS signer without storing it.
//! - Every commit carries an update path (`path_required`), so each commit also
//!   refreshes the committer's own leaf (post-compromise security), and Welcomes carry
//!   the ratchet tree, so a joiner needs nothing but the Welcome.
//! - Handshake messages are MLS `PublicMessage`s: signed by the committer and tagged
//!   with the epoch's membership key, so only members can make them, but their
//!   proposals (added key packages, removed leaves) are readable by whoever sees them.
//!   No secret of any epoch is in them. The crate never makes application messages.
//! - No past epochs are kept (mls-rs is built without its `prior_epoch` feature), so a
//!   member's saved state holds the current epoch's secrets only (and, while a commit
//!   is pending, the next epoch's).
//! - [`Group::epoch_hash`] is `blake3::derive_key("metanet v1 mls epoch hash",
//!   epoch_authenticator)`; see there why the authenticator rather than the transcript
//!   hash.
//!
//! # Costs
//!
//! A commit's update path encrypts a fresh path secret to the resolution of the
//! committer's copath. When the admin is the only one who ever commits, the other
//! members' paths stay blank, that resolution is every other leaf, and a commit costs
//! O(N): about 83 bytes and one HPKE encryption per member (at N = 1000 an add or
//! remove commit is about 83 kB and takes the admin about 0.1 s on one core, while
//! applying it takes a member about 2 ms; `benches/group.rs`). The Welcome carries
//! the ratchet tree, about 180 bytes per member.
//!
//! # Errors and untrusted bytes
//!
//! Every byte string that may come from the network (key packages, Welcomes, commits)
//! and every saved state gives an [`Error`] when it is not acceptable, never a panic.
//! Saved states ([`Member::save`], [`Group::save`]) are additionally authenticated with
//! a key derived from the seed, so a corrupted or foreign state is refused before it is
//! decoded.
//!
//! [RFC 9420]: https://www.rfc-editor.org/rfc/rfc9420
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod codec;
mod config;
mod group;
mod member;

pub use group::{Applied, Commit, Group};
pub use member::{key_package_address, Member};

/// The MLS cipher suite every group of this crate uses:
/// `MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519`.
pub const CIPHER_SUITE: u16 = 3;

/// The longest address accepted as a member identity, in bytes.
pub const MAX_ADDRESS_LEN: usize = 128;

/// The MLS exporter label of [`Group::network_key`].
pub const NETWORK_KEY_LABEL: &[u8] = b"metanet v1 network key";

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes do not decode as what they should be (or, for a saved state, do not
    /// authenticate as this identity's).
    #[error("cannot decode: {0}")]
    Decode(String),
    /// We are not (or no longer) a member: a commit removed us, the group was
    /// re-initialised, or the Welcome is not for any key package of ours.
    #[error("not a member of the group")]
    NotMember,
    /// A commit that does not lead from our epoch to the next one. `have` is our current
    /// epoch, `got` the epoch the commit leads to (as [`Commit::epoch`]); a commit we can
    /// apply has `got == have + 1`.
    #[error("commit for the wrong epoch: at epoch {have}, commit leads to epoch {got}")]
    WrongEpoch {
        /// Our current epoch.
        have: u64,
        /// The epoch the commit leads to.
        got: u64,
    },
    /// The message belongs to another group.
    #[error("message is for another group")]
    WrongGroup,
    /// A member to remove is not in the group.
    #[error("no member with address {0:?}")]
    UnknownMember(String),
    /// A request this crate refuses: an unacceptable address, removing ourselves,
    /// adding a member twice, an empty group id, a key package of another cipher
    /// suite, ...
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Any other failure reported by the MLS implementation (bad signature, bad
    /// confirmation tag, expired key package, ...).
    #[error("mls: {0}")]
    Mls(String),
}

impl From<mls_rs::error::MlsError> for Error {
    fn from(e: mls_rs::error::MlsError) -> Self {
        use mls_rs::error::MlsError as M;
        match e {
            M::SerializationError(e) => Error::Decode(e.to_string()),
            M::UnsupportedCipherSuite(cs) => {
                Error::Invalid(format!("cipher suite {} is not ours", u16::from(cs)))
            }
            M::WelcomeKeyPackageNotFound => Error::NotMember,
            e => Error::Mls(e.to_string()),
        }
    }
}
