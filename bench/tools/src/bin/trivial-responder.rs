//! The "trivial responder" of the DNS benchmark: one thread answering from a
//! table of pre-encoded responses (learned once from a real server), with
//! recvmmsg/sendmmsg. It does no DNS work per query beyond a table lookup,
//! so it marks what this machine's kernel allows.
//!
//! usage: trivial-responder --listen ADDR --learn-from ADDR --queries FILE

use std::collections::HashMap;
use std::time::Duration;

use vdh_bench_tools::*;

fn question_key(p: &[u8]) -> Option<Vec<u8>> {
    let mut i = 12;
    while i < p.len() && p[i] != 0 {
        i += 1 + p[i] as usize;
    }
    let end = i + 5;
    (end <= p.len()).then(|| p[12..end].to_ascii_lowercase())
}

fn main() {
    let get = arg;
    let listen = parse_addr(&get("--listen").expect("--listen"));
    let learn = parse_addr(&get("--learn-from").expect("--learn-from"));
    let queries = read_queries(&get("--queries").expect("--queries"));
    // Learn the answers.
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut table: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for (name, t) in &queries {
        let q = query(7, name, *t, None);
        let key = question_key(&q).unwrap();
        if table.contains_key(&key) {
            continue;
        }
        let mut buf = [0u8; 4096];
        let mut answer = None;
        for _ in 0..5 {
            client.send_to(&q, learn).unwrap();
            if let Ok((n, _)) = client.recv_from(&mut buf) {
                answer = Some(buf[..n].to_vec());
                break;
            }
        }
        table.insert(key, answer.expect("the server to learn from answers"));
    }
    eprintln!("learned {} answers", table.len());
    let sock = std::net::UdpSocket::bind(listen).unwrap();
    let mut batch = Batch::new(64);
    let mut out: Vec<Vec<u8>> = (0..64).map(|_| Vec::with_capacity(512)).collect();
    loop {
        let n = batch.recv(&sock);
        let mut m = 0;
        let mut dsts: Vec<*const libc::sockaddr_storage> = Vec::with_capacity(n);
        let mut dst_lens: Vec<libc::socklen_t> = Vec::with_capacity(n);
        for i in 0..n {
            let p = &batch.bufs[i][..batch.lens[i]];
            let Some(key) = question_key(p) else { continue };
            let Some(r) = table.get(&key) else { continue };
            let o = &mut out[m];
            o.clear();
            o.extend_from_slice(r);
            o[..2].copy_from_slice(&p[..2]);
            // Keep the asker's case in the question.
            o[12..12 + key.len()].copy_from_slice(&p[12..12 + key.len()]);
            dsts.push(&batch.addrs[i] as *const _);
            dst_lens.push(batch.addr_lens[i]);
            m += 1;
        }
        let refs: Vec<&[u8]> = out[..m].iter().map(|v| &v[..]).collect();
        send_batch(&sock, &refs, &dsts, &dst_lens);
    }
}
