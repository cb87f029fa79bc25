//! TUN devices handed to us by descriptor (an attachment's, opened inside its network
//! namespace) and the calls that set them up there: `TUNSETIFF` and offloads on the
//! TUN, interface index, MTU, flags, address and route through the netlink socket
//! opened in the same namespace (ioctls and rtnetlink act on the socket's namespace).

use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `SIOCGSKNS`: a descriptor for the network namespace of a socket (or TUN).
const SIOCGSKNS: libc::c_ulong = 0x894C;
/// `TUNSETIFF`, `TUNGETIFF`, `TUNSETOFFLOAD` (`_IOW('T', 202, int)` and friends).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;

/// A TUN device we hold by descriptor, non-blocking, with the virtio-net header
/// (offloads) when `vnet`.
#[derive(Debug)]
pub struct TunFd {
    fd: OwnedFd,
    vnet: bool,
    name: String,
}

impl TunFd {
    /// Attach the unattached TUN descriptor `fd` as interface `name` (`IFF_TUN`,
    /// `IFF_NO_PI`, `IFF_VNET_HDR`, TCP and, where the kernel has them, UDP
    /// offloads); with `adopt`, a descriptor attached already (one kept across a
    /// restart) is taken as it is, otherwise refused. The interface appears in the
    /// namespace `fd` was opened in.
    pub fn attach(fd: OwnedFd, name: &str, adopt: bool) -> io::Result<TunFd> {
        let raw = fd.as_raw_fd();
        set_nonblocking(raw)?;
        let mut req = ifreq(name)?;
        // SAFETY: `req` is a live ifreq; TUNGETIFF writes at most its size.
        let attached = unsafe { libc::ioctl(raw, TUNGETIFF, &mut req) } == 0;
        if attached && !adopt {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the descriptor is an attached TUN or TAP already: pass an unattached /dev/net/tun",
            ));
        }
        if attached {
            // SAFETY: reading the union's flags field the kernel just filled in.
            let flags = unsafe { req.ifr_ifru.ifru_flags };
            let vnet = flags & libc::IFF_VNET_HDR as libc::c_short != 0;
            return Ok(TunFd {
                fd,
                vnet,
                name: ifname_of(&req),
            });
        }
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_flags =
            (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: `req` is a live ifreq naming the interface; TUNSETIFF reads and
        // writes within it.
        if unsafe { libc::ioctl(raw, TUNSETIFF, &mut req) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let tcp = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        let udp = libc::TUN_F_USO4 | libc::TUN_F_USO6;
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        if unsafe { libc::ioctl(raw, TUNSETOFFLOAD, (tcp | udp) as libc::c_ulong) } != 0 {
            // SAFETY: as above.
            if unsafe { libc::ioctl(raw, TUNSETOFFLOAD, tcp as libc::c_ulong) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(TunFd {
            fd,
            vnet: true,
            name: ifname_of(&req),
        })
    }

    /// The interface's name (inside its namespace).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether reads and writes carry the virtio-net header.
    pub fn vnet(&self) -> bool {
        self.vnet
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The descriptor itself (for the service manager's store).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// One read (a packet or super-packet).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// One write gathered from `iov`.
    pub fn send_vectored(&self, iov: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let count = libc::c_int::try_from(iov.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: IoSlice is ABI-compatible with iovec; `count` slices are live.
        let n = unsafe { libc::writev(self.raw(), iov.as_ptr().cast(), count) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl on a descriptor the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0 || b == b'/')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?} (1 to 15 bytes, no `/`)"),
        ));
    }
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

fn ifname_of(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The network namespace (device, inode of its nsfs file) of socket or TUN `fd`.
pub fn namespace_of(fd: RawFd) -> io::Result<(u64, u64)> {
    // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor.
    let ns = unsafe { libc::ioctl(fd, SIOCGSKNS) };
    if ns < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ns` is a fresh descriptor nothing else owns.
    let ns = unsafe { OwnedFd::from_raw_fd(ns) };
    let file = std::fs::File::from(ns);
    let meta = file.metadata()?;
    use std::os::unix::fs::MetadataExt;
    Ok((meta.dev(), meta.ino()))
}

/// An interface in the namespace of netlink socket `sock`: its index, MTU, flags,
/// address and route, set through that socket.
#[derive(Debug)]
pub struct NetnsLink<'a> {
    pub sock: &'a OwnedFd,
    pub name: &'a str,
}

impl NetnsLink<'_> {
    fn ioctl(&self, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
        // SAFETY: `req` is a live ifreq; these interface ioctls read and write within it
        // (a netlink socket falls through to the device ioctls of its namespace).
        if unsafe { libc::ioctl(self.sock.as_raw_fd(), request, req as *mut libc::ifreq) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The interface's index, or an error when it is gone.
    pub fn index(&self) -> io::Result<u32> {
        let mut req = ifreq(self.name)?;
        self.ioctl(libc::SIOCGIFINDEX, &mut req)?;
        // SAFETY: the kernel filled in the index member.
        Ok(unsafe { req.ifr_ifru.ifru_ifindex } as u32)
    }

    /// Whether the interface is up.
    pub fn is_up(&self) -> io::Result<bool> {
        let mut req = ifreq(self.name)?;
        self.ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: the kernel filled in the flags member.
        Ok(unsafe { req.ifr_ifru.ifru_flags } & libc::IFF_UP as libc::c_short != 0)
    }

    /// Set the MTU and bring the interface up.
    pub fn up(&self, mtu: u16) -> io::Result<()> {
        let mut req = ifreq(self.name)?;
        req.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
        self.ioctl(libc::SIOCSIFMTU, &mut req)?;
        let mut req = ifreq(self.name)?;
        self.ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: reading and writing the flags member the kernel filled in.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        self.ioctl(libc::SIOCSIFFLAGS, &mut req)
    }

    /// Give the interface `ip/128` (preferred, no duplicate detection) and the
    /// route `fd00::/8` through it with `ip` as its source.
    pub fn address_and_route(&self, ip: Ipv6Addr) -> io::Result<()> {
        let index = self.index()?;
        super::netlink_on(
            self.sock.as_raw_fd(),
            &super::new_address_message(index, ip, 128, true),
        )?;
        super::netlink_on(self.sock.as_raw_fd(), &route_message(index, ip))
    }
}

/// An RTM_NEWROUTE request (create or replace, acknowledged): `fd00::/8` through
/// interface `index`, preferred source `src`, main table.
fn route_message(index: u32, src: Ipv6Addr) -> Vec<u8> {
    let mut msg = vec![0u8; 16];
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    msg.extend_from_slice(&[
        libc::AF_INET6 as u8,
        8,
        0,
        0,
        libc::RT_TABLE_MAIN,
        libc::RTPROT_STATIC,
        libc::RT_SCOPE_UNIVERSE,
        libc::RTN_UNICAST,
    ]);
    msg.extend_from_slice(&0u32.to_ne_bytes());
    let mut dst = [0u8; 16];
    dst[0] = 0xfd;
    super::attr(&mut msg, libc::RTA_DST, &dst);
    super::attr(&mut msg, libc::RTA_OIF, &index.to_ne_bytes());
    super::attr(&mut msg, libc::RTA_PREFSRC, &src.octets());
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
    super::header(&mut msg, libc::RTM_NEWROUTE, flags);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_message_is_well_formed() {
        let ip: Ipv6Addr = "fd12::1".parse().unwrap();
        let m = route_message(3, ip);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), libc::RTM_NEWROUTE);
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(m[17], 8);
        // After the 16-byte header and the 12-byte rtmsg, RTA_DST first: fd00::
        assert_eq!(u16::from_ne_bytes([m[30], m[31]]), libc::RTA_DST);
        assert_eq!(m[32], 0xfd);
        assert_eq!(&m[m.len() - 16..], &ip.octets());
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-far-too-long").is_err());
        assert!(ifreq("a/b").is_err());
        assert!(ifreq("metanet0").is_ok());
    }
}
