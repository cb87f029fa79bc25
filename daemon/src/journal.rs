//! systemd integration without libsystemd: `sd_notify` messages and journald log
//! priorities.
//!
//! Under systemd, stderr is a journal stream (`JOURNAL_STREAM` names its device and
//! inode). A line that starts with `<N>` is then logged at syslog priority `N`, so
//! `journalctl -p warning` finds warnings. [`JournalFormat`] writes that prefix and
//! leaves the timestamp to the journal.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether stderr is the journal stream systemd gave us (`JOURNAL_STREAM` is
/// `DEVICE:INODE` of it), rather than something it was redirected to since.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// The syslog priority of a tracing level (sd-daemon(3)).
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Log lines for the journal: `<priority>` then the usual line without a timestamp.
#[derive(Debug)]
pub struct JournalFormat(Format<tracing_subscriber::fmt::format::Full, ()>);

impl JournalFormat {
    /// The format.
    pub fn new() -> Self {
        JournalFormat(Format::default().without_time().with_ansi(false))
    }
}

impl Default for JournalFormat {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Send `state` (newline-separated `KEY=VALUE` lines) to the service manager, if
/// `NOTIFY_SOCKET` names one. Failures are logged once per call, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), PathBuf::from(&path))
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`, for this process when
/// `WATCHDOG_PID` is set), if any.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| std::time::Duration::from_micros(usec))
}

/// `CLOCK_MONOTONIC` in microseconds, for `RELOADING=1` (`MONOTONIC_USEC=`).
pub fn monotonic_usec() -> u64 {
    crate::sys::monotonic_usec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }

    #[test]
    fn notify_reaches_the_socket() {
        let dir = std::env::temp_dir().join(format!("mn-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // SAFETY-free: tests in this module are the only users of NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("STATUS=testing\nREADY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=testing\nREADY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
