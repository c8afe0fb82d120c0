//! Postgres wire messages for benches that drive the engine without a
//! server: encoders for the server's answers, and a session logged in past
//! the masker's catalog lookup.

use anyhow::{Result, anyhow};
use gatehouse_postgres::masking::{MaskingPolicy, SessionMasker};
use gatehouse_postgres::protocol::{BackendMessage, FrontendMessage, StartupPacket};
use gatehouse_postgres::{ConnectionInfo, EngineConfig, Session};
use std::sync::Arc;

/// The server's messages, encoded in order.
pub fn encode(msgs: &[BackendMessage<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    msgs.iter().for_each(|m| m.encode(&mut out));
    out
}

/// A RowDescription body: `(name, table OID, attribute number, type OID)`
/// per column, in text format.
pub fn row_description(fields: &[(&str, u32, i16, u32)]) -> Vec<u8> {
    let mut body = (fields.len() as i16).to_be_bytes().to_vec();
    for (name, table, attnum, type_oid) in fields {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&table.to_be_bytes());
        body.extend_from_slice(&attnum.to_be_bytes());
        body.extend_from_slice(&type_oid.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
    }
    body
}

/// The answer to the masker's catalog lookup: `(attnum, rule index,
/// column)` of table `relname` (`oid`).
pub fn catalog_answer(oid: u32, relname: &str, columns: &[(&str, &str, &str)]) -> Vec<u8> {
    let description = row_description(&[
        ("relid", 0, 0, 20),
        ("attnum", 0, 0, 21),
        ("min", 0, 0, 23),
        ("relname", 0, 0, 19),
        ("attname", 0, 0, 19),
    ]);
    let mut out = encode(&[BackendMessage::RowDescription { body: &description }]);
    let oid = oid.to_string();
    for (attnum, rule, column) in columns {
        BackendMessage::DataRow {
            values: vec![
                Some(oid.as_bytes()),
                Some(attnum.as_bytes()),
                Some(rule.as_bytes()),
                Some(relname.as_bytes()),
                Some(column.as_bytes()),
            ],
        }
        .encode(&mut out);
    }
    let tag = format!("SELECT {}", columns.len());
    out.extend(encode(&[
        BackendMessage::CommandComplete {
            tag: tag.as_bytes(),
        },
        BackendMessage::ReadyForQuery { status: b'I' },
    ]));
    out
}

/// A simple Query message.
pub fn query(sql: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrontendMessage::Query { sql }.encode(&mut out);
    out
}

/// A logged-in session that sent `query` and read `answer`, with `masking`
/// when given (its catalog lookup answered with `catalog`).
pub fn session(
    masking: Option<&[u8]>,
    catalog: &[u8],
    query: &[u8],
    answer: &[u8],
) -> Result<Session> {
    let masked = masking.is_some();
    let mut session = Session::new(
        Arc::new(EngineConfig::default()),
        ConnectionInfo::default(),
        0,
    );
    if let Some(masking) = masking {
        let policy = MaskingPolicy::from_json(masking)
            .map_err(|error| anyhow!("the masking does not compile: {error}"))?;
        session.set_masker(SessionMasker::new(Arc::new(policy)));
    }
    let mut startup = Vec::new();
    StartupPacket::Startup {
        version: 3 << 16,
        params: vec![("user", "app"), ("database", "shop")],
    }
    .encode(&mut startup);
    let _ = session.on_frontend(&startup, 0);
    let _ = session.on_backend(
        &encode(&[
            BackendMessage::Authentication { code: 0, data: b"" },
            BackendMessage::ReadyForQuery { status: b'I' },
        ]),
        0,
    );
    let _ = session.on_frontend(query, 0);
    if masked {
        let _ = session.on_backend(catalog, 0);
    }
    let _ = session.on_backend(answer, 0);
    session.take_records();
    Ok(session)
}
