//! PostgreSQL v3 wire messages: tags, typed decoding and encoding.
//!
//! Follows <https://www.postgresql.org/docs/current/protocol-message-formats.html>.
//! Decoding borrows from the message body and never panics; encoding writes a
//! complete message (tag, length, body) into a buffer.

// Frontend (client → server) tags.
pub const QUERY_TAG: u8 = b'Q';
pub const PARSE_TAG: u8 = b'P';
pub const BIND_TAG: u8 = b'B';
pub const DESCRIBE_TAG: u8 = b'D';
pub const EXECUTE_TAG: u8 = b'E';
pub const CLOSE_TAG: u8 = b'C';
pub const FLUSH_TAG: u8 = b'H';
pub const SYNC_TAG: u8 = b'S';
pub const TERMINATE_TAG: u8 = b'X';
pub const FUNCTION_CALL_TAG: u8 = b'F';
/// PasswordMessage, SASLInitialResponse, SASLResponse and GSSResponse share it.
pub const PASSWORD_TAG: u8 = b'p';
pub const COPY_FAIL_TAG: u8 = b'f';

// Shared by both directions.
pub const COPY_DATA_TAG: u8 = b'd';
pub const COPY_DONE_TAG: u8 = b'c';

// Backend (server → client) tags.
pub const AUTHENTICATION_TAG: u8 = b'R';
pub const PARAMETER_STATUS_TAG: u8 = b'S';
pub const BACKEND_KEY_DATA_TAG: u8 = b'K';
pub const READY_FOR_QUERY_TAG: u8 = b'Z';
pub const ROW_DESCRIPTION_TAG: u8 = b'T';
pub const DATA_ROW_TAG: u8 = b'D';
pub const COMMAND_COMPLETE_TAG: u8 = b'C';
pub const EMPTY_QUERY_RESPONSE_TAG: u8 = b'I';
pub const ERROR_RESPONSE_TAG: u8 = b'E';
pub const NOTICE_RESPONSE_TAG: u8 = b'N';
pub const PARSE_COMPLETE_TAG: u8 = b'1';
pub const BIND_COMPLETE_TAG: u8 = b'2';
pub const CLOSE_COMPLETE_TAG: u8 = b'3';
pub const NO_DATA_TAG: u8 = b'n';
pub const PORTAL_SUSPENDED_TAG: u8 = b's';
pub const PARAMETER_DESCRIPTION_TAG: u8 = b't';
pub const COPY_IN_RESPONSE_TAG: u8 = b'G';
pub const COPY_OUT_RESPONSE_TAG: u8 = b'H';
pub const COPY_BOTH_RESPONSE_TAG: u8 = b'W';
pub const NOTIFICATION_RESPONSE_TAG: u8 = b'A';
pub const FUNCTION_CALL_RESPONSE_TAG: u8 = b'V';
pub const NEGOTIATE_PROTOCOL_VERSION_TAG: u8 = b'v';

// Untagged startup-phase request codes.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Protocol 3.0; 3.2 is `(3 << 16) | 2`.
pub const PROTOCOL_3_0: u32 = 3 << 16;

/// The server's limit on startup packets (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET_LENGTH: usize = 10_000;
/// Largest message length PostgreSQL accepts (1 GiB - 1).
pub const MAX_MESSAGE_LENGTH: usize = 0x3fff_ffff;

/// Why bytes do not form a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body ended before a field did.
    #[error("{message}: message body too short")]
    Truncated { message: &'static str },
    /// A string field had no NUL terminator.
    #[error("{message}: unterminated string")]
    UnterminatedString { message: &'static str },
    /// Bytes were left after the last field.
    #[error("{message}: trailing bytes after last field")]
    TrailingBytes { message: &'static str },
    /// A count or length field is negative or inconsistent.
    #[error("{message}: invalid {field}")]
    BadField {
        message: &'static str,
        field: &'static str,
    },
    /// The tag is not a message this direction may send.
    #[error("unknown message type {}", tag_name(*.tag))]
    UnknownTag { tag: u8 },
    /// The startup packet's code or protocol version is not supported.
    #[error("unsupported startup request code {code} (protocol {}.{})", .code >> 16, .code & 0xffff)]
    UnknownStartupCode { code: u32 },
    /// The length field is outside what the message type allows.
    #[error("invalid length {length} for message type {}", tag_name(*.tag))]
    BadLength { tag: u8, length: usize },
}

/// A printable name for a tag byte: `'Q'` or `0x00`.
pub fn tag_name(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}

/// Cursor over a message body.
struct Reader<'a> {
    buf: &'a [u8],
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], message: &'static str) -> Self {
        Self { buf, message }
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(DecodeError::Truncated {
            message: self.message,
        })?;
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    /// A count field, checked against the bytes left (each element needs at least
    /// `min_element` bytes), so a hostile count cannot drive a large allocation.
    fn count16(&mut self, field: &'static str, min_element: usize) -> Result<usize, DecodeError> {
        let n = self.i16()?;
        let n = usize::try_from(n).map_err(|_| DecodeError::BadField {
            message: self.message,
            field,
        })?;
        if n.saturating_mul(min_element) > self.buf.len() {
            return Err(DecodeError::BadField {
                message: self.message,
                field,
            });
        }
        Ok(n)
    }
    fn cstr(&mut self) -> Result<&'a str, DecodeError> {
        let raw = self.cbytes()?;
        std::str::from_utf8(raw).map_err(|_| DecodeError::BadField {
            message: self.message,
            field: "string encoding",
        })
    }
    fn cbytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString {
                message: self.message,
            })?;
        let s = self.bytes(end)?;
        self.bytes(1)?;
        Ok(s)
    }
    /// A length-prefixed value where -1 means NULL.
    fn nullable(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| DecodeError::BadField {
            message: self.message,
            field: "value length",
        })?;
        Ok(Some(self.bytes(len)?))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                message: self.message,
            })
        }
    }
}

/// Writes `tag`, a length placeholder, the body from `f`, then backfills the length.
pub fn write_message(out: &mut Vec<u8>, tag: u8, f: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    write_untagged(out, f);
}

/// Writes a length-prefixed body without a tag (startup-phase packets).
pub fn write_untagged(out: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) {
    let base = out.len();
    out.extend_from_slice(&[0; 4]);
    f(out);
    let len = u32::try_from(out.len() - base).unwrap_or(u32::MAX);
    if let Some(slot) = out.get_mut(base..base + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

fn put_cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

fn put_i16(out: &mut Vec<u8>, v: i16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_len_i16(out: &mut Vec<u8>, n: usize) {
    put_i16(out, i16::try_from(n).unwrap_or(i16::MAX));
}

fn put_nullable(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => put_i32(out, -1),
        Some(b) => {
            put_i32(out, i32::try_from(b.len()).unwrap_or(i32::MAX));
            out.extend_from_slice(b);
        }
    }
}

/// An untagged startup-phase packet (the body after the length word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket<'a> {
    /// StartupMessage: protocol version and `name=value` parameters.
    Startup {
        version: u32,
        params: Vec<(&'a str, &'a str)>,
    },
    SslRequest,
    GssEncRequest,
    /// CancelRequest: process id and secret key (4 bytes in 3.0, up to 256 in 3.2).
    Cancel {
        pid: i32,
        key: &'a [u8],
    },
}

impl<'a> StartupPacket<'a> {
    /// Decodes the packet body (after the 4-byte length).
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, "startup packet");
        let code = r.u32()?;
        match code {
            SSL_REQUEST_CODE => {
                r.finish()?;
                Ok(Self::SslRequest)
            }
            GSSENC_REQUEST_CODE => {
                r.finish()?;
                Ok(Self::GssEncRequest)
            }
            CANCEL_REQUEST_CODE => {
                let pid = r.i32()?;
                let key = r.rest();
                if key.len() < 4 || key.len() > 256 {
                    return Err(DecodeError::BadField {
                        message: "CancelRequest",
                        field: "key length",
                    });
                }
                Ok(Self::Cancel { pid, key })
            }
            v if v >> 16 == 3 => {
                let mut params = Vec::new();
                r.message = "StartupMessage";
                loop {
                    let name = r.cstr()?;
                    if name.is_empty() {
                        break;
                    }
                    let value = r.cstr()?;
                    params.push((name, value));
                }
                r.finish()?;
                Ok(Self::Startup { version: v, params })
            }
            other => Err(DecodeError::UnknownStartupCode { code: other }),
        }
    }

    /// Encodes the whole packet including its length word.
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_untagged(out, |b| match self {
            Self::SslRequest => b.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes()),
            Self::GssEncRequest => b.extend_from_slice(&GSSENC_REQUEST_CODE.to_be_bytes()),
            Self::Cancel { pid, key } => {
                b.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
                put_i32(b, *pid);
                b.extend_from_slice(key);
            }
            Self::Startup { version, params } => {
                b.extend_from_slice(&version.to_be_bytes());
                for (k, v) in params {
                    put_cstr(b, k.as_bytes());
                    put_cstr(b, v.as_bytes());
                }
                b.push(0);
            }
        });
    }
}

/// A tagged frontend (client → server) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    Query {
        sql: &'a [u8],
    },
    Parse {
        name: &'a [u8],
        sql: &'a [u8],
        param_types: Vec<u32>,
    },
    Bind(Bind<'a>),
    /// `kind` is `b'S'` (statement) or `b'P'` (portal).
    Describe {
        kind: u8,
        name: &'a [u8],
    },
    Execute {
        portal: &'a [u8],
        max_rows: i32,
    },
    Close {
        kind: u8,
        name: &'a [u8],
    },
    Flush,
    Sync,
    Terminate,
    FunctionCall(FunctionCall<'a>),
    /// PasswordMessage, SASLInitialResponse, SASLResponse or GSSResponse: the
    /// meaning depends on the authentication request, so the body stays raw.
    Password {
        data: &'a [u8],
    },
    CopyData {
        data: &'a [u8],
    },
    CopyDone,
    CopyFail {
        message: &'a [u8],
    },
}

/// Bind: parameters for a prepared statement, creating a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// Format codes: empty (all text), one (applies to all) or one per parameter.
    pub param_formats: Vec<i16>,
    pub params: Vec<Option<&'a [u8]>>,
    pub result_formats: Vec<i16>,
}

impl Bind<'_> {
    /// Whether parameter `i` is in binary format.
    pub fn param_is_binary(&self, i: usize) -> bool {
        match self.param_formats.as_slice() {
            [] => false,
            [one] => *one == 1,
            many => many.get(i) == Some(&1),
        }
    }
}

/// FunctionCall: the fast-path interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall<'a> {
    pub oid: u32,
    pub arg_formats: Vec<i16>,
    pub args: Vec<Option<&'a [u8]>>,
    pub result_format: i16,
}

fn formats(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<i16>, DecodeError> {
    let n = r.count16(field, 2)?;
    (0..n).map(|_| r.i16()).collect()
}

/// A DataRow body's values read in place, one at a time: the masking hot path
/// reads each row once, without collecting its values. Each value comes with
/// the offset in the body where its length field starts; after the last one,
/// [`DataRowValues::finish`] checks that the body ended there, as
/// [`BackendMessage::decode`] does.
pub struct DataRowValues<'a> {
    reader: Reader<'a>,
    body_len: usize,
    left: usize,
}

impl<'a> DataRowValues<'a> {
    pub fn new(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "DataRow");
        let left = reader.count16("column count", 4)?;
        Ok(Self {
            reader,
            body_len: body.len(),
            left,
        })
    }

    /// Errors when bytes follow the last value.
    pub fn finish(self) -> Result<(), DecodeError> {
        self.reader.finish()
    }
}

impl<'a> Iterator for DataRowValues<'a> {
    type Item = Result<(usize, Option<&'a [u8]>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let offset = self.body_len - self.reader.buf.len();
        Some(self.reader.nullable().map(|value| (offset, value)))
    }
}

fn values<'a>(
    r: &mut Reader<'a>,
    field: &'static str,
) -> Result<Vec<Option<&'a [u8]>>, DecodeError> {
    let n = r.count16(field, 4)?;
    (0..n).map(|_| r.nullable()).collect()
}

impl<'a> FrontendMessage<'a> {
    /// Decodes a tagged frontend message from its tag and body.
    pub fn decode(tag: u8, body: &'a [u8]) -> Result<Self, DecodeError> {
        let msg = match tag {
            QUERY_TAG => {
                let mut r = Reader::new(body, "Query");
                let sql = r.cbytes()?;
                r.finish()?;
                Self::Query { sql }
            }
            PARSE_TAG => {
                let mut r = Reader::new(body, "Parse");
                let name = r.cbytes()?;
                let sql = r.cbytes()?;
                let n = r.count16("parameter count", 4)?;
                let param_types = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
                r.finish()?;
                Self::Parse {
                    name,
                    sql,
                    param_types,
                }
            }
            BIND_TAG => {
                let mut r = Reader::new(body, "Bind");
                let portal = r.cbytes()?;
                let statement = r.cbytes()?;
                let param_formats = formats(&mut r, "parameter format count")?;
                let params = values(&mut r, "parameter count")?;
                let result_formats = formats(&mut r, "result format count")?;
                r.finish()?;
                Self::Bind(Bind {
                    portal,
                    statement,
                    param_formats,
                    params,
                    result_formats,
                })
            }
            DESCRIBE_TAG | CLOSE_TAG => {
                let what = if tag == DESCRIBE_TAG {
                    "Describe"
                } else {
                    "Close"
                };
                let mut r = Reader::new(body, what);
                let kind = r.u8()?;
                if kind != b'S' && kind != b'P' {
                    return Err(DecodeError::BadField {
                        message: what,
                        field: "target type",
                    });
                }
                let name = r.cbytes()?;
                r.finish()?;
                if tag == DESCRIBE_TAG {
                    Self::Describe { kind, name }
                } else {
                    Self::Close { kind, name }
                }
            }
            EXECUTE_TAG => {
                let mut r = Reader::new(body, "Execute");
                let portal = r.cbytes()?;
                let max_rows = r.i32()?;
                r.finish()?;
                Self::Execute { portal, max_rows }
            }
            FLUSH_TAG | SYNC_TAG | TERMINATE_TAG | COPY_DONE_TAG => {
                Reader::new(body, "message").finish()?;
                match tag {
                    FLUSH_TAG => Self::Flush,
                    SYNC_TAG => Self::Sync,
                    TERMINATE_TAG => Self::Terminate,
                    _ => Self::CopyDone,
                }
            }
            FUNCTION_CALL_TAG => {
                let mut r = Reader::new(body, "FunctionCall");
                let oid = r.u32()?;
                let arg_formats = formats(&mut r, "argument format count")?;
                let args = values(&mut r, "argument count")?;
                let result_format = r.i16()?;
                r.finish()?;
                Self::FunctionCall(FunctionCall {
                    oid,
                    arg_formats,
                    args,
                    result_format,
                })
            }
            PASSWORD_TAG => Self::Password { data: body },
            COPY_DATA_TAG => Self::CopyData { data: body },
            COPY_FAIL_TAG => {
                let mut r = Reader::new(body, "CopyFail");
                let message = r.cbytes()?;
                r.finish()?;
                Self::CopyFail { message }
            }
            other => return Err(DecodeError::UnknownTag { tag: other }),
        };
        Ok(msg)
    }

    /// The tag byte of this message.
    pub fn tag(&self) -> u8 {
        match self {
            Self::Query { .. } => QUERY_TAG,
            Self::Parse { .. } => PARSE_TAG,
            Self::Bind(_) => BIND_TAG,
            Self::Describe { .. } => DESCRIBE_TAG,
            Self::Execute { .. } => EXECUTE_TAG,
            Self::Close { .. } => CLOSE_TAG,
            Self::Flush => FLUSH_TAG,
            Self::Sync => SYNC_TAG,
            Self::Terminate => TERMINATE_TAG,
            Self::FunctionCall(_) => FUNCTION_CALL_TAG,
            Self::Password { .. } => PASSWORD_TAG,
            Self::CopyData { .. } => COPY_DATA_TAG,
            Self::CopyDone => COPY_DONE_TAG,
            Self::CopyFail { .. } => COPY_FAIL_TAG,
        }
    }

    /// Appends the whole message (tag, length, body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_message(out, self.tag(), |b| match self {
            Self::Query { sql } => put_cstr(b, sql),
            Self::Parse {
                name,
                sql,
                param_types,
            } => {
                put_cstr(b, name);
                put_cstr(b, sql);
                put_len_i16(b, param_types.len());
                for t in param_types {
                    b.extend_from_slice(&t.to_be_bytes());
                }
            }
            Self::Bind(bind) => {
                put_cstr(b, bind.portal);
                put_cstr(b, bind.statement);
                put_len_i16(b, bind.param_formats.len());
                bind.param_formats.iter().for_each(|f| put_i16(b, *f));
                put_len_i16(b, bind.params.len());
                bind.params.iter().for_each(|p| put_nullable(b, *p));
                put_len_i16(b, bind.result_formats.len());
                bind.result_formats.iter().for_each(|f| put_i16(b, *f));
            }
            Self::Describe { kind, name } | Self::Close { kind, name } => {
                b.push(*kind);
                put_cstr(b, name);
            }
            Self::Execute { portal, max_rows } => {
                put_cstr(b, portal);
                put_i32(b, *max_rows);
            }
            Self::Flush | Self::Sync | Self::Terminate | Self::CopyDone => {}
            Self::FunctionCall(call) => {
                b.extend_from_slice(&call.oid.to_be_bytes());
                put_len_i16(b, call.arg_formats.len());
                call.arg_formats.iter().for_each(|f| put_i16(b, *f));
                put_len_i16(b, call.args.len());
                call.args.iter().for_each(|a| put_nullable(b, *a));
                put_i16(b, call.result_format);
            }
            Self::Password { data } | Self::CopyData { data } => b.extend_from_slice(data),
            Self::CopyFail { message } => put_cstr(b, message),
        });
    }
}

/// One field of an ErrorResponse or NoticeResponse.
pub type ErrorField<'a> = (u8, &'a [u8]);

/// A tagged backend (server → client) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage<'a> {
    /// Authentication request or result: `code` 0 = Ok, 3 = cleartext, 5 = MD5
    /// (salt in `data`), 10 = SASL (mechanism list), 11/12 = SASL continue/final.
    Authentication {
        code: i32,
        data: &'a [u8],
    },
    ParameterStatus {
        name: &'a [u8],
        value: &'a [u8],
    },
    BackendKeyData {
        pid: i32,
        key: &'a [u8],
    },
    /// Transaction status `I`, `T` or `E`.
    ReadyForQuery {
        status: u8,
    },
    /// Kept raw: its fields matter to masking, not to the engine.
    RowDescription {
        body: &'a [u8],
    },
    DataRow {
        values: Vec<Option<&'a [u8]>>,
    },
    CommandComplete {
        tag: &'a [u8],
    },
    EmptyQueryResponse,
    ErrorResponse {
        fields: Vec<ErrorField<'a>>,
    },
    NoticeResponse {
        fields: Vec<ErrorField<'a>>,
    },
    ParseComplete,
    BindComplete,
    CloseComplete,
    NoData,
    PortalSuspended,
    ParameterDescription {
        types: Vec<u32>,
    },
    CopyInResponse(CopyResponse),
    CopyOutResponse(CopyResponse),
    CopyBothResponse(CopyResponse),
    CopyData {
        data: &'a [u8],
    },
    CopyDone,
    NotificationResponse {
        pid: i32,
        channel: &'a [u8],
        payload: &'a [u8],
    },
    FunctionCallResponse {
        result: Option<&'a [u8]>,
    },
    NegotiateProtocolVersion {
        newest_minor: i32,
        unrecognized: Vec<&'a [u8]>,
    },
}

/// The body of CopyInResponse, CopyOutResponse and CopyBothResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyResponse {
    /// 0 = text, 1 = binary.
    pub format: u8,
    pub column_formats: Vec<i16>,
}

/// Bytes of an ErrorResponse/NoticeResponse field body up to its terminator.
fn error_fields<'a>(r: &mut Reader<'a>) -> Result<Vec<ErrorField<'a>>, DecodeError> {
    let mut fields = Vec::new();
    loop {
        let code = r.u8()?;
        if code == 0 {
            return Ok(fields);
        }
        fields.push((code, r.cbytes()?));
    }
}

impl<'a> BackendMessage<'a> {
    /// Decodes a backend message from its tag and body.
    pub fn decode(tag: u8, body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, "backend message");
        let msg = match tag {
            AUTHENTICATION_TAG => {
                r.message = "Authentication";
                let code = r.i32()?;
                Self::Authentication {
                    code,
                    data: r.rest(),
                }
            }
            PARAMETER_STATUS_TAG => {
                r.message = "ParameterStatus";
                Self::ParameterStatus {
                    name: r.cbytes()?,
                    value: r.cbytes()?,
                }
            }
            BACKEND_KEY_DATA_TAG => {
                r.message = "BackendKeyData";
                let pid = r.i32()?;
                let key = r.rest();
                if key.len() < 4 || key.len() > 256 {
                    return Err(DecodeError::BadField {
                        message: "BackendKeyData",
                        field: "key length",
                    });
                }
                Self::BackendKeyData { pid, key }
            }
            READY_FOR_QUERY_TAG => {
                r.message = "ReadyForQuery";
                let status = r.u8()?;
                if !matches!(status, b'I' | b'T' | b'E') {
                    return Err(DecodeError::BadField {
                        message: "ReadyForQuery",
                        field: "transaction status",
                    });
                }
                Self::ReadyForQuery { status }
            }
            ROW_DESCRIPTION_TAG => Self::RowDescription { body: r.rest() },
            DATA_ROW_TAG => {
                r.message = "DataRow";
                Self::DataRow {
                    values: values(&mut r, "column count")?,
                }
            }
            COMMAND_COMPLETE_TAG => {
                r.message = "CommandComplete";
                Self::CommandComplete { tag: r.cbytes()? }
            }
            EMPTY_QUERY_RESPONSE_TAG => Self::EmptyQueryResponse,
            ERROR_RESPONSE_TAG => {
                r.message = "ErrorResponse";
                Self::ErrorResponse {
                    fields: error_fields(&mut r)?,
                }
            }
            NOTICE_RESPONSE_TAG => {
                r.message = "NoticeResponse";
                Self::NoticeResponse {
                    fields: error_fields(&mut r)?,
                }
            }
            PARSE_COMPLETE_TAG => Self::ParseComplete,
            BIND_COMPLETE_TAG => Self::BindComplete,
            CLOSE_COMPLETE_TAG => Self::CloseComplete,
            NO_DATA_TAG => Self::NoData,
            PORTAL_SUSPENDED_TAG => Self::PortalSuspended,
            COPY_DONE_TAG => Self::CopyDone,
            PARAMETER_DESCRIPTION_TAG => {
                r.message = "ParameterDescription";
                let n = r.count16("parameter count", 4)?;
                Self::ParameterDescription {
                    types: (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?,
                }
            }
            COPY_IN_RESPONSE_TAG | COPY_OUT_RESPONSE_TAG | COPY_BOTH_RESPONSE_TAG => {
                r.message = "CopyResponse";
                let format = r.u8()?;
                let column_formats = formats(&mut r, "column count")?;
                let c = CopyResponse {
                    format,
                    column_formats,
                };
                match tag {
                    COPY_IN_RESPONSE_TAG => Self::CopyInResponse(c),
                    COPY_OUT_RESPONSE_TAG => Self::CopyOutResponse(c),
                    _ => Self::CopyBothResponse(c),
                }
            }
            COPY_DATA_TAG => Self::CopyData { data: r.rest() },
            NOTIFICATION_RESPONSE_TAG => {
                r.message = "NotificationResponse";
                Self::NotificationResponse {
                    pid: r.i32()?,
                    channel: r.cbytes()?,
                    payload: r.cbytes()?,
                }
            }
            FUNCTION_CALL_RESPONSE_TAG => {
                r.message = "FunctionCallResponse";
                Self::FunctionCallResponse {
                    result: r.nullable()?,
                }
            }
            NEGOTIATE_PROTOCOL_VERSION_TAG => {
                r.message = "NegotiateProtocolVersion";
                let newest_minor = r.i32()?;
                let n = r.i32()?;
                let n = usize::try_from(n)
                    .ok()
                    .filter(|n| *n <= r.buf.len())
                    .ok_or(DecodeError::BadField {
                        message: "NegotiateProtocolVersion",
                        field: "option count",
                    })?;
                let unrecognized = (0..n).map(|_| r.cbytes()).collect::<Result<_, _>>()?;
                Self::NegotiateProtocolVersion {
                    newest_minor,
                    unrecognized,
                }
            }
            other => return Err(DecodeError::UnknownTag { tag: other }),
        };
        r.finish()?;
        Ok(msg)
    }

    /// The tag byte of this message.
    pub fn tag(&self) -> u8 {
        match self {
            Self::Authentication { .. } => AUTHENTICATION_TAG,
            Self::ParameterStatus { .. } => PARAMETER_STATUS_TAG,
            Self::BackendKeyData { .. } => BACKEND_KEY_DATA_TAG,
            Self::ReadyForQuery { .. } => READY_FOR_QUERY_TAG,
            Self::RowDescription { .. } => ROW_DESCRIPTION_TAG,
            Self::DataRow { .. } => DATA_ROW_TAG,
            Self::CommandComplete { .. } => COMMAND_COMPLETE_TAG,
            Self::EmptyQueryResponse => EMPTY_QUERY_RESPONSE_TAG,
            Self::ErrorResponse { .. } => ERROR_RESPONSE_TAG,
            Self::NoticeResponse { .. } => NOTICE_RESPONSE_TAG,
            Self::ParseComplete => PARSE_COMPLETE_TAG,
            Self::BindComplete => BIND_COMPLETE_TAG,
            Self::CloseComplete => CLOSE_COMPLETE_TAG,
            Self::NoData => NO_DATA_TAG,
            Self::PortalSuspended => PORTAL_SUSPENDED_TAG,
            Self::ParameterDescription { .. } => PARAMETER_DESCRIPTION_TAG,
            Self::CopyInResponse(_) => COPY_IN_RESPONSE_TAG,
            Self::CopyOutResponse(_) => COPY_OUT_RESPONSE_TAG,
            Self::CopyBothResponse(_) => COPY_BOTH_RESPONSE_TAG,
            Self::CopyData { .. } => COPY_DATA_TAG,
            Self::CopyDone => COPY_DONE_TAG,
            Self::NotificationResponse { .. } => NOTIFICATION_RESPONSE_TAG,
            Self::FunctionCallResponse { .. } => FUNCTION_CALL_RESPONSE_TAG,
            Self::NegotiateProtocolVersion { .. } => NEGOTIATE_PROTOCOL_VERSION_TAG,
        }
    }

    /// Appends the whole message (tag, length, body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_message(out, self.tag(), |b| match self {
            Self::Authentication { code, data } => {
                put_i32(b, *code);
                b.extend_from_slice(data);
            }
            Self::ParameterStatus { name, value } => {
                put_cstr(b, name);
                put_cstr(b, value);
            }
            Self::BackendKeyData { pid, key } => {
                put_i32(b, *pid);
                b.extend_from_slice(key);
            }
            Self::ReadyForQuery { status } => b.push(*status),
            Self::RowDescription { body } | Self::CopyData { data: body } => {
                b.extend_from_slice(body)
            }
            Self::DataRow { values } => {
                put_len_i16(b, values.len());
                values.iter().for_each(|v| put_nullable(b, *v));
            }
            Self::CommandComplete { tag } => put_cstr(b, tag),
            Self::ErrorResponse { fields } | Self::NoticeResponse { fields } => {
                for (code, value) in fields {
                    b.push(*code);
                    put_cstr(b, value);
                }
                b.push(0);
            }
            Self::EmptyQueryResponse
            | Self::ParseComplete
            | Self::BindComplete
            | Self::CloseComplete
            | Self::NoData
            | Self::PortalSuspended
            | Self::CopyDone => {}
            Self::ParameterDescription { types } => {
                put_len_i16(b, types.len());
                types
                    .iter()
                    .for_each(|t| b.extend_from_slice(&t.to_be_bytes()));
            }
            Self::CopyInResponse(c) | Self::CopyOutResponse(c) | Self::CopyBothResponse(c) => {
                b.push(c.format);
                put_len_i16(b, c.column_formats.len());
                c.column_formats.iter().for_each(|f| put_i16(b, *f));
            }
            Self::NotificationResponse {
                pid,
                channel,
                payload,
            } => {
                put_i32(b, *pid);
                put_cstr(b, channel);
                put_cstr(b, payload);
            }
            Self::FunctionCallResponse { result } => put_nullable(b, *result),
            Self::NegotiateProtocolVersion {
                newest_minor,
                unrecognized,
            } => {
                put_i32(b, *newest_minor);
                put_i32(b, i32::try_from(unrecognized.len()).unwrap_or(i32::MAX));
                unrecognized.iter().for_each(|o| put_cstr(b, o));
            }
        });
    }
}

/// The value of field `code` (`b'C'` SQLSTATE, `b'M'` message, `b'S'` severity).
pub fn error_field<'a>(fields: &[ErrorField<'a>], code: u8) -> Option<&'a [u8]> {
    fields.iter().find(|(c, _)| *c == code).map(|(_, v)| *v)
}

/// An ErrorResponse with severity FATAL, the given SQLSTATE and message.
pub fn fatal_error(sqlstate: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + message.len());
    BackendMessage::ErrorResponse {
        fields: vec![
            (b'S', b"FATAL"),
            (b'V', b"FATAL"),
            (b'C', sqlstate.as_bytes()),
            (b'M', message.as_bytes()),
        ],
    }
    .encode(&mut out);
    out
}

/// AuthenticationSASL's mechanism list without channel-binding (`-PLUS`)
/// mechanisms, which cannot work through a proxy that terminates TLS; `None` when
/// nothing needs removing.
pub fn sasl_without_channel_binding(data: &[u8]) -> Option<Vec<u8>> {
    let mechanisms: Vec<&[u8]> = data.split(|&b| b == 0).filter(|m| !m.is_empty()).collect();
    if !mechanisms.iter().any(|m| m.ends_with(b"-PLUS")) {
        return None;
    }
    let mut body = Vec::with_capacity(data.len());
    for m in mechanisms.iter().filter(|m| !m.ends_with(b"-PLUS")) {
        put_cstr(&mut body, m);
    }
    body.push(0);
    let mut out = Vec::with_capacity(body.len() + 9);
    BackendMessage::Authentication {
        code: 10,
        data: &body,
    }
    .encode(&mut out);
    Some(out)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn roundtrip_frontend(m: FrontendMessage<'_>) {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, buf.len(), "{m:?}");
        assert_eq!(FrontendMessage::decode(buf[0], &buf[5..]).unwrap(), m);
    }

    fn roundtrip_backend(m: BackendMessage<'_>) {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, buf.len(), "{m:?}");
        assert_eq!(BackendMessage::decode(buf[0], &buf[5..]).unwrap(), m);
    }

    fn roundtrip_startup(m: StartupPacket<'_>) {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        let len = u32::from_be_bytes(buf[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len());
        assert_eq!(StartupPacket::decode(&buf[4..]).unwrap(), m);
    }

    #[test]
    fn every_startup_packet_round_trips() {
        roundtrip_startup(StartupPacket::SslRequest);
        roundtrip_startup(StartupPacket::GssEncRequest);
        roundtrip_startup(StartupPacket::Cancel {
            pid: 42,
            key: &[1, 2, 3, 4],
        });
        roundtrip_startup(StartupPacket::Cancel {
            pid: 42,
            key: &[7; 32],
        });
        roundtrip_startup(StartupPacket::Startup {
            version: PROTOCOL_3_0,
            params: vec![("user", "alice"), ("database", "app")],
        });
        roundtrip_startup(StartupPacket::Startup {
            version: PROTOCOL_3_0 | 2,
            params: vec![("_pq_.x", "1")],
        });
    }

    #[test]
    fn every_frontend_message_round_trips() {
        roundtrip_frontend(FrontendMessage::Query { sql: b"select 1" });
        roundtrip_frontend(FrontendMessage::Parse {
            name: b"s1",
            sql: b"select $1",
            param_types: vec![23, 0],
        });
        roundtrip_frontend(FrontendMessage::Bind(Bind {
            portal: b"",
            statement: b"s1",
            param_formats: vec![0, 1],
            params: vec![Some(b"42"), None, Some(&[0, 1])],
            result_formats: vec![1],
        }));
        roundtrip_frontend(FrontendMessage::Describe {
            kind: b'S',
            name: b"s1",
        });
        roundtrip_frontend(FrontendMessage::Describe {
            kind: b'P',
            name: b"",
        });
        roundtrip_frontend(FrontendMessage::Execute {
            portal: b"p",
            max_rows: 10,
        });
        roundtrip_frontend(FrontendMessage::Close {
            kind: b'P',
            name: b"p",
        });
        roundtrip_frontend(FrontendMessage::Flush);
        roundtrip_frontend(FrontendMessage::Sync);
        roundtrip_frontend(FrontendMessage::Terminate);
        roundtrip_frontend(FrontendMessage::FunctionCall(FunctionCall {
            oid: 1598,
            arg_formats: vec![1],
            args: vec![Some(&[0, 0, 0, 1]), None],
            result_format: 1,
        }));
        roundtrip_frontend(FrontendMessage::Password { data: b"secret\0" });
        roundtrip_frontend(FrontendMessage::CopyData { data: b"1\tone\n" });
        roundtrip_frontend(FrontendMessage::CopyDone);
        roundtrip_frontend(FrontendMessage::CopyFail {
            message: b"aborted",
        });
    }

    #[test]
    fn every_backend_message_round_trips() {
        roundtrip_backend(BackendMessage::Authentication { code: 0, data: b"" });
        roundtrip_backend(BackendMessage::Authentication {
            code: 5,
            data: &[1, 2, 3, 4],
        });
        roundtrip_backend(BackendMessage::ParameterStatus {
            name: b"TimeZone",
            value: b"UTC",
        });
        roundtrip_backend(BackendMessage::BackendKeyData {
            pid: 7,
            key: &[9, 9, 9, 9],
        });
        roundtrip_backend(BackendMessage::ReadyForQuery { status: b'T' });
        roundtrip_backend(BackendMessage::RowDescription { body: &[0, 0] });
        roundtrip_backend(BackendMessage::DataRow {
            values: vec![Some(b"1"), None],
        });
        roundtrip_backend(BackendMessage::CommandComplete { tag: b"SELECT 1" });
        roundtrip_backend(BackendMessage::EmptyQueryResponse);
        roundtrip_backend(BackendMessage::ErrorResponse {
            fields: vec![(b'S', b"ERROR"), (b'C', b"22012")],
        });
        roundtrip_backend(BackendMessage::NoticeResponse {
            fields: vec![(b'M', b"note")],
        });
        roundtrip_backend(BackendMessage::ParseComplete);
        roundtrip_backend(BackendMessage::BindComplete);
        roundtrip_backend(BackendMessage::CloseComplete);
        roundtrip_backend(BackendMessage::NoData);
        roundtrip_backend(BackendMessage::PortalSuspended);
        roundtrip_backend(BackendMessage::ParameterDescription {
            types: vec![23, 25],
        });
        roundtrip_backend(BackendMessage::CopyInResponse(CopyResponse {
            format: 0,
            column_formats: vec![0, 0],
        }));
        roundtrip_backend(BackendMessage::CopyOutResponse(CopyResponse {
            format: 1,
            column_formats: vec![1],
        }));
        roundtrip_backend(BackendMessage::CopyBothResponse(CopyResponse {
            format: 0,
            column_formats: vec![],
        }));
        roundtrip_backend(BackendMessage::CopyData { data: b"x" });
        roundtrip_backend(BackendMessage::CopyDone);
        roundtrip_backend(BackendMessage::NotificationResponse {
            pid: 3,
            channel: b"ch",
            payload: b"hi",
        });
        roundtrip_backend(BackendMessage::FunctionCallResponse { result: Some(b"1") });
        roundtrip_backend(BackendMessage::FunctionCallResponse { result: None });
        roundtrip_backend(BackendMessage::NegotiateProtocolVersion {
            newest_minor: 0,
            unrecognized: vec![b"_pq_.x"],
        });
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        // Bind claiming 32767 parameters in a 10-byte body.
        let body = [0, 0, 0, 0, 0x7f, 0xff, 0, 0, 0, 0];
        assert!(matches!(
            FrontendMessage::decode(BIND_TAG, &body),
            Err(DecodeError::BadField { .. })
        ));
        let body = [0xff, 0xff];
        assert!(FrontendMessage::decode(PARSE_TAG, &body).is_err());
    }

    #[test]
    fn sasl_list_drops_plus_mechanisms() {
        let data = b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
        let out = sasl_without_channel_binding(data).unwrap();
        let msg = BackendMessage::decode(out[0], &out[5..]).unwrap();
        assert_eq!(
            msg,
            BackendMessage::Authentication {
                code: 10,
                data: b"SCRAM-SHA-256\0\0"
            }
        );
        assert_eq!(sasl_without_channel_binding(b"SCRAM-SHA-256\0\0"), None);
    }
}
