//! The `MetanetRegistry` contract on a node: deploy it from the committed artifact,
//! read its parameters, submit claims, and fetch its `Claim` events as log entries.
//!
//! The artifact (`contracts/artifacts/MetanetRegistry.json`) is compiled into this
//! crate, so a deployment always uses the bytecode `contracts/check.sh` verified, and
//! [`read_params`] refuses an address whose code is not that contract.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::abi;
use crate::claim::{RegistryId, MAX_CLAIM_LEN};
use crate::eth::{self, Block, Receipt};
use crate::evm::{decode_hex, to_0x, EvmAddress};
use crate::registry::{LogEntry, Params};
use crate::rpc::{self, Client};
use crate::tx::{FundingKey, LegacyTx, SignError};

/// The compiled contract, as committed.
pub const ARTIFACT_JSON: &str = include_str!("../../contracts/artifacts/MetanetRegistry.json");
/// Signature of the contract's only event.
pub const CLAIM_EVENT: &str = "Claim(uint64,bytes)";
/// Default `minRevealDelay` of a deployment, in blocks.
pub const DEFAULT_MIN_REVEAL_DELAY: u64 = 3;
/// Default `commitLifetime` of a deployment, in blocks (about a week of 12 s blocks).
pub const DEFAULT_COMMIT_LIFETIME: u64 = 50_400;
/// How often a wait polls the node.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Why a contract operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rpc(#[from] rpc::Error),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("no MetanetRegistry contract at {0} (its code differs from the artifact)")]
    NotARegistry(EvmAddress),
    #[error("transaction {} reverted", to_0x(.0))]
    Reverted([u8; 32]),
    #[error("transaction {} was not mined within {timeout:?}", to_0x(.hash))]
    NotMined { hash: [u8; 32], timeout: Duration },
    #[error("deployment receipt carries no contract address")]
    NoContractAddress,
    #[error("the node returned a malformed Claim event: {0}")]
    BadLog(&'static str),
    #[error("claim is {0} bytes, over the contract's {MAX_CLAIM_LEN}-byte limit")]
    ClaimTooLong(usize),
    #[error("block {0} was not reached within {1:?}")]
    BlockNotReached(u64, Duration),
}

/// The compiled contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Creation code (constructor arguments are appended).
    pub bytecode: Vec<u8>,
    /// Runtime code with the immutables zeroed.
    pub deployed_bytecode: Vec<u8>,
    /// Byte ranges of the runtime code that the constructor fills in.
    pub immutables: Vec<(usize, usize)>,
}

impl Artifact {
    /// Parse the committed artifact.
    pub fn load() -> Result<Self, &'static str> {
        let v: Value = serde_json::from_str(ARTIFACT_JSON).map_err(|_| "not JSON")?;
        let hex = |k| {
            v.get(k)
                .and_then(Value::as_str)
                .and_then(|s| decode_hex(s).ok())
                .ok_or("bytecode missing or not hex")
        };
        let mut immutables = Vec::new();
        for r in v
            .get("immutableReferences")
            .and_then(Value::as_array)
            .ok_or("immutableReferences missing")?
        {
            let field = |k| {
                r.get(k)
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or("bad immutable reference")
            };
            immutables.push((field("start")?, field("length")?));
        }
        Ok(Artifact {
            bytecode: hex("bytecode")?,
            deployed_bytecode: hex("deployedBytecode")?,
            immutables,
        })
    }

    /// Whether `code` (from `eth_getCode`) is this contract, whatever its immutables.
    pub fn matches_runtime(&self, code: &[u8]) -> bool {
        if code.len() != self.deployed_bytecode.len() {
            return false;
        }
        let mut masked = code.to_vec();
        for &(start, len) in &self.immutables {
            if let Some(range) = masked.get_mut(start..start.saturating_add(len)) {
                range.fill(0);
            } else {
                return false;
            }
        }
        masked == self.deployed_bytecode
    }
}

/// Deploy a registry with the given parameters; returns its address once mined.
pub fn deploy(
    client: &Client,
    key: &FundingKey,
    min_reveal_delay: u64,
    commit_lifetime: u64,
    timeout: Duration,
) -> Result<EvmAddress, Error> {
    let artifact =
        Artifact::load().map_err(|_| Error::BadLog("committed artifact is unreadable"))?;
    let mut init = artifact.bytecode;
    init.extend_from_slice(&abi::word_u64(min_reveal_delay));
    init.extend_from_slice(&abi::word_u64(commit_lifetime));
    let receipt = send(client, key, None, init, timeout)?;
    receipt.contract_address.ok_or(Error::NoContractAddress)
}

/// Read a deployment's parameters, after checking that its code is the registry.
pub fn read_params(client: &Client, contract: &EvmAddress) -> Result<Params, Error> {
    let artifact =
        Artifact::load().map_err(|_| Error::BadLog("committed artifact is unreadable"))?;
    let code = eth::code(client, contract, Block::Latest)?;
    if !artifact.matches_runtime(&code) {
        return Err(Error::NotARegistry(*contract));
    }
    let chain_id = eth::chain_id(client)?;
    let read = |sig| -> Result<u64, Error> {
        let out = eth::call(client, contract, &abi::call_no_args(sig), Block::Latest)?;
        abi::decode_u64(&out).map_err(|_| Error::NotARegistry(*contract))
    };
    Ok(Params {
        registry: RegistryId {
            chain_id,
            contract: *contract,
        },
        min_reveal_delay: read("minRevealDelay()")?,
        commit_lifetime: read("commitLifetime()")?,
    })
}

/// The contract's claim count at `block`.
pub fn count(client: &Client, contract: &EvmAddress, block: Block) -> Result<u64, Error> {
    let out = eth::call(client, contract, &abi::call_no_args("count()"), block)?;
    abi::decode_u64(&out).map_err(|_| Error::NotARegistry(*contract))
}

/// The `Claim` events of blocks `from..=to`, in log order.
pub fn fetch_log(
    client: &Client,
    contract: &EvmAddress,
    from: u64,
    to: u64,
) -> Result<Vec<LogEntry>, Error> {
    let topic = abi::event_topic(CLAIM_EVENT);
    let mut logs = eth::logs(client, contract, &topic, from, to)?;
    logs.retain(|l| !l.removed);
    logs.sort_by_key(|l| (l.block_number, l.log_index));
    logs.into_iter()
        .map(|l| {
            if l.address != *contract || l.topics.len() != 2 || l.topics[0] != topic {
                return Err(Error::BadLog("unexpected address or topics"));
            }
            Ok(LogEntry {
                index: abi::decode_u64(&l.topics[1]).map_err(|_| Error::BadLog("bad index"))?,
                block: l.block_number,
                claim: abi::decode_single_bytes(&l.data, MAX_CLAIM_LEN)
                    .map_err(|_| Error::BadLog("bad claim data"))?,
            })
        })
        .collect()
}

/// Submit one encoded claim and wait for it to be mined; returns the receipt (whose
/// block number is the claim's block).
pub fn submit(
    client: &Client,
    key: &FundingKey,
    contract: &EvmAddress,
    claim: &[u8],
    timeout: Duration,
) -> Result<Receipt, Error> {
    if claim.len() > MAX_CLAIM_LEN {
        return Err(Error::ClaimTooLong(claim.len()));
    }
    send(
        client,
        key,
        Some(*contract),
        abi::call_with_bytes("submit(bytes)", claim),
        timeout,
    )
}

/// Wait until the node's latest block is at least `block`.
pub fn wait_for_block(client: &Client, block: u64, timeout: Duration) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        if eth::block_number(client)? >= block {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Error::BlockNotReached(block, timeout));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Sign and send a transaction from `key`, then wait for its receipt.
fn send(
    client: &Client,
    key: &FundingKey,
    to: Option<EvmAddress>,
    data: Vec<u8>,
    timeout: Duration,
) -> Result<Receipt, Error> {
    let chain_id = eth::chain_id(client)?;
    let from = key.address();
    let nonce = eth::transaction_count(client, &from, Block::Pending)?;
    let estimate = eth::estimate_gas(client, &from, to.as_ref(), &data)?;
    let tx = LegacyTx {
        nonce,
        gas_price: eth::gas_price(client)?,
        // Estimates can be tight when state changes between estimate and inclusion.
        gas: estimate + estimate / 4 + 10_000,
        to,
        value: 0,
        data,
    };
    let hash = eth::send_raw_transaction(client, &tx.sign(key, chain_id)?)?;
    let start = Instant::now();
    loop {
        if let Some(r) = eth::transaction_receipt(client, &hash)? {
            return if r.success {
                Ok(r)
            } else {
                Err(Error::Reverted(hash))
            };
        }
        if start.elapsed() >= timeout {
            return Err(Error::NotMined { hash, timeout });
        }
        thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_artifact_parses_and_matches_itself() {
        let a = Artifact::load().unwrap();
        assert!(!a.bytecode.is_empty());
        assert_eq!(a.immutables.len(), 2);
        let mut code = a.deployed_bytecode.clone();
        let (start, _) = a.immutables[0];
        code[start + 31] = 3;
        assert!(a.matches_runtime(&code));
        code[0] ^= 1;
        assert!(!a.matches_runtime(&code));
        assert!(!a.matches_runtime(&[]));
    }

    #[test]
    fn selectors_agree_with_the_artifact() {
        let v: Value = serde_json::from_str(ARTIFACT_JSON).unwrap();
        let ids = v["methodIdentifiers"].as_object().unwrap();
        for (sig, sel) in ids {
            assert_eq!(
                crate::evm::to_hex(&abi::selector(sig)),
                sel.as_str().unwrap()
            );
        }
        assert!(ids.contains_key("submit(bytes)"));
        assert!(ids.contains_key("count()"));
    }
}
