//! The only place in the daemon with `unsafe`: socket options std and socket2 do not
//! expose. Each block states why it is sound.

use std::io;
use std::os::fd::AsRawFd;

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
