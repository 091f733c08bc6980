//! A small DNS client for tests: builds query packets byte by byte (so tests
//! control every flag and option) and sends them over UDP or TCP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use vdh_edge::Name;

/// How to ask.
#[derive(Debug, Clone)]
pub struct Query {
    pub name: String,
    pub qtype: u16,
    pub class: u16,
    pub tcp: bool,
    /// EDNS UDP payload size; None sends no OPT record.
    pub edns: Option<u16>,
    pub do_bit: bool,
    pub rd: bool,
    /// Raw EDNS options (code, data).
    pub options: Vec<(u16, Vec<u8>)>,
}

impl Query {
    pub fn new(name: &str, qtype: u16) -> Query {
        Query {
            name: name.into(),
            qtype,
            class: 1,
            tcp: false,
            edns: Some(1232),
            do_bit: false,
            rd: false,
            options: vec![],
        }
    }

    /// The wire packet with the given id.
    pub fn packet(&self, id: u16) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&id.to_be_bytes());
        p.push(if self.rd { 1 } else { 0 });
        p.push(0);
        p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(self.edns.is_some())]);
        let n = if self.name.ends_with('.') {
            self.name.clone()
        } else {
            format!("{}.", self.name)
        };
        p.extend_from_slice(Name::parse(&n, None).expect("test names are valid").wire());
        p.extend_from_slice(&self.qtype.to_be_bytes());
        p.extend_from_slice(&self.class.to_be_bytes());
        if let Some(size) = self.edns {
            let mut rdata = Vec::new();
            for (code, data) in &self.options {
                rdata.extend_from_slice(&code.to_be_bytes());
                rdata.extend_from_slice(&(data.len() as u16).to_be_bytes());
                rdata.extend_from_slice(data);
            }
            p.push(0);
            p.extend_from_slice(&41u16.to_be_bytes());
            p.extend_from_slice(&size.to_be_bytes());
            p.extend_from_slice(&[0, 0, if self.do_bit { 0x80 } else { 0 }, 0]);
            p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            p.extend_from_slice(&rdata);
        }
        p
    }

    /// Sends the query and returns the raw response.
    pub fn send(&self, to: SocketAddr) -> std::io::Result<Vec<u8>> {
        let p = self.packet(0x4242);
        if self.tcp {
            tcp(to, &p, Duration::from_secs(3))
        } else {
            udp(to, &p, Duration::from_secs(3))
        }
    }
}

/// One UDP exchange; ignores datagrams whose id does not match.
pub fn udp(to: SocketAddr, packet: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(timeout))?;
    s.send_to(packet, to)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, _) = s.recv_from(&mut buf)?;
        if n >= 2 && buf[..2] == packet[..2] {
            return Ok(buf[..n].to_vec());
        }
    }
}

/// One TCP exchange (length-prefixed).
pub fn tcp(to: SocketAddr, packet: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&to, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    s.write_all(&framed)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// The A records in the answer section, as text.
pub fn answer_addrs(resp: &[u8]) -> Vec<String> {
    let m = hickory_proto::op::Message::from_vec(resp).expect("parse response");
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

/// The serial of the SOA in the answer section.
pub fn soa_serial(resp: &[u8]) -> Option<u32> {
    let m = hickory_proto::op::Message::from_vec(resp).ok()?;
    m.answers.iter().find_map(|r| match &r.data {
        hickory_proto::rr::RData::SOA(s) => Some(s.serial),
        _ => None,
    })
}
