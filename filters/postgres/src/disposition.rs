//! What becomes of one message's bytes: the one answer the engine's hooks
//! give (the session's handling, enforcement, masking, the engine's own
//! requests).

/// What to do with one complete (or streamed) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Forward it as it is.
    Pass,
    /// Forward these bytes (whole messages, tag and length included) instead.
    Replace(Vec<u8>),
    /// Forward nothing: the message answers a request the engine sent itself,
    /// or the engine has answered in its place.
    Drop,
    /// The message is the client's, but a result-size limit withholds it:
    /// the engine still follows it (for its records), the client does not
    /// get it.
    Withhold,
}
