//! The UDP fast path: one OS thread per `SO_REUSEPORT` socket, outside the
//! async runtime, receiving and sending in batches (recvmmsg/sendmmsg; one
//! datagram with recvfrom/sendto, which copy no message headers) and
//! answering each datagram inline from a per-thread cached snapshot. No task
//! and no allocation per query.

// Socket plumbing through libc: C struct sizes (socklen_t), iovec counts
// and the counts the kernel returns (non-negative once checked) are cast
// at the FFI boundary.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::rrl::{Rrl, Verdict, truncate};
use super::{Transport, respond};
use crate::metrics::DnsTally;
use crate::shared::Shared;

/// Datagrams handled per system call.
const BATCH: usize = 64;
/// Largest datagram read.
const MAX_PACKET: usize = 4096;

/// Opens a UDP socket with `SO_REUSEPORT` bound to `addr`.
pub(crate) fn reuseport_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls; the fd is owned by the UdpSocket below.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = UdpSocket::from_raw_fd(fd);
        let one: libc::c_int = 1;
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // A larger receive buffer absorbs bursts.
        let size: libc::c_int = 4 << 20;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        );
        let (storage, len) = to_sockaddr(addr);
        if libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }
}

fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; we fill the variant we use.
    let mut s: libc::sockaddr_storage = unsafe { zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut s as *mut libc::sockaddr_storage).cast(), sin) };
            (s, size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut s as *mut libc::sockaddr_storage).cast(), sin6) };
            (s, size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

fn source_ip(s: &libc::sockaddr_storage) -> Option<IpAddr> {
    match s.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(IpAddr::V4(Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes())))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Binds `workers` sockets on `addr` (port 0: one port chosen for all).
pub(crate) fn bind(addr: SocketAddr, workers: usize) -> io::Result<Vec<UdpSocket>> {
    let first = reuseport_socket(addr)?;
    let bound = first.local_addr()?;
    let mut socks = vec![first];
    for _ in 1..workers.max(1) {
        socks.push(reuseport_socket(bound)?);
    }
    Ok(socks)
}

/// Starts one answering thread per socket. They stop within ~100 ms of
/// `stop` being set.
pub(crate) fn spawn(
    socks: Vec<UdpSocket>,
    shared: &Arc<Shared>,
    rrl: Option<&Arc<Rrl>>,
    stop: &Arc<AtomicBool>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::new();
    for (i, sock) in socks.into_iter().enumerate() {
        sock.set_read_timeout(Some(std::time::Duration::from_millis(100)))?;
        let (shared, stop, rrl) = (shared.clone(), stop.clone(), rrl.cloned());
        handles.push(
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || worker(&sock, &shared, rrl.as_deref(), &stop))?,
        );
    }
    Ok(handles)
}

/// Buffers for one batch, allocated once per thread.
struct Buffers {
    rx: Vec<[u8; MAX_PACKET]>,
    addrs: Vec<libc::sockaddr_storage>,
    rx_iov: Vec<libc::iovec>,
    rx_msgs: Vec<libc::mmsghdr>,
    tx: Vec<Vec<u8>>,
    tx_iov: Vec<libc::iovec>,
    tx_msgs: Vec<libc::mmsghdr>,
}

impl Buffers {
    fn new() -> Box<Buffers> {
        // SAFETY: all-zero is a valid value of these plain C structs (null
        // pointers, zero lengths); every pointer is set before a call uses it.
        let z = || unsafe { zeroed() };
        Box::new(Buffers {
            rx: vec![[0u8; MAX_PACKET]; BATCH],
            addrs: (0..BATCH).map(|_| z()).collect(),
            rx_iov: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            rx_msgs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            tx: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            tx_iov: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            tx_msgs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
        })
    }
}

/// What answering one datagram needs, kept per thread: the answer cache,
/// rate limiting and the tallies around [`respond`].
struct Answerer<'a> {
    shared: &'a Shared,
    rrl: Option<&'a Rrl>,
    answers: super::AnswerCache,
    use_answers: bool,
    tally: DnsTally,
}

impl<'a> Answerer<'a> {
    fn new(shared: &'a Shared, rrl: Option<&'a Rrl>) -> Answerer<'a> {
        Answerer {
            shared,
            rrl,
            answers: super::AnswerCache::default(),
            use_answers: shared.answer_cache,
            tally: DnsTally::default(),
        }
    }

    /// Answers `query` from `src` into `out` (cleared first by the
    /// responder); true when `out` is to be sent. Rate limiting, the
    /// answer cache and the tallies are applied here.
    fn answer(
        &mut self,
        snap: &crate::config::snapshot::Snapshot,
        query: &[u8],
        src: IpAddr,
        out: &mut Vec<u8>,
    ) -> bool {
        let outcome = if self.use_answers {
            self.answers.respond(snap, query, src, out)
        } else {
            respond(snap, query, src, Transport::Udp, out)
        };
        let verdict = match (&outcome, self.rrl) {
            (Some(_), Some(r)) => r.check(src, out),
            _ => Verdict::Send,
        };
        match verdict {
            Verdict::Send => {}
            Verdict::Slip => {
                truncate(out);
                self.shared.metrics.rrl_limited(true);
            }
            Verdict::Drop => {
                self.shared.metrics.rrl_limited(false);
                return false;
            }
        }
        match outcome {
            Some(o) => {
                self.tally.count(Transport::Udp, o.qtype, o.rcode);
                true
            }
            None => {
                self.tally.dropped += 1;
                false
            }
        }
    }

    /// Counts `answers` sent for a wake-up that started at `arrived`, and
    /// hands the tallies to the metrics.
    fn flush(&mut self, arrived: std::time::Instant, answers: usize) {
        if answers > 0 {
            let ns = u64::try_from(arrived.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.tally.latency.observe_n(ns, answers as u64);
        }
        self.shared.metrics.flush(&mut self.tally);
    }
}

/// One answering thread: receive a batch, answer each query from the
/// snapshot, send the batch, flush the tallies.
fn worker(sock: &UdpSocket, shared: &Shared, rrl: Option<&Rrl>, stop: &AtomicBool) {
    let fd = sock.as_raw_fd();
    let mut b = Buffers::new();
    let mut cache = shared.snapshot_cache();
    let mut a = Answerer::new(shared, rrl);
    // The receive headers point at buffers that never move (they live in
    // the box); only the address lengths the kernel overwrote need resetting.
    for i in 0..BATCH {
        b.rx_iov[i] = libc::iovec {
            iov_base: b.rx[i].as_mut_ptr().cast(),
            iov_len: MAX_PACKET,
        };
        b.rx_msgs[i].msg_hdr.msg_iov = &mut b.rx_iov[i];
        b.rx_msgs[i].msg_hdr.msg_iovlen = 1;
        b.rx_msgs[i].msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
        b.rx_msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
    }
    let mut used = 0;
    let mut probe = 0u32;
    while !stop.load(Ordering::Relaxed) {
        for m in &mut b.rx_msgs[..used] {
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
        }
        // At low rates batches hold one datagram, and recvmmsg's extra
        // non-blocking attempt after it is pure cost: ask for one then,
        // but every 16th time ask for a batch to notice a backlog.
        probe = probe.wrapping_add(1);
        let want = if used <= 1 && probe % 16 != 0 {
            1
        } else {
            BATCH as u32
        };
        let n = if want == 1 {
            // One datagram: recvfrom, without recvmmsg's message headers.
            // SAFETY: the buffer and address live in `b`.
            let r = unsafe {
                libc::recvfrom(
                    fd,
                    b.rx[0].as_mut_ptr().cast(),
                    MAX_PACKET,
                    0,
                    (&raw mut b.addrs[0]).cast(),
                    &raw mut b.rx_msgs[0].msg_hdr.msg_namelen,
                )
            };
            if r >= 0 {
                b.rx_msgs[0].msg_len = r as u32;
                1
            } else {
                r as i32
            }
        } else {
            // SAFETY: the message array points at buffers that live in `b`.
            unsafe {
                libc::recvmmsg(
                    fd,
                    b.rx_msgs.as_mut_ptr(),
                    want,
                    // c_int in glibc, c_uint in musl.
                    libc::MSG_WAITFORONE as _,
                    std::ptr::null_mut(),
                )
            }
        };
        if n <= 0 {
            used = 0;
            continue;
        }
        let n = n as usize;
        used = n;
        // One clock read per batch on each side: every answer of the batch
        // is counted with the batch's time (receive to send).
        let arrived = std::time::Instant::now();
        let snap = cache.load();
        let mut m = 0;
        for i in 0..n {
            let len = b.rx_msgs[i].msg_len as usize;
            let Some(src) = source_ip(&b.addrs[i]) else {
                continue;
            };
            if !a.answer(snap, &b.rx[i][..len], src, &mut b.tx[m]) {
                continue;
            }
            b.tx_iov[m] = libc::iovec {
                iov_base: b.tx[m].as_mut_ptr().cast(),
                iov_len: b.tx[m].len(),
            };
            b.tx_msgs[m].msg_hdr.msg_iov = &mut b.tx_iov[m];
            b.tx_msgs[m].msg_hdr.msg_iovlen = 1;
            b.tx_msgs[m].msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            b.tx_msgs[m].msg_hdr.msg_namelen = b.rx_msgs[i].msg_hdr.msg_namelen;
            m += 1;
        }
        let mut sent = 0;
        if m == 1 {
            // One answer: a plain sendto.
            // SAFETY: the header points at buffers that live in `b`.
            let h = &b.tx_msgs[0].msg_hdr;
            unsafe {
                libc::sendto(
                    fd,
                    b.tx[0].as_ptr().cast(),
                    b.tx[0].len(),
                    0,
                    h.msg_name.cast(),
                    h.msg_namelen,
                )
            };
            sent = 1;
        }
        while sent < m {
            // SAFETY: the messages point at buffers that live in `b`.
            let r =
                unsafe { libc::sendmmsg(fd, b.tx_msgs[sent..].as_mut_ptr(), (m - sent) as u32, 0) };
            if r <= 0 {
                // A full socket buffer or an unreachable peer: drop the rest.
                break;
            }
            sent += r as usize;
        }
        a.flush(arrived, m);
    }
}
