//! The masker through a real session: what the client gets, what the server
//! gets, and the records.

use super::*;
use crate::protocol::{Bind, StartupPacket};
use crate::{ConnectionInfo, EngineConfig, Session};
use gatehouse_core::record::{Record, StatementRecord};

const DEMO: &str = include_str!("../../../../examples/postgres-masking.json");

pub(super) const CUSTOMERS_OID: u32 = 16_400;
const VIEW_OID: u32 = 16_500;
pub(super) const TEXT: u32 = 25;
pub(super) const INT4: u32 = 23;
const JSONB: u32 = 3802;
const TEXT_ARRAY: u32 = 1009;

pub(super) fn demo_policy() -> Arc<MaskingPolicy> {
    Arc::new(MaskingPolicy::from_json(DEMO.as_bytes()).unwrap())
}

pub(super) struct Wire {
    pub(super) session: Session,
    policy: Arc<MaskingPolicy>,
    records: Vec<Record>,
    now: u64,
    byte_by_byte: bool,
}

pub(super) fn encode_backend(msgs: &[BackendMessage<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    msgs.iter().for_each(|m| m.encode(&mut out));
    out
}

pub(super) fn encode_frontend(msgs: &[FrontendMessage<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    msgs.iter().for_each(|m| m.encode(&mut out));
    out
}

pub(super) fn query(sql: &str) -> Vec<u8> {
    encode_frontend(&[FrontendMessage::Query {
        sql: sql.as_bytes(),
    }])
}

/// Client messages as the server gets them: the masker's Describe of the
/// portal ahead of each Execute the client did not describe just before.
pub(super) fn with_portal_describes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut described: Option<Vec<u8>> = None;
    while let Some((&tag, tail)) = rest.split_first() {
        let len = u32::from_be_bytes(tail[..4].try_into().unwrap()) as usize;
        let (frame, after) = tail.split_at(len);
        let msg = FrontendMessage::decode(tag, &frame[4..]).unwrap();
        if let FrontendMessage::Execute { portal, .. } = &msg
            && described.as_deref() != Some(*portal)
        {
            FrontendMessage::Describe {
                kind: b'P',
                name: portal,
            }
            .encode(&mut out);
        }
        described = match &msg {
            FrontendMessage::Describe { kind: b'P', name } => Some(name.to_vec()),
            _ => None,
        };
        out.push(tag);
        out.extend_from_slice(frame);
        rest = after;
    }
    out
}

/// A RowDescription of `(name, table oid, attnum, type oid, format)` fields.
pub(super) fn row_description(fields: &[(&str, u32, i16, u32, i16)]) -> Vec<u8> {
    let mut body = (fields.len() as i16).to_be_bytes().to_vec();
    for (name, table, attnum, type_oid, format) in fields {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&table.to_be_bytes());
        body.extend_from_slice(&attnum.to_be_bytes());
        body.extend_from_slice(&type_oid.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&format.to_be_bytes());
    }
    body
}

pub(super) fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
    encode_backend(&[BackendMessage::DataRow {
        values: values.to_vec(),
    }])
}

/// The server's answer to the catalog lookup: customers.email (attnum 2),
/// card_number (3), ssn (4), and the view column 2 that shows ssn.
fn catalog_answer() -> Vec<u8> {
    let rd = row_description(&[
        ("relid", 0, 0, 20, 0),
        ("attnum", 0, 0, 21, 0),
        ("min", 0, 0, 23, 0),
        ("relname", 0, 0, 19, 0),
        ("attname", 0, 0, 19, 0),
    ]);
    let mut out = encode_backend(&[BackendMessage::RowDescription { body: &rd }]);
    for (oid, attnum, rule, relation, column) in [
        (CUSTOMERS_OID, "2", "0", "customers", "email"),
        (CUSTOMERS_OID, "3", "1", "customers", "card_number"),
        (CUSTOMERS_OID, "4", "2", "customers", "ssn"),
        (VIEW_OID, "2", "2", "customer_ids", "tax_id"),
    ] {
        let oid = oid.to_string();
        out.extend(data_row(&[
            Some(oid.as_bytes()),
            Some(attnum.as_bytes()),
            Some(rule.as_bytes()),
            Some(relation.as_bytes()),
            Some(column.as_bytes()),
        ]));
    }
    out.extend(encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 4" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    out
}

impl Wire {
    pub(super) fn new(identity: Option<gatehouse_core::identity::Identity>) -> Self {
        Self::with(EngineConfig::default(), identity, false)
    }

    pub(super) fn with(
        config: EngineConfig,
        identity: Option<gatehouse_core::identity::Identity>,
        byte_by_byte: bool,
    ) -> Self {
        Self::with_policy(demo_policy(), config, identity, byte_by_byte)
    }

    pub(super) fn with_policy(
        policy: Arc<MaskingPolicy>,
        config: EngineConfig,
        identity: Option<gatehouse_core::identity::Identity>,
        byte_by_byte: bool,
    ) -> Self {
        let mut session = Session::new(
            Arc::new(config),
            ConnectionInfo {
                id: 9,
                client_address: "127.0.0.1:40000".into(),
            },
            1_000,
        );
        session.set_masker(SessionMasker::new(Arc::clone(&policy)));
        if let Some(identity) = identity {
            session.set_identity(identity);
        }
        let mut wire = Self {
            session,
            policy,
            records: Vec::new(),
            now: 2_000,
            byte_by_byte,
        };
        let mut startup = Vec::new();
        StartupPacket::Startup {
            version: 3 << 16,
            params: vec![("user", "alice"), ("database", "shop")],
        }
        .encode(&mut startup);
        assert_eq!(wire.client(&startup), startup);
        let login = encode_backend(&[
            BackendMessage::Authentication { code: 0, data: b"" },
            BackendMessage::ReadyForQuery { status: b'I' },
        ]);
        assert_eq!(wire.server(&login), login);
        wire
    }

    fn feed(&mut self, bytes: &[u8], to_server: bool) -> Vec<u8> {
        self.now += 10;
        let chunks: Vec<Vec<u8>> = if self.byte_by_byte {
            bytes.iter().map(|b| vec![*b]).collect()
        } else {
            vec![bytes.to_vec()]
        };
        let mut out = Vec::new();
        for chunk in chunks {
            let verdict = if to_server {
                self.session.on_frontend(&chunk, self.now)
            } else {
                self.session.on_backend(&chunk, self.now)
            };
            assert!(!verdict.close_connection, "session closed");
            out.extend_from_slice(verdict.bytes(&chunk));
        }
        self.records.extend(self.session.take_records());
        out
    }

    pub(super) fn client(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.feed(bytes, true)
    }

    pub(super) fn server(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.feed(bytes, false)
    }

    /// Sends the client's first request; checks the catalog lookup goes ahead
    /// of it and consumes the lookup's answers.
    pub(super) fn first_request(&mut self, request: &[u8]) {
        let to_server = self.client(request);
        let lookup = catalog::lookup_sql(&self.policy).unwrap();
        let expected = [catalog::query_message(&lookup), request.to_vec()].concat();
        assert_eq!(to_server, expected);
        assert_eq!(
            self.server(&catalog_answer()),
            b"",
            "lookup answers reach the client"
        );
    }

    pub(super) fn statements(&self) -> Vec<&StatementRecord> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::Statement(s) => Some(s.as_ref()),
                _ => None,
            })
            .collect()
    }
}

pub(super) fn customers_description(format: i16) -> Vec<u8> {
    row_description(&[
        ("id", CUSTOMERS_OID, 1, INT4, format),
        ("email", CUSTOMERS_OID, 2, TEXT, format),
        ("card_number", CUSTOMERS_OID, 3, TEXT, format),
        ("ssn", CUSTOMERS_OID, 4, TEXT, format),
        ("note", CUSTOMERS_OID, 5, TEXT, format),
    ])
}

pub(super) fn select_answer(description: &[u8], rows: &[Vec<u8>], tag: &[u8]) -> Vec<u8> {
    let mut out = encode_backend(&[BackendMessage::RowDescription { body: description }]);
    rows.iter().for_each(|r| out.extend_from_slice(r));
    out.extend(encode_backend(&[
        BackendMessage::CommandComplete { tag },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    out
}

#[test]
fn text_rows_are_masked_by_rule_and_detector_with_every_length_recomputed() {
    let mut wire = Wire::new(None);
    wire.first_request(&query("SELECT * FROM shop.customers"));
    let description = customers_description(0);
    let row = data_row(&[
        Some(b"1"),
        Some(b"alice@example.com"),
        Some(b"4111 1111 1111 1111"),
        Some(b"536-22-1234"),
        Some(b"call +14155550123 or mail bob@example.org"),
    ]);
    let to_client = wire.server(&select_answer(&description, &[row], b"SELECT 1"));
    // Golden: every value and the message length recomputed.
    let expected_row = data_row(&[
        Some(b"1"),
        Some(b"a***@example.com"),
        Some(b"**** **** **** 1111"),
        Some(b"****"),
        Some(b"call **** or mail ****"),
    ]);
    let expected = select_answer(&description, &[expected_row], b"SELECT 1");
    assert_eq!(to_client, expected);
    let stmt = wire.statements();
    let masking = stmt[0].masking.as_ref().expect("counts recorded");
    assert_eq!(masking.rules["customer-email"], 1);
    assert_eq!(masking.rules["customer-card"], 1);
    assert_eq!(masking.rules["customer-ssn"], 1);
    assert_eq!(masking.detectors["phone"], 1);
    assert_eq!(masking.detectors["email"], 1);
    assert!(!masking.exempt);
    let json = wire.records[wire.records.len() - 1].to_json();
    assert!(
        !json.contains("alice@example.com") && !json.contains("536-22-1234"),
        "{json}"
    );
}

#[test]
fn asynchronous_messages_amid_the_lookups_answers_are_the_clients() {
    let mut wire = Wire::new(None);
    let request = query("SELECT * FROM shop.customers");
    let to_server = wire.client(&request);
    let lookup = catalog::lookup_sql(&wire.policy).unwrap();
    assert_eq!(
        to_server,
        [catalog::query_message(&lookup), request].concat()
    );
    let notification = |payload: &'static [u8]| BackendMessage::NotificationResponse {
        pid: 42,
        channel: b"orders",
        payload,
    };
    let setting = BackendMessage::ParameterStatus {
        name: b"application_name",
        value: b"app",
    };
    // The lookup's answers, with a notification and a setting report amid
    // them, then the client's own answer.
    let answer = catalog_answer();
    let (before_ready, ready) = answer.split_at(answer.len() - 6);
    let mut from_server = before_ready.to_vec();
    from_server.extend(encode_backend(&[
        notification(b"{\"ssn\": \"536-22-1234\"}"),
        setting.clone(),
    ]));
    from_server.extend_from_slice(ready);
    let description = customers_description(0);
    let row = data_row(&[
        Some(b"1"),
        Some(b"alice@example.com"),
        Some(b"4111 1111 1111 1111"),
        Some(b"536-22-1234"),
        Some(b"-"),
    ]);
    from_server.extend(select_answer(&description, &[row], b"SELECT 1"));
    let to_client = wire.server(&from_server);
    let masked_row = data_row(&[
        Some(b"1"),
        Some(b"a***@example.com"),
        Some(b"**** **** **** 1111"),
        Some(b"****"),
        Some(b"-"),
    ]);
    let expected = [
        encode_backend(&[notification(b"{\"ssn\": \"****\"}"), setting]),
        select_answer(&description, &[masked_row], b"SELECT 1"),
    ]
    .concat();
    assert_eq!(to_client, expected);
    let statements = wire.statements();
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0].rows, Some(1));
    assert!(statements[0].error.is_none());
}

#[test]
fn an_over_limit_message_amid_the_lookups_answers_ends_the_session_unforwarded() {
    // A message the engine cannot hold whole while its own lookup is
    // answered can be neither consumed nor masked: it must not stream
    // through to the client, whatever its type.
    let config = EngineConfig {
        max_buffered_bytes: 16 * 1024,
        ..EngineConfig::default()
    };
    let secret = b"536-22-1234";
    let mut payload = vec![b'x'; 20_000];
    payload.extend_from_slice(secret);
    let notification = encode_backend(&[BackendMessage::NotificationResponse {
        pid: 42,
        channel: b"orders",
        payload: &payload,
    }]);
    let notice = {
        let mut body = b"SWARNING\0C01000\0M".to_vec();
        body.extend_from_slice(&payload);
        body.extend_from_slice(b"\0\0");
        let mut out = vec![b'N'];
        out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        out.extend(body);
        out
    };
    for (what, message) in [("notification", &notification), ("notice", &notice)] {
        for byte_by_byte in [false, true] {
            let mut wire = Wire::with(config.clone(), None, byte_by_byte);
            let _ = wire.client(&query("SELECT * FROM shop.customers"));
            let answer = catalog_answer();
            let (before_ready, _) = answer.split_at(answer.len() - 6);
            let mut from_server = before_ready.to_vec();
            from_server.extend_from_slice(message);
            let mut to_client = Vec::new();
            let mut closed = false;
            for chunk in from_server.chunks(if byte_by_byte { 1 } else { from_server.len() }) {
                let verdict = wire.session.on_backend(chunk, 50_000);
                to_client.extend_from_slice(verdict.bytes(chunk));
                if verdict.close_connection {
                    closed = true;
                    break;
                }
            }
            assert!(
                closed,
                "{what} (byte_by_byte {byte_by_byte}): session not ended"
            );
            assert!(
                !to_client.windows(secret.len()).any(|w| w == secret),
                "{what} (byte_by_byte {byte_by_byte}) reached the client"
            );
            assert!(
                String::from_utf8_lossy(&to_client).contains("08P01"),
                "{what} (byte_by_byte {byte_by_byte}): no protocol error for the client"
            );
        }
    }
}

#[test]
fn binary_rows_stay_valid_for_their_types() {
    let mut wire = Wire::new(None);
    let description = row_description(&[
        ("id", CUSTOMERS_OID, 1, INT4, 1),
        ("ssn", CUSTOMERS_OID, 4, TEXT, 1),
        ("profile", 0, 0, JSONB, 1),
        ("tags", 0, 0, TEXT_ARRAY, 1),
        ("x", VIEW_OID, 2, INT4, 1),
    ]);
    let request = encode_frontend(&[
        FrontendMessage::Parse {
            name: b"",
            sql: b"SELECT id, ssn, profile, tags, x FROM v",
            param_types: vec![],
        },
        FrontendMessage::Bind(Bind {
            portal: b"",
            statement: b"",
            param_formats: vec![],
            params: vec![],
            result_formats: vec![1],
        }),
        FrontendMessage::Describe {
            kind: b'P',
            name: b"",
        },
        FrontendMessage::Execute {
            portal: b"",
            max_rows: 0,
        },
        FrontendMessage::Sync,
    ]);
    wire.first_request(&request);
    let mut array = Vec::new();
    array.extend_from_slice(&1i32.to_be_bytes()); // ndim
    array.extend_from_slice(&0i32.to_be_bytes()); // has nulls
    array.extend_from_slice(&TEXT.to_be_bytes());
    array.extend_from_slice(&2i32.to_be_bytes()); // dim
    array.extend_from_slice(&1i32.to_be_bytes()); // lower bound
    for element in [b"plain".as_slice(), b"eve@example.net"] {
        array.extend_from_slice(&(element.len() as i32).to_be_bytes());
        array.extend_from_slice(element);
    }
    let jsonb = [b"\x01".as_slice(), br#"{"mail": "eve@example.net"}"#].concat();
    let row = data_row(&[
        Some(&7i32.to_be_bytes()),
        Some(b"536-22-1234"),
        Some(&jsonb),
        Some(&array),
        Some(&9i32.to_be_bytes()),
    ]);
    let mut answer = encode_backend(&[
        BackendMessage::ParseComplete,
        BackendMessage::BindComplete,
        BackendMessage::RowDescription { body: &description },
    ]);
    answer.extend(row);
    answer.extend(encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let to_client = wire.server(&answer);
    let mut masked_array = array[..20].to_vec();
    for element in [b"plain".as_slice(), b"****"] {
        masked_array.extend_from_slice(&(element.len() as i32).to_be_bytes());
        masked_array.extend_from_slice(element);
    }
    let masked_jsonb = [b"\x01".as_slice(), br#"{"mail": "****"}"#].concat();
    let expected_row = data_row(&[
        Some(&7i32.to_be_bytes()),
        Some(b"****"),
        Some(&masked_jsonb),
        Some(&masked_array),
        // A binary integer under the ssn rule (through the view) becomes NULL.
        None,
    ]);
    let start = to_client
        .windows(expected_row.len())
        .position(|w| w == expected_row.as_slice());
    assert!(start.is_some(), "masked row not found in {to_client:?}");
}

#[test]
fn pipelined_prepared_statements_use_their_own_descriptions() {
    let mut wire = Wire::new(None);
    let prepare = encode_frontend(&[
        FrontendMessage::Parse {
            name: b"s1",
            sql: b"SELECT ssn FROM shop.customers",
            param_types: vec![],
        },
        FrontendMessage::Describe {
            kind: b'S',
            name: b"s1",
        },
        FrontendMessage::Parse {
            name: b"s2",
            sql: b"SELECT id, note FROM shop.customers",
            param_types: vec![],
        },
        FrontendMessage::Describe {
            kind: b'S',
            name: b"s2",
        },
        FrontendMessage::Sync,
    ]);
    wire.first_request(&prepare);
    let d1 = row_description(&[("ssn", CUSTOMERS_OID, 4, TEXT, 0)]);
    let d2 = row_description(&[
        ("id", CUSTOMERS_OID, 1, INT4, 0),
        ("note", CUSTOMERS_OID, 5, TEXT, 0),
    ]);
    let answers = encode_backend(&[
        BackendMessage::ParseComplete,
        BackendMessage::ParameterDescription { types: vec![] },
        BackendMessage::RowDescription { body: &d1 },
        BackendMessage::ParseComplete,
        BackendMessage::ParameterDescription { types: vec![] },
        BackendMessage::RowDescription { body: &d2 },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    assert_eq!(
        wire.server(&answers),
        answers,
        "descriptions pass unchanged"
    );
    let bind = |statement: &'static [u8], formats: Vec<i16>| {
        FrontendMessage::Bind(Bind {
            portal: b"",
            statement,
            param_formats: vec![],
            params: vec![],
            result_formats: formats,
        })
    };
    let execute = FrontendMessage::Execute {
        portal: b"",
        max_rows: 0,
    };
    let run = encode_frontend(&[
        bind(b"s1", vec![0]),
        execute.clone(),
        bind(b"s2", vec![1, 0]),
        execute,
        FrontendMessage::Sync,
    ]);
    // Each Execute's portal is described ahead of it, with its formats.
    assert_eq!(wire.client(&run), with_portal_describes(&run));
    let p1 = row_description(&[("ssn", CUSTOMERS_OID, 4, TEXT, 0)]);
    let p2 = row_description(&[
        ("id", CUSTOMERS_OID, 1, INT4, 1),
        ("note", CUSTOMERS_OID, 5, TEXT, 0),
    ]);
    let mut answers = encode_backend(&[
        BackendMessage::BindComplete,
        BackendMessage::RowDescription { body: &p1 },
    ]);
    answers.extend(data_row(&[Some(b"536-22-1234")]));
    answers.extend(encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::BindComplete,
        BackendMessage::RowDescription { body: &p2 },
    ]));
    // s2's first column is a binary integer whose bytes happen to be digits:
    // it is not text, so no detector touches it.
    answers.extend(data_row(&[Some(b"5362"), Some(b"ssn 536-22-1234")]));
    answers.extend(encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    let to_client = wire.server(&answers);
    let mut expected = encode_backend(&[BackendMessage::BindComplete]);
    expected.extend(data_row(&[Some(b"****")]));
    expected.extend(encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::BindComplete,
    ]));
    expected.extend(data_row(&[Some(b"5362"), Some(b"ssn ****")]));
    expected.extend(encode_backend(&[
        BackendMessage::CommandComplete { tag: b"SELECT 1" },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    assert_eq!(to_client, expected);
    let stmts = wire.statements();
    let last_two: Vec<_> = stmts[stmts.len() - 2..]
        .iter()
        .map(|s| s.masking.clone().unwrap())
        .collect();
    assert_eq!(last_two[0].rules["customer-ssn"], 1);
    assert_eq!(last_two[1].detectors["us_ssn"], 1);
}

#[test]
fn an_error_skips_the_rest_of_the_batch_for_the_masker_too() {
    let mut wire = Wire::new(None);
    let d = row_description(&[("ssn", CUSTOMERS_OID, 4, TEXT, 0)]);
    let batch = encode_frontend(&[
        FrontendMessage::Parse {
            name: b"bad",
            sql: b"SELEC 1",
            param_types: vec![],
        },
        FrontendMessage::Describe {
            kind: b'S',
            name: b"bad",
        },
        FrontendMessage::Sync,
        FrontendMessage::Query {
            sql: b"SELECT ssn FROM shop.customers",
        },
    ]);
    wire.first_request(&batch);
    let error_fields = vec![
        (b'S', b"ERROR".as_slice()),
        (b'C', b"42601"),
        (b'M', b"syntax error"),
    ];
    let mut answers = encode_backend(&[
        BackendMessage::ErrorResponse {
            fields: error_fields,
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    answers.extend(select_answer(
        &d,
        &[data_row(&[Some(b"536-22-1234")])],
        b"SELECT 1",
    ));
    let to_client = wire.server(&answers);
    let masked_row = data_row(&[Some(b"****")]);
    assert!(
        to_client
            .windows(masked_row.len())
            .any(|w| w == masked_row.as_slice()),
        "{to_client:?}"
    );
}

#[test]
fn errors_notices_and_notifications_are_masked() {
    let mut wire = Wire::new(None);
    wire.first_request(&query(
        "INSERT INTO shop.customers (email) VALUES ('a@b.com')",
    ));
    let unique = BackendMessage::ErrorResponse {
        fields: vec![
            (b'S', b"ERROR".as_slice()),
            (b'C', b"23505"),
            (
                b'M',
                b"duplicate key value violates unique constraint \"customers_email_key\"",
            ),
            (b'D', b"Key (email)=(a@b.com) already exists."),
            (b's', b"public"),
            (b't', b"customers"),
        ],
    };
    let mut answer = encode_backend(&[unique]);
    answer.extend(encode_backend(&[BackendMessage::ReadyForQuery {
        status: b'E',
    }]));
    let to_client = wire.server(&answer);
    let text = String::from_utf8_lossy(&to_client);
    assert!(!text.contains("a@b.com"), "{text}");
    assert!(
        text.contains("Key (email)=(a***@b.com) already exists."),
        "{text}"
    );
    assert_eq!(
        wire.statements()[0].masking.as_ref().unwrap().rules["customer-email"],
        1
    );
    // The rebuilt message is well formed.
    let (tag, body) = (to_client[0], &to_client[5..]);
    let len = u32::from_be_bytes(to_client[1..5].try_into().unwrap()) as usize;
    assert_eq!(tag, b'E');
    assert!(BackendMessage::decode(tag, &body[..len - 4]).is_ok());

    wire.client(&query(
        "DO $$ BEGIN RAISE NOTICE 'card 4111111111111111'; END $$",
    ));
    let notice = encode_backend(&[
        BackendMessage::NoticeResponse {
            fields: vec![
                (b'S', b"NOTICE".as_slice()),
                (b'C', b"00000"),
                (b'M', b"card 4111111111111111"),
            ],
        },
        BackendMessage::CommandComplete { tag: b"DO" },
        BackendMessage::NotificationResponse {
            pid: 42,
            channel: b"orders",
            payload: b"{\"ssn\": \"536-22-1234\"}",
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    let to_client = wire.server(&notice);
    let expected = encode_backend(&[
        BackendMessage::NoticeResponse {
            fields: vec![
                (b'S', b"NOTICE".as_slice()),
                (b'C', b"00000"),
                (b'M', b"card ****"),
            ],
        },
        BackendMessage::CommandComplete { tag: b"DO" },
        BackendMessage::NotificationResponse {
            pid: 42,
            channel: b"orders",
            payload: b"{\"ssn\": \"****\"}",
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    assert_eq!(to_client, expected);
}

#[test]
fn exempt_identities_see_clear_values_and_records_count_what_would_be_masked() {
    let identity = gatehouse_core::identity::Identity {
        subject: "dora".into(),
        groups: vec!["dba".into()],
        ..Default::default()
    };
    let mut wire = Wire::new(Some(identity));
    wire.first_request(&query("SELECT * FROM shop.customers"));
    let description = customers_description(0);
    let row = data_row(&[
        Some(b"1"),
        Some(b"alice@example.com"),
        Some(b"4111 1111 1111 1111"),
        Some(b"536-22-1234"),
        Some(b"nothing"),
    ]);
    let answer = select_answer(&description, &[row], b"SELECT 1");
    assert_eq!(wire.server(&answer), answer);
    let masking = wire.statements()[0].masking.clone().unwrap();
    assert!(masking.exempt);
    assert_eq!(masking.rules.len(), 3);
}

#[test]
fn a_large_value_streams_through_masked_with_its_length_kept() {
    let config = EngineConfig {
        max_buffered_bytes: 16 * 1024,
        ..EngineConfig::default()
    };
    for byte_by_byte in [false, true] {
        let mut wire = Wire::with(config.clone(), None, byte_by_byte);
        wire.first_request(&query("SELECT ssn, note FROM shop.customers"));
        let description = row_description(&[
            ("card_number", CUSTOMERS_OID, 3, TEXT, 0),
            ("note", CUSTOMERS_OID, 5, TEXT, 0),
        ]);
        let big = vec![b'7'; 40_000];
        let note = b"mail bob@example.org".to_vec();
        let row = data_row(&[Some(&big), Some(&note)]);
        let answer = select_answer(&description, std::slice::from_ref(&row), b"SELECT 1");
        let to_client = wire.server(&answer);
        assert_eq!(to_client.len(), answer.len());
        let mut masked_big = vec![b'*'; 40_000 - 4];
        masked_big.extend_from_slice(b"7777");
        let masked_note = format!("mail {}", "*".repeat("bob@example.org".len()));
        let expected_row = data_row(&[Some(&masked_big), Some(masked_note.as_bytes())]);
        assert_eq!(expected_row.len(), row.len());
        assert!(
            to_client
                .windows(expected_row.len())
                .any(|w| w == expected_row.as_slice()),
            "streamed row not masked (byte_by_byte {byte_by_byte})"
        );
        let masking = wire.statements()[0].masking.clone().unwrap();
        assert_eq!(masking.rules["customer-card"], 1);
        assert_eq!(masking.detectors["email"], 1);
    }
}

#[test]
fn a_large_detector_only_value_is_starred_whole() {
    let config = EngineConfig {
        max_buffered_bytes: 16 * 1024,
        ..EngineConfig::default()
    };
    let mut wire = Wire::with(config, None, false);
    wire.first_request(&query("SELECT note FROM shop.customers"));
    let description = row_description(&[("note", CUSTOMERS_OID, 5, TEXT, 0)]);
    // Over the demo's 64 KiB scan cap.
    let big = vec![b'x'; 70_000];
    let answer = select_answer(&description, &[data_row(&[Some(&big)])], b"SELECT 1");
    let to_client = wire.server(&answer);
    assert_eq!(to_client.len(), answer.len());
    assert!(!to_client.windows(100).any(|w| w == [b'x'; 100]));
    assert_eq!(wire.statements()[0].masking.clone().unwrap().over_cap, 1);
}

#[test]
fn malformed_server_messages_end_the_session_cleanly() {
    let mut wire = Wire::new(None);
    wire.first_request(&query("SELECT 1"));
    // A RowDescription that lies about its field count, then a DataRow with
    // a value length past its end.
    let bad_description = encode_backend(&[BackendMessage::RowDescription {
        body: b"\x00\x05abc",
    }]);
    let out = wire.server(&bad_description);
    assert_eq!(
        out, bad_description,
        "an unreadable description masks by detector only"
    );
    let mut bad_row = vec![b'D'];
    bad_row.extend_from_slice(&10u32.to_be_bytes());
    bad_row.extend_from_slice(&[0, 1, 0, 0, 0, 9, b'a', b'b']);
    let verdict = wire.session.on_backend(&bad_row, 99_999);
    assert!(verdict.close_connection);
    let bytes = verdict.bytes(&bad_row).to_vec();
    assert!(String::from_utf8_lossy(&bytes).contains("08P01"));
}

#[test]
fn a_row_with_bytes_after_its_last_value_ends_the_session_unforwarded() {
    let mut wire = Wire::new(None);
    wire.first_request(&query("SELECT notes FROM customers"));
    let description = row_description(&[("notes", 0, 0, TEXT, 0)]);
    let _ = wire.server(&encode_backend(&[BackendMessage::RowDescription {
        body: &description,
    }]));
    let mut bad_row = data_row(&[Some(b"card 4111 1111 1111 1111")]);
    bad_row.extend_from_slice(b"tail");
    let len = u32::try_from(bad_row.len() - 1).unwrap();
    bad_row[1..5].copy_from_slice(&len.to_be_bytes());
    let verdict = wire.session.on_backend(&bad_row, 99_999);
    assert!(verdict.close_connection);
    let bytes = String::from_utf8_lossy(verdict.bytes(&bad_row)).into_owned();
    assert!(bytes.contains("08P01"), "{bytes}");
    assert!(!bytes.contains("4111"), "{bytes}");
}

#[test]
fn a_failed_lookup_falls_back_to_column_names() {
    let mut wire = Wire::new(None);
    let request = query("SELECT ssn AS x, ssn FROM shop.customers");
    let to_server = wire.client(&request);
    assert!(to_server.ends_with(&request));
    let refused = encode_backend(&[
        BackendMessage::ErrorResponse {
            fields: vec![
                (b'S', b"ERROR".as_slice()),
                (b'C', b"42501"),
                (b'M', b"permission denied"),
            ],
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]);
    assert_eq!(wire.server(&refused), b"");
    let description = row_description(&[("x", 1, 4, TEXT, 0), ("ssn", 1, 4, TEXT, 0)]);
    let to_client = wire.server(&select_answer(
        &description,
        &[data_row(&[Some(b"secret-1"), Some(b"secret-2")])],
        b"SELECT 1",
    ));
    let expected_row = data_row(&[Some(b"secret-1"), Some(b"****")]);
    assert!(
        to_client
            .windows(expected_row.len())
            .any(|w| w == expected_row.as_slice())
    );
}

#[test]
fn configuration_errors_name_their_path() {
    let err = |json: &str| {
        MaskingPolicy::from_json(json.as_bytes())
            .unwrap_err()
            .to_string()
    };
    assert!(
        err(r#"{"rules": [{"table": "t", "column": "c", "style": "blur"}]}"#)
            .starts_with("rules[0].style: unknown style")
    );
    assert!(err(r#"{"rules": [{"column": "c", "style": "redact"}]}"#).starts_with("rules[0]:"));
    assert!(
        err(r#"{"rules": [{"column_pattern": "", "style": "redact"}]}"#)
            .starts_with("rules[0].column_pattern:")
    );
    assert!(
        err(r#"{"rules": [{"table": "a.b", "column": "c", "style": "hash"}]}"#)
            .starts_with("rules[0].style: \"hash\" needs")
    );
    assert!(
        err(r#"{"rules": [{"table": "a\\b", "column": "c", "style": "redact"}]}"#)
            .starts_with("rules[0].table:")
    );
    assert!(err(r#"{"masker": {"over_cap": "drop"}}"#).starts_with("masker.over_cap:"));
    assert!(err(r#"{"exempt": {}}"#).starts_with("exempt:"));
    assert!(err(r#"{"exempt": {"groups": [""]}}"#).starts_with("exempt.groups"));
    assert!(err(r#"{"rulez": []}"#).contains("rulez"));
}

#[test]
fn the_lookup_quotes_names_and_covers_views() {
    let policy = MaskingPolicy::from_json(
        br#"{"rules": [{"table": "o'neil.t", "column": "c", "style": "redact"}]}"#,
    )
    .unwrap();
    let sql = catalog::lookup_sql(&policy).unwrap();
    assert!(sql.contains("('o''neil','t','c',0)"), "{sql}");
    assert!(sql.contains("pg_rewrite") && sql.contains("pg_depend"));
    assert!(catalog::lookup_sql(&MaskingPolicy::from_json(b"{}").unwrap()).is_none());
}

#[test]
fn before_the_lookup_answers_table_rules_match_by_column_name() {
    let mut masker = SessionMasker::new(demo_policy());
    masker.set_exempt(false);
    masker.on_frontend(
        &FrontendMessage::Query {
            sql: b"SELECT ssn FROM customers",
        },
        &mut NoNames,
    );
    let description = row_description(&[("ssn", 1, 1, TEXT, 0)]);
    assert_eq!(
        masker.on_backend(&BackendMessage::RowDescription { body: &description }),
        Disposition::Pass
    );
    let action = masker.on_backend(&BackendMessage::DataRow {
        values: vec![Some(b"no pattern here")],
    });
    assert_eq!(action, Disposition::Replace(data_row(&[Some(b"****")])));
    assert_eq!(masker.take_counts().unwrap().rules["customer-ssn"], 1);
}

#[test]
fn garbage_and_truncated_server_messages_never_panic() {
    // Well-formed frames whose bodies are random, then random bytes: each
    // session ends with a clean error or carries on, never panics.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let mut wire = Wire::new(None);
        wire.first_request(&query("SELECT * FROM customers"));
        let mut bytes = Vec::new();
        for _ in 0..8 {
            let tag = b"TDECANdHc"[(next() % 9) as usize];
            let len = (next() % 64) as usize;
            let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            bytes.push(tag);
            bytes.extend_from_slice(&((len + 4) as u32).to_be_bytes());
            bytes.extend_from_slice(&body);
        }
        if round % 2 == 0 {
            bytes.extend((0..32).map(|_| next() as u8));
        }
        for chunk in bytes.chunks(1 + round % 7) {
            let _ = wire.session.on_backend(chunk, 50_000);
        }
        assert!(wire.session.buffered_bytes() < 64 * 1024);
    }
}

/// Names for a masker driven without a session: none is tracked.
struct NoNames;

impl Names for NoNames {
    fn statement_shape(&self, _: &[u8]) -> Option<Shape> {
        None
    }
    fn portal_shape(&self, _: &[u8]) -> Option<Shape> {
        None
    }
    fn set_statement_shape(&mut self, _: &[u8], _: Shape) {}
    fn set_portal_shape(&mut self, _: &[u8], _: Shape) {}
    fn forget_statement_lineages(&mut self) {}
    fn forget_portal_shapes(&mut self) {}
}
