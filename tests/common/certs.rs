//! Certificates made at test time: a CA, and server certificates for `localhost` and `127.0.0.1`
//! that it signs (ECDSA P-256, rcgen's default). Shared by the unit tests (`conn::tls`), the
//! integration tests and `examples/tls_certs.rs`, which writes them to files for the scripts.

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};

/// A certificate authority that exists only for one test run.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

/// A server certificate and its private key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// A new CA with a fresh key, named `name` (its Common Name).
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self { cert, key }
    }

    /// The CA's certificate, PEM: what a client trusts.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `localhost` and `127.0.0.1` with a fresh key, Common Name `name`.
    pub fn issue(&self, name: &str) -> Issued {
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let mut params = CertificateParams::new(sans).expect("server parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("server certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}
