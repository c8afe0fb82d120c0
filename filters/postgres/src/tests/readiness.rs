//! Readiness probes: the filter answers them itself once the server has
//! answered an SSLRequest, and nothing else of the probe reaches the server.

use super::session;
use crate::login::{Authenticator, LoginRefusal};
use crate::protocol::{BackendMessage, FrontendMessage, StartupPacket, error_field};
use crate::{EngineConfig, Forward, READINESS_MESSAGE, READINESS_USER};
use gatehouse_core::identity::Identity;
use gatehouse_core::record::FilterMode;

fn probe() -> Vec<u8> {
    let mut out = Vec::new();
    StartupPacket::Startup {
        version: 196_608,
        params: vec![("user", READINESS_USER), ("database", READINESS_USER)],
    }
    .encode(&mut out);
    // A probe that goes on talking is not forwarded either.
    FrontendMessage::Query { sql: b"select 1" }.encode(&mut out);
    out
}

/// Refuses every token: a probe must never get as far as asking for one.
struct NoTokens;

impl Authenticator for NoTokens {
    fn authenticate(
        &mut self,
        _password: &[u8],
        _role: &str,
        _now_us: u64,
    ) -> Result<Identity, LoginRefusal> {
        Err(LoginRefusal {
            sqlstate: "28P01",
            message: "no".into(),
            code: "refused",
            identity: None,
        })
    }
}

#[test]
fn a_probe_reaches_the_server_as_an_ssl_request_and_gets_the_filters_answer() {
    let mut s = session(EngineConfig::default());
    s.set_authenticator(Box::new(NoTokens), 10);
    s.set_policy_hash("sha256:5eed".into());
    let sent = s.on_frontend(&probe(), 0);
    let mut ssl_request = Vec::new();
    StartupPacket::SslRequest.encode(&mut ssl_request);
    assert_eq!(sent.forward, Forward::Replace(ssl_request));
    assert!(!sent.close_connection);

    let answer = s.on_backend(b"N", 1);
    let Forward::Replace(bytes) = answer.forward else {
        panic!("the server's answer must be replaced");
    };
    assert_eq!(bytes.first(), Some(&b'E'), "an ErrorResponse: {bytes:?}");
    let Ok(BackendMessage::ErrorResponse { fields }) = BackendMessage::decode(b'E', &bytes[5..])
    else {
        panic!("not an ErrorResponse: {bytes:?}");
    };
    let message = String::from_utf8_lossy(error_field(&fields, b'M').unwrap()).into_owned();
    assert!(message.starts_with(READINESS_MESSAGE), "{message}");
    assert!(
        message.contains(gatehouse_core::build::VERSION),
        "{message}"
    );
    assert!(message.contains("sha256:5eed"), "{message}");
    assert!(answer.close_connection);
    assert!(s.take_records().is_empty(), "a probe is not a session");
}

#[test]
fn an_ordinary_user_is_not_a_probe() {
    let mut s = session(EngineConfig::default());
    let mut startup = Vec::new();
    StartupPacket::Startup {
        version: 196_608,
        params: vec![("user", "gatehouse"), ("database", "shop")],
    }
    .encode(&mut startup);
    assert_eq!(s.on_frontend(&startup, 0).forward, Forward::Unchanged);
}

#[test]
fn a_shadow_instance_leaves_the_probe_to_the_enforcing_one() {
    let mut s = session(EngineConfig::default());
    s.set_mode(FilterMode::Shadow);
    assert_eq!(s.on_frontend(&probe(), 0).forward, Forward::Unchanged);
}
