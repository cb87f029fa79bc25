//! The ceiling of a TUN-based tunnel on this machine: two TUN devices joined by a plain
//! forwarder (no crypto, no UDP), with the same tun-rs offload and batching that
//! metanetd uses (`recv_multiple` splitting TSO super-packets, `send_multiple` merging
//! them again through a GRO table). `bench/run.sh` measures it as the `tunfwd` tunnel
//! and reports metanet's throughput as a share of it (docs/benchmarks.md).
//!
//! ```sh
//! metanet-tun-forward A_NAME B_NAME MTU
//! ```
//!
//! Creates both devices in the current network namespace and prints `ready` once they
//! exist; the caller then moves `B_NAME` into the other namespace and assigns
//! addresses (a TUN device keeps its file descriptor across a namespace move). One
//! thread per direction; runs until killed.

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use tun_rs::{AsyncDevice, DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

const OFFSET: usize = 2 * VIRTIO_NET_HDR_LEN;
const MAX_PACKET: usize = 65_535;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [a, b, mtu] = args.as_slice() else {
        anyhow::bail!("usage: tun_forward A_NAME B_NAME MTU");
    };
    let mtu: u16 = mtu.parse().context("MTU")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let open = |name: &str| {
            DeviceBuilder::new()
                .name(name)
                .mtu(mtu)
                .offload(true)
                .build_async()
                .with_context(|| format!("TUN {name}"))
        };
        let a = Arc::new(open(a)?);
        let b = Arc::new(open(b)?);
        println!("ready");
        std::io::stdout().flush()?;
        let ab = tokio::spawn(forward(a.clone(), b.clone()));
        let ba = tokio::spawn(forward(b, a));
        let (r1, r2) = tokio::try_join!(ab, ba)?;
        r1.and(r2)
    })
}

/// Everything read from `from`, written to `to`, in batches.
async fn forward(from: Arc<AsyncDevice>, to: Arc<AsyncDevice>) -> Result<()> {
    let mut orig = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET];
    let mut rbufs: Vec<Vec<u8>> = (0..IDEAL_BATCH_SIZE)
        .map(|_| vec![0; OFFSET + MAX_PACKET])
        .collect();
    let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
    // Room for a whole merged super-packet in every buffer (see daemon/src/batch.rs).
    let mut wbufs: Vec<Vec<u8>> = (0..IDEAL_BATCH_SIZE)
        .map(|_| Vec::with_capacity(2 * OFFSET + MAX_PACKET))
        .collect();
    let mut gro = GROTable::default();
    loop {
        let n = from
            .recv_multiple(&mut orig, &mut rbufs, &mut sizes, OFFSET)
            .await?;
        for ((w, r), &size) in wbufs.iter_mut().zip(&rbufs).zip(&sizes).take(n) {
            w.clear();
            w.extend_from_slice(&r[..OFFSET + size]);
        }
        // A write error (e.g. a device going down) loses this batch only.
        let _ = to.send_multiple(&mut gro, &mut wbufs[..n], OFFSET).await;
    }
}
