//! A certificate authority made for one test, and leaf certificates for
//! 127.0.0.1 and localhost that it signs.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::harness::write_by_rename;

pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM), for clients' trust.
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "vdh-edge test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, issuer.pem()).unwrap();
        TestCa {
            issuer,
            ca_file,
            _dir: dir,
        }
    }

    /// A leaf for 127.0.0.1 and localhost named `cn`: (chain PEM, key PEM).
    pub fn leaf(&self, cn: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf for the given DNS names: (chain PEM, key PEM).
    pub fn leaf_for(&self, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(ToString::to_string).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca_file).unwrap()
    }

    /// Writes a leaf named `cn` to `cert` and `key`, each by rename.
    pub fn install(&self, cn: &str, cert: &Path, key: &Path) {
        let (c, k) = self.leaf(cn);
        write_by_rename(key, &k);
        write_by_rename(cert, &c);
    }
}

/// Runs curl; returns (exit status, stdout, stderr).
pub fn curl(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The subject CN of the certificate a TLS server at `addr` presents
/// (from `curl -v`, trusting `ca`).
pub fn served_cn(ca: &Path, url: &str) -> String {
    let (_, _, err) = curl(&[
        "-v",
        "-o",
        "/dev/null",
        "--cacert",
        ca.to_str().unwrap(),
        url,
    ]);
    let line = err
        .lines()
        .find(|l| l.contains("subject:"))
        .unwrap_or_else(|| panic!("no subject in curl -v: {err}"));
    line.split("CN=").nth(1).unwrap_or("").trim().to_string()
}
