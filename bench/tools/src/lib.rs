//! Shared helpers: query encoding and batched UDP syscalls.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Encodes `name` (presentation, absolute or not) as wire labels.
pub fn wire_name(name: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        w.push(label.len() as u8);
        w.extend_from_slice(label.as_bytes());
    }
    w.push(0);
    w
}

pub fn qtype(t: &str) -> u16 {
    match t.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        "SRV" => 33,
        "ANY" => 255,
        other => other
            .strip_prefix("TYPE")
            .and_then(|d| d.parse().ok())
            .expect("known query type"),
    }
}

/// A query with EDNS (1232) and, optionally, a Client Subnet option.
pub fn query(id: u16, name: &str, t: u16, ecs: Option<[u8; 3]>) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&wire_name(name));
    p.extend_from_slice(&t.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    match ecs {
        None => p.extend_from_slice(&[0, 0]),
        Some(a) => {
            p.extend_from_slice(&11u16.to_be_bytes());
            p.extend_from_slice(&[0, 8, 0, 7, 0, 1, 24, 0, a[0], a[1], a[2]]);
        }
    }
    p
}

/// Reads a dnsperf-style query file: `name TYPE` per line.
pub fn read_queries(path: &str) -> Vec<(String, u16)> {
    std::fs::read_to_string(path)
        .expect("query file")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut it = l.split_whitespace();
            (
                it.next().unwrap().to_string(),
                qtype(it.next().unwrap_or("A")),
            )
        })
        .collect()
}

/// Batched receive: fills `bufs`, returns (count, lengths, sources).
pub struct Batch {
    pub bufs: Vec<[u8; 4096]>,
    pub lens: Vec<usize>,
    pub addrs: Vec<libc::sockaddr_storage>,
    pub addr_lens: Vec<libc::socklen_t>,
}

impl Batch {
    pub fn new(n: usize) -> Batch {
        Batch {
            bufs: vec![[0u8; 4096]; n],
            lens: vec![0; n],
            // SAFETY: sockaddr_storage is plain old data; zero is valid.
            addrs: vec![unsafe { std::mem::zeroed() }; n],
            addr_lens: vec![0; n],
        }
    }

    /// recvmmsg on `sock`; returns how many arrived (0 on timeout).
    pub fn recv(&mut self, sock: &std::net::UdpSocket) -> usize {
        let n = self.bufs.len();
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain old data.
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for i in 0..n {
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        }
        // SAFETY: the buffers outlive the call; counts match.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r <= 0 {
            return 0;
        }
        for i in 0..r as usize {
            self.lens[i] = msgs[i].msg_len as usize;
            self.addr_lens[i] = msgs[i].msg_hdr.msg_namelen;
        }
        r as usize
    }
}

/// sendmmsg of `packets` to `dst` (or to each packet's own address).
pub fn send_batch(
    sock: &std::net::UdpSocket,
    packets: &[&[u8]],
    dsts: &[*const libc::sockaddr_storage],
    dst_lens: &[libc::socklen_t],
) -> usize {
    let mut iovs: Vec<libc::iovec> = packets
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain old data.
    let mut msgs: Vec<libc::mmsghdr> = (0..packets.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for i in 0..packets.len() {
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        if !dsts.is_empty() {
            msgs[i].msg_hdr.msg_name = dsts[i] as *mut _;
            msgs[i].msg_hdr.msg_namelen = dst_lens[i];
        }
    }
    let mut sent = 0;
    while sent < packets.len() {
        // SAFETY: as above.
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                msgs[sent..].as_mut_ptr(),
                (packets.len() - sent) as u32,
                0,
            )
        };
        if r <= 0 {
            break;
        }
        sent += r as usize;
    }
    sent
}

pub fn parse_addr(s: &str) -> SocketAddr {
    s.parse().expect("address like 127.0.0.1:5353")
}

/// The value after `name` on the command line (`--server 127.0.0.1:53`).
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The `p` quantile (0 to 1) of sorted values; zero when there are none.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}
