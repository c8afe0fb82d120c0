//! The record sink's decisions: the HTTP filter on the record listener takes
//! one batch per request and answers it, and the access log writes each record
//! of the batch as its own line.
//!
//! The glue asks [`on_headers`] and [`on_body`] what to do at each step, and
//! hands the whole body to [`accept`], which says what to store in filter
//! state or why the batch is refused. [`request_headers`] and
//! [`request_body`] run those steps over a [`SinkHost`], so the Wasm sink and
//! the native one make the same host calls in the same order.

use super::config::SinkConfig;

/// Filter-state key the sink stores an accepted batch under, without the
/// `wasm.` prefix proxy-wasm adds (the native build adds it itself), so both
/// builds' record listeners log with `%FILTER_STATE(wasm.gatehouse_record:PLAIN)%`.
pub const RECORD_STATE_KEY: &str = "gatehouse_record";

/// Counter of the sink's (and the audit service's) failed host calls.
pub const HOST_ERRORS_METRIC: &str = "gatehouse_records_host_errors";

/// Status for a batch whose records are stored (the access log writes them).
pub const STORED: u32 = 204;
/// Status for a request that is not a batch of records.
pub const BAD_BATCH: u32 = 400;
/// Status for a body past the sink's limit.
pub const TOO_LARGE: u32 = 413;
/// Status when the host failed to hand over the body or store the records;
/// the service retries the batch.
pub const HOST_FAILED: u32 = 500;

/// What the sink does at one step of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkStep {
    /// Hold the request and wait for more of it.
    Wait,
    /// The body is complete: read it and [`accept`] it.
    ReadBody,
    /// Answer with this status now.
    Answer(u32),
}

/// Why the sink refuses a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchRefusal {
    #[error("batch too large")]
    BatchTooLarge,
    #[error("record too large")]
    RecordTooLarge,
    #[error("a line is not one JSON object")]
    NotOneRecord,
}

impl BatchRefusal {
    /// The status the sink answers with.
    pub fn status(self) -> u32 {
        BAD_BATCH
    }
}

/// The request's headers arrived. A request without a body carries no
/// records; any other is held, so the route behind this filter never answers
/// a record.
pub fn on_headers(end_of_stream: bool) -> SinkStep {
    if end_of_stream {
        SinkStep::Answer(BAD_BATCH)
    } else {
        SinkStep::Wait
    }
}

/// `body_size` bytes of the body have arrived.
pub fn on_body(config: &SinkConfig, body_size: usize, end_of_stream: bool) -> SinkStep {
    if end_of_stream {
        SinkStep::ReadBody
    } else if body_size > config.max_batch_bytes {
        SinkStep::Answer(TOO_LARGE)
    } else {
        SinkStep::Wait
    }
}

/// The records of a batch body to store in filter state: its lines without
/// the final newline, if any (the access-log format adds the last line's).
/// Every line must be one brace-delimited object ([`is_one_object`]) of at
/// most `max_record_bytes`, so each becomes exactly one access-log line.
pub fn accept<'a>(body: &'a [u8], config: &SinkConfig) -> Result<Batch<'a>, BatchRefusal> {
    if body.len() > config.max_batch_bytes {
        return Err(BatchRefusal::BatchTooLarge);
    }
    let records = body.strip_suffix(b"\n").unwrap_or(body);
    let mut count = 0;
    for line in lines(records) {
        if line.len() > config.max_record_bytes {
            return Err(BatchRefusal::RecordTooLarge);
        }
        if !is_one_object(line) {
            return Err(BatchRefusal::NotOneRecord);
        }
        count += 1;
    }
    Ok(Batch { records, count })
}

/// The `\n`-separated lines of `records`, found with `memchr`: the sink reads
/// every byte of every record, in the same Envoy as the traffic it records.
fn lines(records: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(records);
    std::iter::from_fn(move || {
        let remaining = rest?;
        match memchr::memchr(b'\n', remaining) {
            Some(at) => {
                let (line, after) = remaining.split_at(at);
                rest = after.get(1..);
                Some(line)
            }
            None => {
                rest = None;
                Some(remaining)
            }
        }
    })
}

/// Whether `line` is one brace-delimited object: it opens with `{`, and the
/// `{` … `}` outside JSON strings balance for the first time at its last
/// byte, so two objects side by side (`{…} {…}`) or a brace left open never
/// pass as one record. One pass over the bytes; the JSON inside is the
/// producer's (gatehouse's own serializer). The sink reads every byte of
/// every record, in the same Envoy as the traffic it records, so the pass
/// branches on its state only at the few bytes that matter (quotes,
/// backslashes, braces, brackets).
fn is_one_object(line: &[u8]) -> bool {
    if line.first() != Some(&b'{') {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (at, &byte) in line.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        if !matches!(byte, b'"' | b'\\' | b'{' | b'}' | b'[' | b']') {
            continue;
        }
        match (in_string, byte) {
            (true, b'\\') => escaped = true,
            (true, b'"') => in_string = false,
            (false, b'"') => in_string = true,
            (false, b'{' | b'[') => depth += 1,
            (false, b'}' | b']') => {
                let Some(left) = depth.checked_sub(1) else {
                    return false;
                };
                depth = left;
                if depth == 0 {
                    return at + 1 == line.len() && byte == b'}';
                }
            }
            _ => {}
        }
    }
    false
}

/// An accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    /// What to store: the records joined by `\n`, no trailing newline.
    pub records: &'a [u8],
    /// How many records.
    pub count: usize,
}

/// The host calls of a sink request. A failed call is logged and counted by
/// the host before it reports the failure here.
pub trait SinkHost {
    /// The request body so far, whole; `None` when the host failed to hand
    /// it over.
    fn body(&mut self) -> Option<Vec<u8>>;
    /// Stores an accepted batch's records in filter state
    /// ([`RECORD_STATE_KEY`]); `false` when the host failed to.
    fn store(&mut self, records: &[u8]) -> bool;
    /// Answers the request with `status` and no body.
    fn answer(&mut self, status: u32);
    /// Says why a batch was refused (the host's log).
    fn refused(&mut self, why: BatchRefusal);
}

/// Where a request is after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Held for more of it (a body hook keeps the chunk).
    Waiting,
    /// Answered; nothing of it goes further.
    Answered,
}

/// The request's headers arrived.
pub fn request_headers(host: &mut impl SinkHost, end_of_stream: bool) -> Held {
    run(host, on_headers(end_of_stream))
}

/// A body chunk arrived; `body_size` bytes of the body are there so far.
pub fn request_body(
    host: &mut impl SinkHost,
    config: &SinkConfig,
    body_size: usize,
    end_of_stream: bool,
) -> Held {
    match on_body(config, body_size, end_of_stream) {
        SinkStep::ReadBody => {
            let status = store(host, config, body_size);
            host.answer(status);
            Held::Answered
        }
        step => run(host, step),
    }
}

fn run(host: &mut impl SinkHost, step: SinkStep) -> Held {
    match step {
        SinkStep::Answer(status) => {
            host.answer(status);
            Held::Answered
        }
        SinkStep::Wait | SinkStep::ReadBody => Held::Waiting,
    }
}

/// Stores the complete body's records, or says why not, as a status. A body
/// the host handed over short is a host failure (retried), never a refusal
/// (which would drop the records).
fn store(host: &mut impl SinkHost, config: &SinkConfig, body_size: usize) -> u32 {
    let Some(body) = host.body() else {
        return HOST_FAILED;
    };
    if body.len() != body_size {
        return HOST_FAILED;
    }
    match accept(&body, config) {
        Ok(batch) if host.store(batch.records) => STORED,
        Ok(_) => HOST_FAILED,
        Err(why) => {
            host.refused(why);
            why.status()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: SinkConfig = SinkConfig {
        max_record_bytes: 100,
        max_batch_bytes: 1_000,
    };

    #[test]
    fn a_request_without_a_body_is_refused_and_any_other_is_held() {
        assert_eq!(on_headers(true), SinkStep::Answer(400));
        assert_eq!(on_headers(false), SinkStep::Wait);
    }

    #[test]
    fn a_body_is_held_until_complete_unless_it_outgrows_the_limit() {
        assert_eq!(on_body(&CONFIG, 1_000, false), SinkStep::Wait);
        assert_eq!(on_body(&CONFIG, 1_001, false), SinkStep::Answer(413));
        assert_eq!(on_body(&CONFIG, 10, true), SinkStep::ReadBody);
        // A complete body over the limit is read and refused by `accept`.
        assert_eq!(on_body(&CONFIG, 1_001, true), SinkStep::ReadBody);
        assert_eq!(
            accept(&[b'{'; 1_001], &CONFIG),
            Err(BatchRefusal::BatchTooLarge)
        );
    }

    #[test]
    fn the_sink_stores_the_records_of_a_batch_one_per_line() {
        let got = accept(br#"{"a":1}"#, &CONFIG).unwrap();
        assert_eq!((got.records, got.count), (&br#"{"a":1}"#[..], 1));
        let got = accept(b"{\"a\":1}\n{\"b\":2}\n{}", &CONFIG).unwrap();
        assert_eq!(got.count, 3);
        // Braces inside strings, escaped quotes, nested objects and arrays.
        let got = accept(br#"{"a":"}{\"}","b":[{"c":{}}],"d":"\\"}"#, &CONFIG).unwrap();
        assert_eq!(got.count, 1);
        let got = accept(b"{\"a\":1}\n{\"b\":2}\n", &CONFIG).unwrap();
        assert_eq!(
            (got.records, got.count),
            (&b"{\"a\":1}\n{\"b\":2}"[..], 2),
            "a final newline is allowed and not stored"
        );
    }

    #[test]
    fn the_sink_refuses_a_batch_with_any_line_that_is_not_one_record() {
        let config = SinkConfig {
            max_record_bytes: 10,
            max_batch_bytes: 30,
        };
        for (bad, why) in [
            (&b""[..], BatchRefusal::NotOneRecord),
            (b"\n", BatchRefusal::NotOneRecord),
            (b"[1]", BatchRefusal::NotOneRecord),
            (b"{\"a\":\n1}", BatchRefusal::NotOneRecord),
            (b"{}\n\n{}", BatchRefusal::NotOneRecord),
            (b"{}\r\n{}", BatchRefusal::NotOneRecord),
            (b"{} {}", BatchRefusal::NotOneRecord),
            (b"{}}", BatchRefusal::NotOneRecord),
            (b"{{}", BatchRefusal::NotOneRecord),
            (b"{\"a\":\"}\"", BatchRefusal::NotOneRecord),
            (b"{\"a\":\"12345678\"}", BatchRefusal::RecordTooLarge),
            (
                b"{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
                BatchRefusal::BatchTooLarge,
            ),
        ] {
            assert_eq!(
                accept(bad, &config),
                Err(why),
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(why.status(), 400);
        }
    }

    /// The scan as it was: a branch on its state at every byte.
    fn is_one_object_bytewise(line: &[u8]) -> bool {
        if line.first() != Some(&b'{') {
            return false;
        }
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for (at, byte) in line.iter().enumerate() {
            if in_string {
                match (escaped, byte) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    let Some(left) = depth.checked_sub(1) else {
                        return false;
                    };
                    depth = left;
                    if depth == 0 {
                        return at + 1 == line.len() && *byte == b'}';
                    }
                }
                _ => {}
            }
        }
        false
    }

    proptest::proptest! {
        /// The scan and the one it replaced agree on any
        /// line made of the bytes that matter (and some that do not),
        /// well-formed records included.
        #[test]
        fn the_scan_agrees_with_reading_every_byte(
            line in proptest::collection::vec(
                proptest::sample::select(b"{}[]\"\\\\a:,\n ".to_vec()), 0..40),
            key in "[a-z\\\\\"{}]{0,8}",
        ) {
            proptest::prop_assert_eq!(is_one_object(&line), is_one_object_bytewise(&line));
            let record = serde_json::json!({ key.clone(): [key, {"n": 1}] }).to_string();
            proptest::prop_assert!(is_one_object(record.as_bytes()));
            let two = format!("{record} {record}");
            proptest::prop_assert!(!is_one_object(two.as_bytes()));
            let lines: Vec<&[u8]> = lines(&line).collect();
            let split: Vec<&[u8]> = line.split(|b| *b == b'\n').collect();
            proptest::prop_assert_eq!(lines, split);
        }
    }

    /// A host that records the sink's calls; `body` is what it hands over
    /// (`None`: the read fails), `stores` whether storing succeeds.
    #[derive(Default)]
    struct FakeHost {
        body: Option<Vec<u8>>,
        store_fails: bool,
        stored: Vec<Vec<u8>>,
        answers: Vec<u32>,
        refusals: Vec<BatchRefusal>,
    }

    impl SinkHost for FakeHost {
        fn body(&mut self) -> Option<Vec<u8>> {
            self.body.clone()
        }
        fn store(&mut self, records: &[u8]) -> bool {
            if self.store_fails {
                return false;
            }
            self.stored.push(records.to_vec());
            true
        }
        fn answer(&mut self, status: u32) {
            self.answers.push(status);
        }
        fn refused(&mut self, why: BatchRefusal) {
            self.refusals.push(why);
        }
    }

    fn handing_over(body: &[u8]) -> FakeHost {
        FakeHost {
            body: Some(body.to_vec()),
            ..FakeHost::default()
        }
    }

    #[test]
    fn a_complete_batch_is_stored_then_answered_204() {
        let body = b"{\"a\":1}\n{\"b\":2}\n";
        let mut host = handing_over(body);
        assert_eq!(request_headers(&mut host, false), Held::Waiting);
        assert_eq!(
            request_body(&mut host, &CONFIG, body.len(), false),
            Held::Waiting
        );
        assert!(host.answers.is_empty() && host.stored.is_empty());
        assert_eq!(
            request_body(&mut host, &CONFIG, body.len(), true),
            Held::Answered
        );
        assert_eq!(host.stored, vec![b"{\"a\":1}\n{\"b\":2}".to_vec()]);
        assert_eq!(host.answers, vec![STORED]);
    }

    #[test]
    fn a_refused_batch_stores_nothing_and_says_why() {
        for (body, status, why) in [
            (
                &b"{}\nnot json"[..],
                BAD_BATCH,
                Some(BatchRefusal::NotOneRecord),
            ),
            (&b""[..], BAD_BATCH, Some(BatchRefusal::NotOneRecord)),
            (
                &[b'{'; 1_001][..],
                BAD_BATCH,
                Some(BatchRefusal::BatchTooLarge),
            ),
        ] {
            let mut host = handing_over(body);
            assert_eq!(
                request_body(&mut host, &CONFIG, body.len(), true),
                Held::Answered
            );
            assert!(host.stored.is_empty());
            assert_eq!(host.answers, vec![status]);
            assert_eq!(host.refusals, why.into_iter().collect::<Vec<_>>());
        }
        // Past the limit before the end: refused without reading it.
        let mut host = FakeHost::default();
        assert_eq!(
            request_body(&mut host, &CONFIG, 1_001, false),
            Held::Answered
        );
        assert_eq!(host.answers, vec![TOO_LARGE]);
        // No body at all.
        let mut host = FakeHost::default();
        assert_eq!(request_headers(&mut host, true), Held::Answered);
        assert_eq!(host.answers, vec![BAD_BATCH]);
        assert!(host.stored.is_empty());
    }

    #[test]
    fn a_host_failure_is_answered_500_so_the_batch_is_resent_not_dropped() {
        // The body could not be read.
        let mut host = FakeHost::default();
        request_body(&mut host, &CONFIG, 7, true);
        assert_eq!(host.answers, vec![HOST_FAILED]);
        // The body came short: not refused as a bad batch.
        let mut host = handing_over(b"{}");
        request_body(&mut host, &CONFIG, 7, true);
        assert_eq!(host.answers, vec![HOST_FAILED]);
        assert!(host.refusals.is_empty());
        // Storing failed.
        let mut host = FakeHost {
            store_fails: true,
            ..handing_over(b"{}")
        };
        request_body(&mut host, &CONFIG, 2, true);
        assert_eq!(host.answers, vec![HOST_FAILED]);
    }
}
