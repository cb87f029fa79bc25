//! The only place in the daemon with `unsafe`: socket options std and socket2 do not
//! expose. Each block states why it is sound.

use std::io;
use std::os::fd::AsRawFd;

mod fds;
mod tun;
pub use fds::{listen_fds, notify_with_fds, recv_with_fds, Poller};
pub use tun::{namespace_of, NetnsLink, TunFd};

/// Set the socket's receive and send buffers to `bytes`, beyond `net.core.rmem_max`
/// when we hold CAP_NET_ADMIN (SO_RCVBUFFORCE); otherwise as large as the limit allows.
pub fn set_buffers_force(sock: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    let val: libc::c_int = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, force, val).is_err() {
            setsockopt_int(fd, plain, val)?;
        }
    }
    Ok(())
}

fn setsockopt_int(fd: libc::c_int, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: `fd` is an open socket owned by the caller for the duration of the call;
    // the option value points to a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&val as *const libc::c_int).cast(),
            core::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Wait until one of `fds` is readable or `timeout` passes (`None`: no limit);
/// returns a bit per fd, set if it is readable (or in error: the read will say).
pub fn wait_readable(fds: &[std::os::fd::RawFd], timeout: Option<std::time::Duration>) -> u32 {
    let mut p = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 4];
    for (slot, fd) in p.iter_mut().zip(fds) {
        slot.fd = *fd;
    }
    let n = fds.len().min(p.len());
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(t.subsec_nanos()),
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `p` is a live array of at least `n` initialised pollfd structs, `ts_ptr`
    // is null or points to a live timespec, and a null signal mask is allowed.
    let rc = unsafe { libc::ppoll(p.as_mut_ptr(), n as libc::nfds_t, ts_ptr, std::ptr::null()) };
    if rc <= 0 {
        return 0;
    }
    p[..n]
        .iter()
        .enumerate()
        .filter(|(_, x)| x.revents != 0)
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// Wait up to `timeout` until `fd` has room to write.
pub fn wait_writable(fd: std::os::fd::RawFd, timeout: std::time::Duration) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `p` is one live pollfd; poll only writes its `revents`.
    unsafe {
        libc::poll(&mut p, 1, ms);
    }
}

/// A non-blocking eventfd: one thread wakes another that waits on its fd.
#[derive(Debug)]
pub struct EventFd(std::os::fd::OwnedFd);

impl EventFd {
    pub fn new() -> std::io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(EventFd(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }

    pub fn raw(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }

    /// Wake the waiter.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd; a full counter
        // (EAGAIN) means a wake-up is pending anyway.
        unsafe {
            libc::write(self.raw(), (&one as *const u64).cast(), 8);
        }
    }

    /// Reset after a wake-up.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
        unsafe {
            libc::read(self.raw(), (&mut v as *mut u64).cast(), 8);
        }
    }
}

/// The supplementary groups of the process at the other end of a Unix stream socket,
/// as the kernel recorded them when it connected (`SO_PEERGROUPS`, Linux 4.13+).
pub fn peer_groups(sock: &impl AsRawFd) -> io::Result<Vec<u32>> {
    // A process has at most NGROUPS_MAX (65536) groups; start small, grow once on ERANGE.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = libc::socklen_t::try_from(groups.len() * core::mem::size_of::<libc::gid_t>())
            .unwrap_or(libc::socklen_t::MAX);
        // SAFETY: the fd is an open socket borrowed for the call; the buffer is live,
        // writable and `len` bytes long; the kernel writes at most `len` bytes and sets
        // `len` to what it wrote (or, with ERANGE, to what it needs).
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / core::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || n <= groups.len() || n > 65536 {
            return Err(e);
        }
        groups.resize(n, 0);
    }
    Err(io::Error::from_raw_os_error(libc::ERANGE))
}

/// Give interface `ifname` the address `ip/128` as a *deprecated* address
/// (preferred lifetime 0, valid forever, no duplicate detection). The kernel still
/// accepts traffic to it and applications may bind it, but never picks it as the source
/// of a connection that did not ask for it: a second identity's address does not leak
/// into the default identity's traffic (RFC 6724 rule 3). Replaces the address if it
/// is there already.
pub fn add_deprecated_address(ifname: &str, ip: std::net::Ipv6Addr) -> io::Result<()> {
    set_address(ifname, ip, 128, false)
}

/// Add or replace `ip/prefix` on `ifname`: preferred (a source the kernel may pick) or
/// deprecated (preferred lifetime 0, as [`add_deprecated_address`]).
pub fn set_address(
    ifname: &str,
    ip: std::net::Ipv6Addr,
    prefix: u8,
    preferred: bool,
) -> io::Result<()> {
    let name = std::ffi::CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    netlink_request(&new_address_message(index, ip, prefix, preferred))
}

/// An RTM_NEWADDR request (create or replace, acknowledged) for `ip/prefix` on interface
/// `index`, valid lifetime forever, preferred forever or (not `preferred`) 0.
fn new_address_message(index: u32, ip: std::net::Ipv6Addr, prefix: u8, preferred: bool) -> Vec<u8> {
    const IFA_F_NODAD: u8 = 0x02;
    let mut msg = vec![0u8; NLMSG_HDR];
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    msg.extend_from_slice(&[libc::AF_INET6 as u8, prefix, IFA_F_NODAD, 0]);
    msg.extend_from_slice(&index.to_ne_bytes());
    attr(&mut msg, libc::IFA_LOCAL, &ip.octets());
    attr(&mut msg, libc::IFA_ADDRESS, &ip.octets());
    // struct ifa_cacheinfo: preferred, valid, cstamp, tstamp.
    let mut cache = Vec::with_capacity(16);
    let preferred = if preferred { u32::MAX } else { 0 };
    for v in [preferred, u32::MAX, 0, 0] {
        cache.extend_from_slice(&v.to_ne_bytes());
    }
    attr(&mut msg, libc::IFA_CACHEINFO, &cache);
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
    header(&mut msg, libc::RTM_NEWADDR, flags);
    msg
}

/// Length of `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;

/// Append a netlink attribute, padded to 4 bytes.
fn attr(msg: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(data);
    msg.resize(msg.len().next_multiple_of(4), 0);
}

/// Fill in the `nlmsghdr` at the front of `msg` (length, type, flags, sequence 1).
fn header(msg: &mut [u8], kind: u16, flags: u16) {
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&kind.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
}

/// Send one rtnetlink request on a socket of our own and wait (bounded) for its
/// acknowledgement.
fn netlink_request(msg: &[u8]) -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    netlink_on(sock.as_raw_fd(), msg)
}

/// Send one rtnetlink request on netlink socket `fd` (it acts in the socket's network
/// namespace) and wait up to 2 s for its acknowledgement.
fn netlink_on(fd: libc::c_int, msg: &[u8]) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: `tv` outlives the call and the length is its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            core::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    // SAFETY: zeroed sockaddr_nl is valid; pid 0 addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { core::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `msg` and `kernel` are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            core::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 1024];
    // SAFETY: `buf` is valid for its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    ack_result(&buf[..n as usize])
}

/// The outcome an rtnetlink acknowledgement (NLMSG_ERROR) carries.
fn ack_result(reply: &[u8]) -> io::Result<()> {
    let field = |at: usize| -> Option<[u8; 4]> { reply.get(at..at + 4)?.try_into().ok() };
    let kind = reply
        .get(4..6)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .unwrap_or(0);
    match (kind, field(16)) {
        (k, Some(code)) if k == libc::NLMSG_ERROR as u16 => match i32::from_ne_bytes(code) {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(-e)),
        },
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no acknowledgement from rtnetlink",
        )),
    }
}

/// `CLOCK_MONOTONIC` in microseconds (what systemd's `MONOTONIC_USEC=` wants).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_address_message_is_well_formed() {
        let ip: std::net::Ipv6Addr = "fd12::1".parse().unwrap();
        let m = new_address_message(7, ip, 128, false);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(m.len() % 4, 0);
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(m[17], 128);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        // IFA_LOCAL first, carrying the address.
        assert_eq!(&m[28..44], &ip.octets());
        // IFA_CACHEINFO last: preferred 0 (deprecated), valid forever.
        let cache = &m[m.len() - 16..];
        assert_eq!(u32::from_ne_bytes(cache[0..4].try_into().unwrap()), 0);
        assert_eq!(
            u32::from_ne_bytes(cache[4..8].try_into().unwrap()),
            u32::MAX
        );
        let m = new_address_message(7, ip, 8, true);
        assert_eq!(m[17], 8);
        let cache = &m[m.len() - 16..];
        assert_eq!(
            u32::from_ne_bytes(cache[0..4].try_into().unwrap()),
            u32::MAX
        );
    }

    #[test]
    fn acknowledgements_decode() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        assert!(ack_result(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            ack_result(&ack).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert!(ack_result(&[1, 2]).is_err());
    }
}
