//! Token login on the wire: what the client and the server see at each step,
//! for good and bad tokens, impatient and silent clients, and server refusals.

use super::{backend, frontend, session};
use crate::login::{Authenticator, LoginRefusal};
use crate::protocol::{BackendMessage, FrontendMessage, StartupPacket, error_field};
use crate::{EngineConfig, Phase, Session};
use gatehouse_core::identity::Identity;
use gatehouse_core::record::{EndReason, Record};

const GOOD_TOKEN: &[u8] = b"good-token\0";
/// When [`GOOD_TOKEN`] expires (unix seconds).
const TOKEN_EXPIRES_AT: i64 = 60;
const DEADLINE_SECONDS: u32 = 10;

/// Accepts exactly [`GOOD_TOKEN`] as `alice` (group developers) for role `app`.
struct FixedTokens;

impl Authenticator for FixedTokens {
    fn authenticate(
        &mut self,
        password: &[u8],
        role: &str,
        _now_us: u64,
    ) -> Result<Identity, LoginRefusal> {
        if password != GOOD_TOKEN {
            return Err(LoginRefusal {
                sqlstate: "28P01",
                message: "gatehouse: token rejected: token has expired".into(),
                code: "expired",
                identity: None,
            });
        }
        let identity = Identity {
            subject: "alice".into(),
            groups: vec!["developers".into()],
            verified: true,
            expires_at: Some(TOKEN_EXPIRES_AT),
            ..Identity::default()
        };
        if role != "app" {
            return Err(LoginRefusal {
                sqlstate: "28000",
                message: format!("gatehouse: alice may not log in as database role \"{role}\""),
                code: "role_not_allowed",
                identity: Some(Box::new(identity)),
            });
        }
        Ok(identity)
    }
}

const POLICY_HASH: &str = "sha256:5eed";

fn login_session() -> Session {
    let mut s = session(EngineConfig::default());
    s.set_authenticator(Box::new(FixedTokens), DEADLINE_SECONDS);
    s.set_policy_hash(POLICY_HASH.into());
    s
}

fn startup(user: &str) -> Vec<u8> {
    let mut out = Vec::new();
    StartupPacket::Startup {
        version: 196_608,
        params: vec![("user", user), ("database", "shop")],
    }
    .encode(&mut out);
    out
}

/// What a trusting server answers a StartupMessage with.
fn server_startup_answer() -> Vec<u8> {
    backend(&[
        BackendMessage::Authentication { code: 0, data: b"" },
        BackendMessage::ParameterStatus {
            name: b"server_version",
            value: b"15.8",
        },
        BackendMessage::BackendKeyData {
            pid: 4242,
            key: &[0, 0, 0, 99],
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ])
}

fn ready() -> Vec<u8> {
    backend(&[BackendMessage::ReadyForQuery { status: b'I' }])
}

fn cleartext_request() -> Vec<u8> {
    backend(&[BackendMessage::Authentication { code: 3, data: b"" }])
}

/// Feeds `chunk` one byte at a time when `bytewise`, returning everything forwarded.
fn feed(s: &mut Session, from_client: bool, chunk: &[u8], bytewise: bool) -> (Vec<u8>, bool) {
    let pieces: Vec<&[u8]> = if bytewise {
        chunk.chunks(1).collect()
    } else {
        vec![chunk]
    };
    let mut out = Vec::new();
    let mut close = false;
    for piece in pieces {
        let verdict = if from_client {
            s.on_frontend(piece, 5_000)
        } else {
            s.on_backend(piece, 5_000)
        };
        out.extend_from_slice(verdict.bytes(piece));
        close |= verdict.close_connection;
    }
    (out, close)
}

/// The SQLSTATE and message of the single ErrorResponse in `bytes`.
fn error_of(bytes: &[u8]) -> (String, String) {
    assert_eq!(bytes.first(), Some(&b'E'), "an ErrorResponse: {bytes:?}");
    let msg = BackendMessage::decode(b'E', &bytes[5..]).unwrap();
    let BackendMessage::ErrorResponse { fields } = msg else {
        panic!("not an error: {msg:?}");
    };
    let text = |code| String::from_utf8_lossy(error_field(&fields, code).unwrap()).into_owned();
    (text(b'C'), text(b'M'))
}

#[test]
fn a_good_token_releases_the_held_startup_answer_in_place_of_the_syncs_answer() {
    for bytewise in [false, true] {
        let mut s = login_session();
        let (to_server, _) = feed(&mut s, true, &startup("app"), bytewise);
        assert_eq!(
            to_server,
            startup("app"),
            "the startup goes to the server unchanged"
        );

        let (to_client, _) = feed(&mut s, false, &server_startup_answer(), bytewise);
        assert_eq!(
            to_client,
            cleartext_request(),
            "the client is asked for its password"
        );
        assert_eq!(s.phase(), Phase::Authenticating);

        let password = frontend(&[FrontendMessage::Password { data: GOOD_TOKEN }]);
        let (to_server, _) = feed(&mut s, true, &password, bytewise);
        assert_eq!(
            to_server,
            frontend(&[FrontendMessage::Sync]),
            "the token never reaches the server"
        );

        let (to_client, close) = feed(&mut s, false, &ready(), bytewise);
        assert_eq!(
            to_client,
            server_startup_answer(),
            "the held answer, byte for byte"
        );
        assert!(!close);
        assert_eq!(s.phase(), Phase::Ready);
        assert_eq!(s.login_deadline_us(), None);
        assert_eq!(s.summary().backend_pid, Some(4242));

        let records = s.take_records();
        let [Record::SessionStart(start)] = records.as_slice() else {
            panic!("one session start: {records:?}");
        };
        let identity = start.client.identity.as_ref().expect("identity recorded");
        assert_eq!(identity.subject, "alice");
        assert_eq!(start.protocol_version, "3.0");
        assert_eq!(
            start.header.policy_hash.as_deref(),
            Some(POLICY_HASH),
            "records name the configuration in force"
        );

        let query = frontend(&[FrontendMessage::Query { sql: b"select 1" }]);
        let (to_server, _) = feed(&mut s, true, &query, bytewise);
        assert_eq!(to_server, query, "queries flow once logged in");
    }
}

#[test]
fn the_password_may_arrive_before_the_server_finished_its_startup_answer() {
    let mut s = login_session();
    feed(&mut s, true, &startup("app"), false);
    let answer = server_startup_answer();
    let auth_ok_len = 9;
    let (to_client, _) = feed(&mut s, false, &answer[..auth_ok_len], false);
    assert_eq!(to_client, cleartext_request());
    let password = frontend(&[FrontendMessage::Password { data: GOOD_TOKEN }]);
    feed(&mut s, true, &password, false);
    // The rest of the startup answer (ending in its ReadyForQuery), then the Sync's.
    let (to_client, _) = feed(&mut s, false, &answer[auth_ok_len..], false);
    assert!(to_client.is_empty(), "held: {to_client:?}");
    let (to_client, _) = feed(&mut s, false, &ready(), false);
    assert_eq!(to_client, answer);
    assert_eq!(s.phase(), Phase::Ready);
}

#[test]
fn a_bad_token_gets_a_fatal_28p01_in_place_of_the_syncs_answer_and_the_session_ends() {
    let mut s = login_session();
    feed(&mut s, true, &startup("app"), false);
    feed(&mut s, false, &server_startup_answer(), false);
    let password = frontend(&[FrontendMessage::Password {
        data: b"stale-token\0",
    }]);
    let (to_server, _) = feed(&mut s, true, &password, false);
    assert_eq!(to_server, frontend(&[FrontendMessage::Sync]));
    let (to_client, close) = feed(&mut s, false, &ready(), false);
    assert_eq!(
        error_of(&to_client),
        (
            "28P01".into(),
            "gatehouse: token rejected: token has expired".into()
        )
    );
    assert!(close, "the connection is closed after the error");
    assert_eq!(s.phase(), Phase::Finished);
    let records = s.take_records();
    let [Record::SessionEnd(end)] = records.as_slice() else {
        panic!("only the session end, no session start: {records:?}");
    };
    assert_eq!(end.reason, EndReason::AuthenticationFailed);
    assert_eq!(end.detail.as_deref(), Some("token refused: expired"));
}

#[test]
fn a_good_token_for_a_forbidden_role_is_refused_with_28000_naming_the_caller() {
    let mut s = login_session();
    feed(&mut s, true, &startup("postgres"), false);
    feed(&mut s, false, &server_startup_answer(), false);
    let password = frontend(&[FrontendMessage::Password { data: GOOD_TOKEN }]);
    feed(&mut s, true, &password, false);
    let (to_client, _) = feed(&mut s, false, &ready(), false);
    let (code, message) = error_of(&to_client);
    assert_eq!(code, "28000");
    assert!(message.contains("may not log in as database role \"postgres\""));
    let records = s.take_records();
    let [Record::SessionEnd(end)] = records.as_slice() else {
        panic!("{records:?}");
    };
    assert_eq!(
        end.client.identity.as_ref().map(|i| i.subject.as_str()),
        Some("alice"),
        "the record says who tried"
    );
}

#[test]
fn anything_but_the_password_during_login_is_refused_and_never_forwarded() {
    let mut s = login_session();
    feed(&mut s, true, &startup("app"), false);
    feed(&mut s, false, &server_startup_answer(), false);
    let smuggled = frontend(&[FrontendMessage::Query {
        sql: b"select 'smuggled'",
    }]);
    let (to_server, _) = feed(&mut s, true, &smuggled, false);
    assert!(
        !to_server.windows(8).any(|w| w == b"smuggled"),
        "the query is not forwarded"
    );
    // The server answers the engine's replacement; the client gets 08P01.
    let (to_client, close) = feed(&mut s, false, &ready(), false);
    assert_eq!(error_of(&to_client).0, "08P01");
    assert!(close);
}

#[test]
fn a_password_before_the_gateway_asked_for_it_is_a_protocol_violation() {
    let mut s = login_session();
    let mut early = startup("app");
    early.extend(frontend(&[FrontendMessage::Password { data: GOOD_TOKEN }]));
    let (to_server, _) = feed(&mut s, true, &early, false);
    assert!(!to_server.windows(10).any(|w| w == &GOOD_TOKEN[..10]));
    let (to_client, _) = feed(&mut s, false, &server_startup_answer(), false);
    assert_eq!(error_of(&to_client).0, "08P01");
}

#[test]
fn server_errors_before_the_token_is_verified_become_a_generic_refusal() {
    let mut s = login_session();
    feed(&mut s, true, &startup("app"), false);
    let no_db = backend(&[BackendMessage::ErrorResponse {
        fields: vec![
            (b'S', b"FATAL"),
            (b'C', b"3D000"),
            (b'M', b"database \"secret_project\" does not exist"),
        ],
    }]);
    let (to_client, close) = feed(&mut s, false, &no_db, false);
    let (code, message) = error_of(&to_client);
    assert_eq!(code, "28000");
    assert!(!message.contains("secret_project"), "{message}");
    assert!(close);
    let records = s.take_records();
    let Some(Record::SessionEnd(end)) = records.last() else {
        panic!("{records:?}");
    };
    assert!(
        end.detail.as_deref().unwrap_or_default().contains("3D000"),
        "the record keeps the server's reason: {:?}",
        end.detail
    );
}

#[test]
fn a_server_that_asks_for_its_own_password_is_refused_clearly() {
    let mut s = login_session();
    feed(&mut s, true, &startup("app"), false);
    let md5 = backend(&[BackendMessage::Authentication {
        code: 5,
        data: b"salt",
    }]);
    let (to_client, close) = feed(&mut s, false, &md5, false);
    let (code, message) = error_of(&to_client);
    assert_eq!(code, "28000");
    assert!(message.contains("must trust the gateway"), "{message}");
    assert!(close);
}

#[test]
fn the_login_deadline_runs_from_the_session_start_until_login_completes() {
    let s = login_session();
    assert_eq!(
        s.login_deadline_us(),
        Some(1_000 + u64::from(DEADLINE_SECONDS) * 1_000_000)
    );
    let plain = session(EngineConfig::default());
    assert_eq!(
        plain.login_deadline_us(),
        None,
        "no deadline without token login"
    );
}

#[test]
fn statements_after_the_token_expired_are_refused_while_the_session_stays_open() {
    let mut s = login_session();
    feed(&mut s, true, &startup("app"), false);
    feed(&mut s, false, &server_startup_answer(), false);
    let password = frontend(&[FrontendMessage::Password { data: GOOD_TOKEN }]);
    feed(&mut s, true, &password, false);
    feed(&mut s, false, &ready(), false);
    let query = frontend(&[FrontendMessage::Query { sql: b"select 1" }]);
    let before = s.on_frontend(&query, 59_000_000);
    assert_eq!(before.bytes(&query), query, "valid until it expires");
    let rows = backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    let answer = s.on_backend(&rows, 59_000_100);
    assert_eq!(answer.bytes(&rows), rows);
    let after = s.on_frontend(&query, 60_000_000);
    let sent = after.bytes(&query).to_vec();
    assert!(
        sent.windows(14).any(|w| w == b"RAISE EXCEPTIO"),
        "the statement becomes the raising block: {:?}",
        String::from_utf8_lossy(&sent)
    );
    assert!(
        !after.close_connection,
        "the client may still roll back and leave"
    );
    let text = String::from_utf8_lossy(&sent).into_owned();
    assert!(
        text.contains("login token of this session has expired"),
        "{text}"
    );
}

#[test]
fn the_token_ahead_is_seen_only_in_a_whole_password_message_the_session_waits_for() {
    let mut s = login_session();
    let password = frontend(&[FrontendMessage::Password {
        data: b" good-token \0",
    }]);
    assert_eq!(s.token_ahead(&password), None, "before the startup");
    feed(&mut s, true, &startup("app"), false);
    assert_eq!(s.token_ahead(&password), None, "not asked for yet");
    feed(&mut s, false, &server_startup_answer(), false);
    assert_eq!(
        s.token_ahead(&password),
        Some("good-token"),
        "as it is verified"
    );
    let mut trailing = password.clone();
    trailing.extend_from_slice(&frontend(&[FrontendMessage::Sync]));
    assert_eq!(s.token_ahead(&trailing), Some("good-token"));
    for short in [0, 1, 5, password.len() - 1] {
        assert_eq!(s.token_ahead(&password[..short]), None, "{short} bytes");
    }
    let sync = frontend(&[FrontendMessage::Sync]);
    assert_eq!(s.token_ahead(&sync), None, "not a password");
    // A message whose first bytes the session already holds: `next` does
    // not start a message.
    feed(&mut s, true, &password[..3], false);
    assert_eq!(s.token_ahead(&password[3..]), None);
    assert_eq!(s.token_ahead(&password), None);
    feed(&mut s, true, &password[3..], false);
    assert_eq!(s.token_ahead(&password), None, "judged already");
}
