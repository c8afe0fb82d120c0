//! The record sink's decisions: the HTTP filter on the record listener takes
//! one batch per request and answers it, and the access log writes each record
//! of the batch as its own line.
//!
//! The glue asks [`on_headers`] and [`on_body`] what to do at each step, and
//! hands the whole body to [`accept`], which says what to store in filter
//! state or why the batch is refused.

use super::config::SinkConfig;

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
/// Every line must look like one JSON object (`{` … `}`) of at most
/// `max_record_bytes`, so each becomes exactly one access-log line.
pub fn accept<'a>(body: &'a [u8], config: &SinkConfig) -> Result<Batch<'a>, BatchRefusal> {
    if body.len() > config.max_batch_bytes {
        return Err(BatchRefusal::BatchTooLarge);
    }
    let records = body.strip_suffix(b"\n").unwrap_or(body);
    let mut count = 0;
    for line in records.split(|b| *b == b'\n') {
        if line.len() > config.max_record_bytes {
            return Err(BatchRefusal::RecordTooLarge);
        }
        match (line.first(), line.last()) {
            (Some(b'{'), Some(b'}')) => count += 1,
            _ => return Err(BatchRefusal::NotOneRecord),
        }
    }
    Ok(Batch { records, count })
}

/// An accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    /// What to store: the records joined by `\n`, no trailing newline.
    pub records: &'a [u8],
    /// How many records.
    pub count: usize,
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
}
