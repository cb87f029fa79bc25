//! `metanet-cni`: the CNI plugin (spec 1.0.0 and 1.1.0) that attaches a container's
//! network namespace to metanetd.
//!
//! The runtime runs it once per operation: `CNI_*` variables say which operation and
//! for which container, stdin holds the network configuration, stdout gets the result
//! or the error object, the exit status is 0 or 1. Each operation is a request or two
//! on metanetd's control socket (`proto::control`): for `ADD` the plugin opens a TUN
//! and a netlink socket inside the namespace (`metanet_attach`) and hands them over;
//! the daemon makes the interface, carrying only the container's overlay /128 and the
//! `fd00::/8` route. The plugin keeps no state: the daemon's attachment list, labelled
//! with container id and network name, is what `ADD` (idempotent), `DEL`, `CHECK` and
//! `GC` work from.
#![forbid(unsafe_code)]

mod cmd;
mod daemon;
mod inspect;
mod spec;

use std::io::{Read, Write};
use std::process::ExitCode;

use spec::{code, Error};

/// Longest configuration read from stdin, in bytes.
const MAX_STDIN: u64 = 1 << 20;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = cmd::Env::from_process().and_then(|env| {
        // Without CNI_COMMAND this is someone at a terminal: say so, do not wait on stdin.
        if env.command.is_none() {
            return Err(Error::new(
                code::INVALID_ENV,
                "CNI_COMMAND is not set: metanet-cni is a CNI plugin, run by a container \
                 runtime (see packaging/metanet-cni.conflist)",
            ));
        }
        read_stdin(&mut stdin)?;
        cmd::run(&env, &stdin)
    });
    let (out, status) = match outcome {
        Ok(Some(json)) => (json, ExitCode::SUCCESS),
        Ok(None) => (Vec::new(), ExitCode::SUCCESS),
        Err(e) => (e.to_json(spec::reply_version(&stdin)), ExitCode::FAILURE),
    };
    if !out.is_empty() {
        let mut stdout = std::io::stdout().lock();
        // Nowhere left to report a failed write to.
        let _ = stdout
            .write_all(&out)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
    }
    status
}

fn read_stdin(buf: &mut Vec<u8>) -> Result<(), Error> {
    std::io::stdin()
        .lock()
        .take(MAX_STDIN + 1)
        .read_to_end(buf)
        .map_err(|e| Error::new(code::DECODE, format!("cannot read stdin: {e}")))?;
    if buf.len() as u64 > MAX_STDIN {
        buf.clear();
        return Err(Error::new(
            code::DECODE,
            format!("the network configuration is longer than {MAX_STDIN} bytes"),
        ));
    }
    Ok(())
}
