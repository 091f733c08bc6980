//! Micro-benchmark of the answering code alone (no sockets): the time
//! `front::dns::respond` takes per query of the benchmark mix, on the benchmark
//! zone. Run: `cargo bench --bench respond -- ZONE_DIR QUERY_FILE`
//! (inputs from `python3 bench/gen.py DIR`).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use vdh_edge::{FileSource, Transport, respond};
use vdh_edge::{Inputs, SourceKind, compile};

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let zones = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "/tmp/bw/zones".into());
    let queries = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "/tmp/bw/queries.txt".into());
    let state = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/state.yaml");
    let inputs: Inputs = FileSource {
        zones_dir: zones.into(),
        state_file: Some(state.into()),
    }
    .read(1)
    .expect("inputs");
    assert_eq!(inputs.kind, SourceKind::File);
    let snap = compile(&inputs, None, &Default::default()).expect("compiles");
    let packets: Vec<Vec<u8>> = std::fs::read_to_string(&queries)
        .expect("query file")
        .lines()
        .map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next().unwrap();
            let t = vdh_edge::type_from_str(it.next().unwrap()).unwrap();
            let mut p = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
            p.extend_from_slice(
                vdh_edge::Name::parse(&format!("{name}."), None)
                    .unwrap()
                    .wire(),
            );
            p.extend_from_slice(&t.to_be_bytes());
            p.extend_from_slice(&[0, 1, 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
            p
        })
        .collect();
    let src = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut out = Vec::with_capacity(1232);
    for round in 0..3 {
        let n: usize = std::env::var("N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000_000);
        let t = Instant::now();
        for i in 0..n {
            let p = &packets[i % packets.len()];
            black_box(respond(&snap, black_box(p), src, Transport::Udp, &mut out));
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("round {round}: {ns:.0} ns per query");
    }
}
