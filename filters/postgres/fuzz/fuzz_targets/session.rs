//! Feeds arbitrary bytes to a session: the first byte of each step picks the
//! direction and chunk length. The engine must never panic and must keep its
//! buffers within the configured bounds.
#![no_main]

use gatehouse_postgres::{CloseReason, ConnectionInfo, EngineConfig, Session};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let config = EngineConfig {
        max_buffered_bytes: 16 * 1024,
        ..EngineConfig::default()
    };
    let bound = 2 * (config.max_buffered_bytes + config.max_statement_bytes + 8 * 1024);
    let mut session = Session::new(Arc::new(config), ConnectionInfo::default(), 0);
    let mut rest = data;
    let mut now = 0;
    while let [control, tail @ ..] = rest {
        let len = usize::from(control & 0x7f).min(tail.len());
        let (chunk, after) = tail.split_at(len);
        let _ = if control & 0x80 == 0 {
            session.on_frontend(chunk, now)
        } else {
            session.on_backend(chunk, now)
        };
        assert!(session.buffered_bytes() <= bound);
        let _ = session.take_records();
        rest = after;
        now += 1;
    }
    session.on_close(CloseReason::Unknown, now);
});
