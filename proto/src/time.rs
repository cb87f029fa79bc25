//! Time as the caller hands it in.
//!
//! [`Instant`] is a monotonic point in nanoseconds from an arbitrary origin chosen by the
//! driver (the daemon uses its start, the simulator zero). [`UnixTime`] is wall-clock time
//! in nanoseconds since the Unix epoch, used only where a value must survive a restart
//! (handshake timestamps, record expiry). Neither is ever read from the OS in this crate.

use core::ops::{Add, Sub};
use core::time::Duration;

/// A monotonic instant, in nanoseconds from the driver's origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The driver's origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// Wall-clock time in nanoseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(u64);

impl UnixTime {
    /// A Unix time from nanoseconds since the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        UnixTime(nanos)
    }

    /// A Unix time from whole seconds since the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        UnixTime(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000_000
    }
}

impl Add<Duration> for UnixTime {
    type Output = UnixTime;
    fn add(self, rhs: Duration) -> UnixTime {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        UnixTime(self.0.saturating_add(nanos))
    }
}
