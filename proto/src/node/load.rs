//! Load accounting (docs/protocol.md §5.5): initiations and record requests are each
//! counted over a one-second window; above the threshold a message without a valid
//! cookie gets a cookie reply (or record cookie) and no expensive work, and one with a
//! valid cookie is limited per source IP.

use core::time::Duration;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::Node;
use crate::time::Instant;
use crate::wire::{self, InitiationPacket, RecordRequestPacket};

/// Width of the window over which handshake load is counted.
const LOAD_WINDOW: Duration = Duration::from_secs(1);
/// Most source addresses one load window tracks; sources beyond it wait for the next.
const MAX_SOURCES_PER_WINDOW: usize = 4096;
/// Cookie replies (or record cookies) one source IP gets per load window, at most: a
/// flood from one address then costs its `mac1` check and nothing sent back, while an
/// honest initiator, which retries every few seconds, always gets its cookie.
pub(super) const REPLIES_PER_SOURCE: u32 = 64;

/// Messages of one kind counted over the current and the previous load window.
#[derive(Debug)]
pub(super) struct LoadCounter {
    window_start: Instant,
    total: u32,
    previous_total: u32,
    per_source: BTreeMap<IpAddr, u32>,
    replies: BTreeMap<IpAddr, u32>,
}

impl LoadCounter {
    /// A counter whose first window starts at `now`.
    pub(super) fn new(now: Instant) -> Self {
        LoadCounter {
            window_start: now,
            total: 0,
            previous_total: 0,
            per_source: BTreeMap::new(),
            replies: BTreeMap::new(),
        }
    }

    /// Count one message; returns whether the node is under load.
    pub(super) fn record(&mut self, now: Instant, threshold: u32) -> bool {
        if now.saturating_duration_since(self.window_start) >= LOAD_WINDOW {
            let stale = now.saturating_duration_since(self.window_start) >= 2 * LOAD_WINDOW;
            self.previous_total = if stale { 0 } else { self.total };
            self.total = 0;
            self.per_source.clear();
            self.replies.clear();
            self.window_start = now;
        }
        self.total = self.total.saturating_add(1);
        self.total > threshold || self.previous_total > threshold
    }

    /// Per-source fixed-window limit; the map is cleared every window, and bounded by
    /// the number of messages that passed their cookie check (one per source address).
    pub(super) fn allow_source(&mut self, ip: IpAddr, rate: u32) -> bool {
        count_within(&mut self.per_source, ip, rate)
    }

    /// Whether source `ip` has used up its cookie replies in the current window (which
    /// implies the node is under load: replies are only counted then).
    pub(super) fn replies_exhausted(&self, now: Instant, ip: IpAddr) -> bool {
        now.saturating_duration_since(self.window_start) < LOAD_WINDOW
            && self
                .replies
                .get(&ip)
                .is_some_and(|n| *n >= REPLIES_PER_SOURCE)
    }

    /// Whether source `ip` may get one more cookie reply in this window (bounded like
    /// the per-source limit).
    pub(super) fn allow_reply(&mut self, ip: IpAddr) -> bool {
        count_within(&mut self.replies, ip, REPLIES_PER_SOURCE)
    }
}

/// Count one message from `ip` in a per-window map; whether it is within `limit`. The
/// map tracks at most [`MAX_SOURCES_PER_WINDOW`] sources: one beyond them is refused
/// until the next window.
fn count_within(counts: &mut BTreeMap<IpAddr, u32>, ip: IpAddr, limit: u32) -> bool {
    if counts.len() >= MAX_SOURCES_PER_WINDOW && !counts.contains_key(&ip) {
        return false;
    }
    let n = counts.entry(ip).or_insert(0);
    *n = n.saturating_add(1);
    *n <= limit
}

impl Node {
    /// Count an initiation for local identity slot `li` (mac1 already checked) and
    /// decide whether it may reach DH work. Under load one without a valid mac2 gets a
    /// cookie reply instead (§5.4), and one with it is limited per source IP.
    pub(super) fn admit_initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        li: usize,
        packet: &InitiationPacket<&[u8]>,
        msg: &[u8],
    ) -> bool {
        if !self.load.record(now, self.config.load_threshold) {
            return true;
        }
        let Some(local) = self.locals.get_mut(li).and_then(Option::as_mut) else {
            return false;
        };
        if !local.checker.check_mac2(msg, from, now) {
            if !self.load.allow_reply(from.ip()) {
                self.stats.rate_limited += 1;
                return false;
            }
            let reply = local.checker.cookie_reply(packet, from, now);
            let mut buf = vec![0u8; wire::COOKIE_REPLY_LEN];
            reply.emit(&mut buf);
            self.transmits.push_back((from, buf));
            self.stats.cookies_sent += 1;
            return false;
        }
        if !self
            .load
            .allow_source(from.ip(), self.config.per_source_rate)
        {
            self.stats.rate_limited += 1;
            return false;
        }
        true
    }

    /// Count a record request (for one of our identities) and decide whether to sign
    /// an answer. Record requests have a load window of their own (§5.5): under load,
    /// one without a valid cookie for its source gets a record cookie and nothing
    /// else, and one with a valid cookie is limited per source IP. Signing is cheap,
    /// but not free.
    pub(super) fn admit_record_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &RecordRequestPacket<&[u8]>,
    ) -> bool {
        if !self
            .record_load
            .record(now, self.config.record_load_threshold)
        {
            return true;
        }
        let valid = packet
            .cookie()
            .is_some_and(|c| self.record_cookies.check(from, &c, now));
        if !valid {
            if !self.record_load.allow_reply(from.ip()) {
                self.stats.rate_limited += 1;
                return false;
            }
            let reply = wire::RecordCookieRepr {
                nonce: packet.nonce(),
                cookie: self.record_cookies.cookie_for(from, now),
            };
            let mut buf = vec![0u8; wire::RECORD_COOKIE_LEN];
            reply.emit(&mut buf);
            self.transmits.push_back((from, buf));
            self.stats.record_cookies_sent += 1;
            return false;
        }
        if !self
            .record_load
            .allow_source(from.ip(), self.config.per_source_rate)
        {
            self.stats.rate_limited += 1;
            return false;
        }
        true
    }
}
