//! The `eth_*` calls the registry needs, typed. Every value from the node is checked
//! (hex, lengths, ranges) before use; a malformed answer is [`rpc::Error::BadResponse`].

use serde_json::{json, Value};

use crate::evm::{decode_hex, parse_quantity, quantity, to_0x, EvmAddress};
use crate::rpc::{self, Client};

/// A block to read state at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The latest block.
    Latest,
    /// Including pending transactions (for nonces).
    Pending,
    /// A block number.
    Number(u64),
}

impl Block {
    fn param(self) -> Value {
        match self {
            Block::Latest => json!("latest"),
            Block::Pending => json!("pending"),
            Block::Number(n) => json!(quantity(n)),
        }
    }
}

/// One log entry from `eth_getLogs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// Emitting contract.
    pub address: EvmAddress,
    /// Indexed topics; topic 0 is the event signature.
    pub topics: Vec<[u8; 32]>,
    /// Non-indexed data.
    pub data: Vec<u8>,
    /// Block number.
    pub block_number: u64,
    /// Hash of that block.
    pub block_hash: [u8; 32],
    /// Position in the block.
    pub log_index: u64,
    /// True when a reorganization removed the log.
    pub removed: bool,
}

/// A mined transaction's receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// True if it succeeded, false if it reverted.
    pub success: bool,
    /// The block that holds it.
    pub block_number: u64,
    /// The created contract, for a deployment.
    pub contract_address: Option<EvmAddress>,
    /// Gas used.
    pub gas_used: u64,
}

/// `eth_chainId`.
pub fn chain_id(c: &Client) -> Result<u64, rpc::Error> {
    quantity_of("eth_chainId", &c.call("eth_chainId", json!([]))?)
}

/// `eth_blockNumber`.
pub fn block_number(c: &Client) -> Result<u64, rpc::Error> {
    quantity_of("eth_blockNumber", &c.call("eth_blockNumber", json!([]))?)
}

/// The hash of block `number`, `None` if the node does not have it.
pub fn block_hash(c: &Client, number: u64) -> Result<Option<[u8; 32]>, rpc::Error> {
    const M: &str = "eth_getBlockByNumber";
    let v = c.call(M, json!([quantity(number), false]))?;
    if v.is_null() {
        return Ok(None);
    }
    hash_of(M, v.get("hash")).map(Some)
}

/// `eth_call` of `data` on `to` at `block`.
pub fn call(c: &Client, to: &EvmAddress, data: &[u8], block: Block) -> Result<Vec<u8>, rpc::Error> {
    const M: &str = "eth_call";
    let v = c.call(
        M,
        json!([{"to": to.to_string(), "data": to_0x(data)}, block.param()]),
    )?;
    bytes_of(M, Some(&v))
}

/// `eth_getCode`.
pub fn code(c: &Client, address: &EvmAddress, block: Block) -> Result<Vec<u8>, rpc::Error> {
    const M: &str = "eth_getCode";
    let v = c.call(M, json!([address.to_string(), block.param()]))?;
    bytes_of(M, Some(&v))
}

/// `eth_getLogs` of `address` with topic 0 = `topic0`, blocks `from..=to`.
pub fn logs(
    c: &Client,
    address: &EvmAddress,
    topic0: &[u8; 32],
    from: u64,
    to: u64,
) -> Result<Vec<Log>, rpc::Error> {
    const M: &str = "eth_getLogs";
    let v = c.call(
        M,
        json!([{
            "address": address.to_string(),
            "topics": [to_0x(topic0)],
            "fromBlock": quantity(from),
            "toBlock": quantity(to),
        }]),
    )?;
    let bad = |reason| rpc::Error::BadResponse { method: M, reason };
    let items = v.as_array().ok_or(bad("not a list"))?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let address = str_of(M, item.get("address"))?
            .parse()
            .map_err(|_| bad("bad log address"))?;
        let topics = item
            .get("topics")
            .and_then(Value::as_array)
            .ok_or(bad("log without topics"))?
            .iter()
            .map(|t| hash_of(M, Some(t)))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Log {
            address,
            topics,
            data: bytes_of(M, item.get("data"))?,
            block_number: quantity_of(M, item.get("blockNumber").unwrap_or(&Value::Null))?,
            block_hash: hash_of(M, item.get("blockHash"))?,
            log_index: quantity_of(M, item.get("logIndex").unwrap_or(&Value::Null))?,
            removed: item
                .get("removed")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        });
    }
    Ok(out)
}

/// `eth_gasPrice`, in wei.
pub fn gas_price(c: &Client) -> Result<u128, rpc::Error> {
    const M: &str = "eth_gasPrice";
    let v = c.call(M, json!([]))?;
    let s = str_of(M, Some(&v))?;
    let digits = s.strip_prefix("0x").ok_or(rpc::Error::BadResponse {
        method: M,
        reason: "not a quantity",
    })?;
    u128::from_str_radix(digits, 16).map_err(|_| rpc::Error::BadResponse {
        method: M,
        reason: "not a quantity",
    })
}

/// `eth_estimateGas` for a call or (with `to` = `None`) a deployment.
pub fn estimate_gas(
    c: &Client,
    from: &EvmAddress,
    to: Option<&EvmAddress>,
    data: &[u8],
) -> Result<u64, rpc::Error> {
    const M: &str = "eth_estimateGas";
    let mut tx = json!({"from": from.to_string(), "data": to_0x(data)});
    if let Some(to) = to {
        tx["to"] = json!(to.to_string());
    }
    quantity_of(M, &c.call(M, json!([tx]))?)
}

/// `eth_getTransactionCount`: the next nonce of `address`.
pub fn transaction_count(
    c: &Client,
    address: &EvmAddress,
    block: Block,
) -> Result<u64, rpc::Error> {
    const M: &str = "eth_getTransactionCount";
    quantity_of(M, &c.call(M, json!([address.to_string(), block.param()]))?)
}

/// `eth_sendRawTransaction`; returns the transaction hash.
pub fn send_raw_transaction(c: &Client, raw: &[u8]) -> Result<[u8; 32], rpc::Error> {
    const M: &str = "eth_sendRawTransaction";
    let v = c.call(M, json!([to_0x(raw)]))?;
    hash_of(M, Some(&v))
}

/// `eth_getTransactionReceipt`; `None` while the transaction is not mined.
pub fn transaction_receipt(c: &Client, hash: &[u8; 32]) -> Result<Option<Receipt>, rpc::Error> {
    const M: &str = "eth_getTransactionReceipt";
    let v = c.call(M, json!([to_0x(hash)]))?;
    if v.is_null() {
        return Ok(None);
    }
    let bad = |reason| rpc::Error::BadResponse { method: M, reason };
    let contract_address = match v.get("contractAddress") {
        None | Some(Value::Null) => None,
        Some(a) => Some(
            str_of(M, Some(a))?
                .parse()
                .map_err(|_| bad("bad contract address"))?,
        ),
    };
    Ok(Some(Receipt {
        success: quantity_of(M, v.get("status").unwrap_or(&Value::Null))? == 1,
        block_number: quantity_of(M, v.get("blockNumber").unwrap_or(&Value::Null))?,
        contract_address,
        gas_used: quantity_of(M, v.get("gasUsed").unwrap_or(&Value::Null))?,
    }))
}

fn str_of<'a>(method: &'static str, v: Option<&'a Value>) -> Result<&'a str, rpc::Error> {
    v.and_then(Value::as_str).ok_or(rpc::Error::BadResponse {
        method,
        reason: "expected a string",
    })
}

fn quantity_of(method: &'static str, v: &Value) -> Result<u64, rpc::Error> {
    parse_quantity(str_of(method, Some(v))?).map_err(|_| rpc::Error::BadResponse {
        method,
        reason: "not a 64-bit quantity",
    })
}

fn bytes_of(method: &'static str, v: Option<&Value>) -> Result<Vec<u8>, rpc::Error> {
    decode_hex(str_of(method, v)?).map_err(|_| rpc::Error::BadResponse {
        method,
        reason: "not hex data",
    })
}

fn hash_of(method: &'static str, v: Option<&Value>) -> Result<[u8; 32], rpc::Error> {
    let bytes = bytes_of(method, v)?;
    bytes.try_into().map_err(|_| rpc::Error::BadResponse {
        method,
        reason: "not a 32-byte hash",
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn block_params() {
        assert_eq!(super::Block::Number(16).param(), "0x10");
        assert_eq!(super::Block::Latest.param(), "latest");
    }
}
