//! The demo identity provider: a signing key generated at start, its JWKS served
//! over HTTP to Envoy (through the `gatehouse_idp` cluster), and short-lived
//! tokens for the demo identities.

use anyhow::{Context, Result, anyhow, bail};
use gatehouse_core::identity::JwsAlgorithm;
use gatehouse_core::identity::testing::Minter;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The issuer (`iss`) of demo tokens.
pub const ISSUER: &str = "https://idp.gatehouse.test";
/// The audience (`aud`) gatehouse's filters require.
pub const AUDIENCE: &str = "gatehouse";
/// Where the JWKS is served.
pub const JWKS_PATH: &str = "/jwks.json";

/// The demo identities and their groups.
pub const DEMO_IDENTITIES: &[(&str, &str)] = &[
    ("developer", "developers"),
    ("dba", "dba"),
    ("ci", "ci"),
    ("agent", "ai-agents"),
    ("admin", "platform-admins"),
];

/// Claims of a demo identity's token.
pub fn claims_for(identity: &str) -> Result<serde_json::Value> {
    let (name, group) = DEMO_IDENTITIES
        .iter()
        .find(|(name, _)| *name == identity)
        .with_context(|| {
            let known: Vec<&str> = DEMO_IDENTITIES.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown demo identity {identity:?} (known: {})",
                known.join(", ")
            )
        })?;
    static NEXT_JTI: AtomicUsize = AtomicUsize::new(1);
    Ok(serde_json::json!({
        "sub": name,
        "email": format!("{name}@gatehouse.test"),
        "groups": [group],
        "jti": format!("{}-{}-{}", name, std::process::id(), NEXT_JTI.fetch_add(1, Ordering::Relaxed)),
    }))
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fresh demo signing key (EdDSA: small keys, fast to generate and verify).
pub fn generate_minter() -> Result<Minter> {
    Minter::generate(
        JwsAlgorithm::EdDsa,
        ISSUER,
        AUDIENCE,
        format!("demo-{}", now_unix()),
    )
    .map_err(|e| anyhow!("generating the demo signing key: {e}"))
}

/// Mints a token for a demo identity.
pub fn mint(minter: &Minter, identity: &str, ttl_seconds: i64) -> Result<String> {
    minter
        .mint(&claims_for(identity)?, ttl_seconds, now_unix())
        .map_err(|e| anyhow!("minting a token for {identity}: {e}"))
}

/// A kubectl `ExecCredential` (`client.authentication.k8s.io/v1`) holding
/// `token`, valid until `expires_at` (unix seconds): what a credential plugin
/// prints for kubectl, which keeps it until then and runs the plugin again after.
pub fn exec_credential(token: &str, expires_at: i64) -> String {
    let micros = u64::try_from(expires_at)
        .unwrap_or(0)
        .saturating_mul(1_000_000);
    serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {
            "token": token,
            "expirationTimestamp": gatehouse_core::record::rfc3339_micros(micros),
        },
    })
    .to_string()
}

/// Parses a TTL such as `15m`, `1h`, `90s` or `300` (seconds).
pub fn parse_ttl(text: &str) -> Result<i64> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = digits
        .parse()
        .with_context(|| format!("bad TTL {text:?} (examples: 90s, 15m, 1h)"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => bail!("bad TTL unit in {text:?} (use s, m or h)"),
    };
    Ok(n * scale)
}

/// Serves the JWKS of one or more minters on a loopback port until dropped.
pub struct IdentityProvider {
    addr: SocketAddr,
    jwks: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    /// Requests accepted, answered or not.
    requests: Arc<AtomicUsize>,
    /// While set, accepted requests wait for their answer.
    holding: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IdentityProvider {
    /// Starts serving the public keys of `minters` at [`JWKS_PATH`].
    pub fn start(minters: &[&Minter]) -> Result<IdentityProvider> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let jwks = Arc::new(Mutex::new(jwks_of(minters)?));
        let fetches = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let holding = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (jwks, fetches, stop) = (jwks.clone(), fetches.clone(), stop.clone());
            let (requests, holding) = (requests.clone(), holding.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            requests.fetch_add(1, Ordering::Relaxed);
                            while holding.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            let body = jwks.lock().map(|j| j.clone()).unwrap_or_default();
                            if serve_one(stream, &body).unwrap_or(false) {
                                fetches.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Ok(IdentityProvider {
            addr,
            jwks,
            fetches,
            requests,
            holding,
            stop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replaces the served keys (key rotation).
    pub fn serve_keys(&self, minters: &[&Minter]) -> Result<()> {
        let new = jwks_of(minters)?;
        *self
            .jwks
            .lock()
            .map_err(|_| anyhow!("JWKS lock poisoned"))? = new;
        Ok(())
    }

    /// How many times the JWKS has been fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }

    /// How many requests arrived, answered or not.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// While `hold` is set, requests that arrive wait for their answer (a
    /// slow identity provider); unset, they are answered in turn.
    pub fn hold_answers(&self, hold: bool) {
        self.holding.store(hold, Ordering::Relaxed);
    }
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn jwks_of(minters: &[&Minter]) -> Result<String> {
    let keys = minters
        .iter()
        .map(|m| m.public_jwk().map_err(|e| anyhow!("public key: {e}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(serde_json::json!({ "keys": keys }).to_string())
}

/// Answers one HTTP/1.1 request: the JWKS for its path, 404 otherwise.
/// Returns whether the JWKS was served.
fn serve_one(mut stream: TcpStream, jwks: &str) -> Result<bool> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = String::from_utf8_lossy(&request);
    let path = line.split(' ').nth(1).unwrap_or("");
    let (status, body) = if path == JWKS_PATH {
        ("200 OK", jwks)
    } else {
        ("404 Not Found", "{}")
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(status.starts_with("200"))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // a missing key is a failed test
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("15m").unwrap(), 900);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert!(parse_ttl("5d").is_err());
        assert!(parse_ttl("m").is_err());
    }

    #[test]
    fn an_exec_credential_is_what_kubectl_reads() {
        let credential: serde_json::Value =
            serde_json::from_str(&exec_credential("t0k3n", 1_800_000_000)).unwrap();
        assert_eq!(credential["apiVersion"], "client.authentication.k8s.io/v1");
        assert_eq!(credential["kind"], "ExecCredential");
        assert_eq!(credential["status"]["token"], "t0k3n");
        assert_eq!(
            credential["status"]["expirationTimestamp"],
            "2027-01-15T08:00:00.000000Z"
        );
    }

    #[test]
    fn unknown_identity_is_named() {
        let e = claims_for("mallory").unwrap_err().to_string();
        assert!(e.contains("mallory") && e.contains("developer"), "{e}");
    }

    #[test]
    fn serves_jwks_and_counts_fetches() {
        let minter = generate_minter().unwrap();
        let idp = IdentityProvider::start(&[&minter]).unwrap();
        let (code, body) =
            crate::envoy::http_get(&format!("127.0.0.1:{}", idp.port()), JWKS_PATH).unwrap();
        assert_eq!(code, 200);
        let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], minter.kid());
        assert_eq!(idp.fetches(), 1);
        let (code, _) =
            crate::envoy::http_get(&format!("127.0.0.1:{}", idp.port()), "/other").unwrap();
        assert_eq!(code, 404);
    }
}
