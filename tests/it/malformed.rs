//! Malformed input: random and mutated packets over UDP and TCP never crash
//! or stall the server; crafted malformed queries get FORMERR or nothing;
//! valid queries keep getting right answers throughout.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::dnsclient::{Query, answer_addrs};
use crate::harness::{TestServer, repo};

fn valid_query() -> Vec<u8> {
    Query::new("www.yingzi.com", 1).packet(0x7777)
}

/// Packets that are malformed in a known way, each with the answers allowed.
fn crafted() -> Vec<(&'static str, Vec<u8>)> {
    let q = valid_query();
    let mut out = Vec::new();
    for n in 0..12 {
        out.push(("short header", q[..n].to_vec()));
    }
    let mut p = q.clone();
    p[12] = 70; // label longer than 63
    out.push(("bad label length", p));
    let mut p = q[..12].to_vec();
    p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // pointer to itself
    out.push(("compression loop", p));
    let mut p = q.clone();
    p[4] = 0xff; // absurd question count
    out.push(("absurd qdcount", p));
    let mut p = q.clone();
    p[6] = 0xff; // absurd answer count
    out.push(("absurd ancount", p));
    let mut p = q.clone();
    p[10] = 0xff; // absurd additional count
    out.push(("absurd arcount", p));
    let mut p = q.clone();
    p.truncate(p.len() - 3); // cut inside the OPT record
    out.push(("truncated OPT", p));
    let mut p = q.clone();
    p.extend_from_slice(&[1, 2, 3]);
    out.push(("trailing garbage", p));
    let mut p = q[..12].to_vec();
    for _ in 0..130 {
        p.extend_from_slice(&[1, b'a']);
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    out.push(("name over 255 bytes", p));
    out
}

fn check_udp_answer(what: &str, sent: &[u8], resp: &[u8], strict: bool) {
    assert!(resp.len() >= 12, "{what}: answer shorter than a header");
    assert_eq!(resp[..2], sent[..2], "{what}: id not echoed");
    assert!(resp[2] & 0x80 != 0, "{what}: QR not set");
    if strict {
        assert_eq!(
            resp[3] & 0xf,
            1,
            "{what}: expected FORMERR, got rcode {}",
            resp[3] & 0xf
        );
    } else {
        hickory_proto::op::Message::from_vec(resp)
            .unwrap_or_else(|e| panic!("{what}: unparsable answer: {e}"));
    }
}

fn assert_still_answers(server: &TestServer) {
    let r = Query::new("www.yingzi.com", 1)
        .send(server.dns)
        .expect("valid query must still be answered");
    assert_eq!(answer_addrs(&r), vec!["192.0.2.80"]);
}

#[test]
fn malformed_packets_never_crash_or_stall() {
    let repo = repo();
    let mut server = TestServer::start(&repo.join("zones"), &repo.join("deploy/state.yaml"), &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let dns = server.dns;
    let exchange = |p: &[u8]| -> Option<Vec<u8>> {
        let mut buf = [0u8; 65535];
        sock.send_to(p, dns).unwrap();
        // Skip late answers to earlier packets.
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) if n >= 2 && p.len() >= 2 && buf[..2] != p[..2] => continue,
                Ok((n, _)) => return Some(buf[..n].to_vec()),
                Err(_) => return None,
            }
        }
    };
    for (what, p) in crafted() {
        if let Some(r) = exchange(&p) {
            assert!(p.len() >= 12, "{what}: a runt packet got an answer");
            check_udp_answer(what, &p, &r, true);
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let base = valid_query();
    let mut answered = 0;
    for i in 0..8_000u32 {
        let p: Vec<u8> = if i % 2 == 0 {
            let len = rng.random_range(0..600);
            (0..len).map(|_| rng.random()).collect()
        } else {
            let mut p = base.clone();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..p.len());
                p[at] = rng.random();
            }
            if rng.random_bool(0.2) {
                p.truncate(rng.random_range(0..p.len()));
            }
            p
        };
        // Do not wait for answers to most packets: keep the pressure on.
        sock.send_to(&p, server.dns).unwrap();
        if i % 100 == 0 {
            let mut buf = [0u8; 65535];
            while let Ok(Some(_)) = sock
                .set_nonblocking(true)
                .map(|_| sock.recv_from(&mut buf).ok())
            {}
            sock.set_nonblocking(false).unwrap();
            if let Some(r) = exchange(&p) {
                answered += 1;
                check_udp_answer("random", &p, &r, false);
            }
        }
        if i % 1000 == 0 {
            assert_still_answers(&server);
        }
    }
    // TCP: frames of random bytes, a bad length prefix, and a half frame.
    let mut rng2 = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..2_000u32 {
        let mut s = TcpStream::connect(server.dns).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let len = rng2.random_range(0..300usize);
        let mut body: Vec<u8> = (0..len).map(|_| rng2.random()).collect();
        if i % 3 == 0 && len > 2 {
            let mut p = base.clone();
            let at = rng2.random_range(0..p.len());
            p[at] = rng2.random();
            body = p;
        }
        let declared = if i % 50 == 0 {
            body.len() + 100
        } else {
            body.len()
        };
        let mut framed = (declared as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        let _ = s.write_all(&framed);
        if declared == body.len() && i % 20 == 0 {
            let mut lenb = [0u8; 2];
            if s.read_exact(&mut lenb).is_ok() {
                let mut r = vec![0u8; u16::from_be_bytes(lenb) as usize];
                s.read_exact(&mut r).unwrap();
                check_udp_answer("tcp random", &body, &r, false);
            }
        }
    }
    assert!(server.alive(), "server died");
    assert_still_answers(&server);
    // A TCP query still works after all that.
    let mut q = Query::new("www.yingzi.com", 1);
    q.tcp = true;
    assert_eq!(
        answer_addrs(&q.send(server.dns).unwrap()),
        vec!["192.0.2.80"]
    );
    eprintln!("{answered} sampled random packets got answers");
}
