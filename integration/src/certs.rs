//! The demo certificate authority: generated at start, trusted by the kubeconfig
//! and the test clients, used by Envoy to terminate TLS on both listeners.

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// PEM files written by [`DemoPki::generate`].
#[derive(Debug, Clone)]
pub struct DemoPki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl DemoPki {
    /// A fresh CA and a server certificate for `localhost` / `127.0.0.1`, in `dir`.
    pub fn generate(dir: &Path) -> Result<DemoPki> {
        std::fs::create_dir_all(dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "gatehouse demo CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "gatehouse demo gateway");
        let server_key = KeyPair::generate()?;
        let server_cert = server_params.signed_by(&server_key, &ca)?;

        let pki = DemoPki {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
        };
        std::fs::write(&pki.ca_cert, ca.pem())?;
        std::fs::write(&pki.server_cert, server_cert.pem())?;
        std::fs::write(&pki.server_key, server_key.serialize_pem())?;
        Ok(pki)
    }
}
