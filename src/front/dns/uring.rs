//! The UDP answering loop on io_uring (`--udp-io uring`): one multishot
//! receive per socket fills buffers from a ring the kernel takes them from,
//! and one `io_uring_enter` both sends the answers of the last wake-up and
//! waits for the next queries. At moderate rates, where each wake-up holds
//! one query, that is one system call per query instead of two (a blocking
//! `recvmmsg`, then `sendmsg`), and a burst is read whole without a
//! `recvmmsg` that asks for more than one and finds nothing.
//!
//! Answering itself ([`Answerer`]: the answer cache, rate limiting, the
//! tallies) is the batch loop's; only the way datagrams come and go differs.

// Ring plumbing: buffer ids, lengths and counts the kernel returns (checked
// non-negative) are cast at the boundary.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use io_uring::{IoUring, cqueue, opcode, types};

use super::rrl::Rrl;
use super::udp::{Answerer, source_ip};
use crate::shared::Shared;

/// Receive buffers the kernel may fill before we hand them back.
const BUFFERS: u16 = 256;
/// One receive buffer: the kernel's header, the source address, a datagram
/// of up to 4096 bytes (as the batch loop reads).
const BUFFER: usize = 16 + size_of::<libc::sockaddr_storage>() + 4096;
/// Answers that may be in flight at once.
const SENDS: usize = 128;
/// Submission queue entries: every send of a wake-up, and the re-armed
/// receive.
const ENTRIES: u32 = 256;
/// The buffer group of the receive buffers.
const GROUP: u16 = 0;
/// A `user_data` bit that marks a send (its low bits are the send slot).
const SEND: u64 = 1 << 32;

/// One answer on its way: the bytes, the address and the header the kernel
/// reads until the send completes.
struct Outgoing {
    out: Vec<u8>,
    addr: libc::sockaddr_storage,
    iov: libc::iovec,
    hdr: libc::msghdr,
}

/// The receive buffers and the ring of their descriptors the kernel takes
/// them from (`io_uring_register_buf_ring`).
struct Buffers {
    /// `BUFFERS` descriptors, page-aligned (mmap), shared with the kernel.
    ring: *mut types::BufRingEntry,
    /// `BUFFERS` × `BUFFER` bytes.
    data: Vec<u8>,
    /// Our copy of the ring's tail: descriptors up to it are the kernel's.
    tail: u16,
}

impl Buffers {
    fn new() -> io::Result<Buffers> {
        let len = usize::from(BUFFERS) * size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping; checked below.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut b = Buffers {
            ring: ring.cast(),
            data: vec![0; usize::from(BUFFERS) * BUFFER],
            tail: 0,
        };
        for bid in 0..BUFFERS {
            b.give_back(bid);
        }
        b.publish();
        Ok(b)
    }

    /// The bytes of buffer `bid`.
    fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * BUFFER;
        &self.data[start..start + len.min(BUFFER)]
    }

    /// Puts buffer `bid` back in the ring (seen by the kernel once
    /// [`Buffers::publish`]ed).
    fn give_back(&mut self, bid: u16) {
        let addr = self.data[usize::from(bid) * BUFFER..].as_ptr() as u64;
        // SAFETY: the index is masked into the mapping; `BufRingEntry` is a
        // plain C struct of the kernel's layout.
        let e = unsafe { &mut *self.ring.add(usize::from(self.tail & (BUFFERS - 1))) };
        e.set_addr(addr);
        e.set_len(BUFFER as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given back visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail lives in the ring's first descriptor (the
        // kernel's layout), which the mapping holds and keeps aligned.
        let tail = unsafe { &*types::BufRingEntry::tail(self.ring).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        let len = usize::from(BUFFERS) * size_of::<types::BufRingEntry>();
        // SAFETY: the mapping made in `new`, of this length; the ring that
        // used it is dropped before (field order in `Loop`).
        unsafe { libc::munmap(self.ring.cast(), len) };
    }
}

/// A ring ready to run on one socket: made on the thread that runs it (a
/// single-issuer ring belongs to its thread).
pub(super) struct Loop {
    ring: IoUring,
    /// Read by the kernel when the multishot receive is armed.
    recv_hdr: Box<libc::msghdr>,
    out: Box<[Outgoing]>,
    free: Vec<usize>,
    buffers: Buffers,
}

impl Loop {
    /// Sets up the ring and its receive buffers; an error means this kernel
    /// (or a seccomp filter) does not allow it.
    pub(super) fn new() -> io::Result<Loop> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(ENTRIES * 4)
            .build(ENTRIES)?;
        let buffers = Buffers::new()?;
        // SAFETY: the ring of descriptors lives in `buffers`, which lives as
        // long as the ring (both in the returned `Loop`).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buffers.ring as u64,
                BUFFERS,
                GROUP,
                0,
            )?;
        }
        // SAFETY: all-zero is a valid value of these plain C structs; each
        // pointer is set before the kernel reads it.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { zeroed() });
        recv_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
        let out = (0..SENDS)
            .map(|_| Outgoing {
                out: Vec::with_capacity(1232),
                addr: unsafe { zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                hdr: unsafe { zeroed() },
            })
            .collect();
        Ok(Loop {
            ring,
            recv_hdr,
            out,
            free: (0..SENDS).rev().collect(),
            buffers,
        })
    }

    /// Answers on `sock` until `stop` is set (checked at least every
    /// 100 ms).
    pub(super) fn run(
        mut self,
        sock: &UdpSocket,
        shared: &Shared,
        rrl: Option<&Rrl>,
        stop: &AtomicBool,
    ) {
        let fd = types::Fd(sock.as_raw_fd());
        let mut cache = shared.snapshot_cache();
        let mut a = Answerer::new(shared, rrl);
        let recv = opcode::RecvMsgMulti::new(fd, &raw const *self.recv_hdr, GROUP)
            .build()
            .user_data(0);
        let mut armed = false;
        let wait = types::Timespec::new().nsec(100_000_000);
        let args = types::SubmitArgs::new().timespec(&wait);
        while !stop.load(Ordering::Relaxed) {
            let (submitter, mut sq, mut cq) = self.ring.split();
            if !armed {
                // SAFETY: the header lives in `self` as long as the ring.
                if unsafe { sq.push(&recv) }.is_ok() {
                    armed = true;
                }
                sq.sync();
            }
            // Sends queued by the last wake-up go with this wait.
            match submitter.submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(e) => {
                    tracing::error!(error = %e, "io_uring wait failed; this DNS worker stops");
                    return;
                }
            }
            cq.sync();
            let arrived = std::time::Instant::now();
            let snap = cache.load();
            let mut sent = 0;
            for cqe in &mut cq {
                let data = cqe.user_data();
                if data & SEND != 0 {
                    // A send done (or failed: the answer is dropped, as
                    // sendmmsg's are): its slot is free again.
                    self.free.push((data & !SEND) as usize);
                    continue;
                }
                if !cqueue::more(cqe.flags()) {
                    armed = false;
                }
                let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                    continue; // No buffer (ENOBUFS) or an error: re-armed below.
                };
                let len = cqe.result();
                if len >= 0
                    && let Some(slot) = self.free.last().copied()
                    && let Ok(msg) = types::RecvMsgOut::parse(
                        self.buffers.get(bid, len as usize),
                        &self.recv_hdr,
                    )
                {
                    let o = &mut self.out[slot];
                    let name = msg.name_data();
                    let n = name.len().min(size_of::<libc::sockaddr_storage>());
                    // SAFETY: at most the storage's size, from the kernel's
                    // copy of the sender's address.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            name.as_ptr(),
                            (&raw mut o.addr).cast::<u8>(),
                            n,
                        );
                    }
                    if let Some(src) = source_ip(&o.addr)
                        && a.answer(snap, msg.payload_data(), src, &mut o.out)
                    {
                        o.iov = libc::iovec {
                            iov_base: o.out.as_mut_ptr().cast(),
                            iov_len: o.out.len(),
                        };
                        o.hdr.msg_iov = &raw mut o.iov;
                        o.hdr.msg_iovlen = 1;
                        o.hdr.msg_name = (&raw mut o.addr).cast();
                        o.hdr.msg_namelen = n as u32;
                        let send = opcode::SendMsg::new(fd, &raw const o.hdr)
                            .build()
                            .user_data(SEND | slot as u64);
                        // SAFETY: the slot is not reused until its send
                        // completes (it leaves `free` until then). A full
                        // queue is submitted first.
                        let pushed = unsafe { sq.push(&send) }.is_ok() || {
                            sq.sync();
                            let _ = submitter.submit();
                            sq.sync();
                            unsafe { sq.push(&send) }.is_ok()
                        };
                        if pushed {
                            self.free.pop();
                            sent += 1;
                        }
                    }
                }
                self.buffers.give_back(bid);
            }
            self.buffers.publish();
            sq.sync();
            a.flush(arrived, sent);
        }
    }
}
