//! metanet-chain: the chain registry of metanet (docs/protocol.md §9).
//!
//! The `MetanetRegistry` contract (`contracts/`) is an ordered log of ed25519-signed
//! claims: name commits and reveals, transfers, key rotations and revocations, and the
//! membership changes of groups (networks). The EVM cannot check ed25519, so the
//! contract only orders and emits claims; every resolver replays the log under the same
//! rules and so reaches the same state.
//!
//! The crate has two layers:
//!
//! - a **sans-IO core**: [`name`] (canonical names), [`claim`] (encoding, signing and
//!   verification of claims) and [`registry`] (the deterministic state machine that
//!   replays the log), plus the pure helpers [`evm`], [`rlp`] and [`abi`]. These never
//!   touch a socket, a file, the clock or OS randomness; salts and keys are passed in.
//! - an **IO layer** over blocking HTTP JSON-RPC: [`rpc`] (the transport), [`eth`]
//!   (the few `eth_*` calls needed), [`tx`] (legacy EIP-155 transactions signed with a
//!   secp256k1 funding key), [`contract`] (deploy from the committed artifact, read the
//!   parameters, submit claims, fetch the log) and [`follower`] (keeps a [`Registry`]
//!   in step with the chain, reports staleness when the node is down, and caches the
//!   log in a file).
//!
//! Data flows one way: the chain's `Claim` events become [`LogEntry`]s, which
//! [`Registry::apply`] turns into names, owners, key states and groups that callers
//! query.
#![forbid(unsafe_code)]

pub mod abi;
pub mod claim;
pub mod contract;
pub mod eth;
pub mod evm;
pub mod follower;
pub mod registry;
pub mod rlp;
pub mod rpc;
pub mod tx;

pub use claim::{Claim, RegistryId, SignedClaim};
pub use evm::EvmAddress;
/// Registry names live in `metanet_proto` (the control API's targets use them too).
pub use metanet_proto::name::{self, Name};
pub use registry::{
    Group, GroupChange, GroupEvent, KeyStatus, LogEntry, Outcome, Params, Registry, Resolution,
};
