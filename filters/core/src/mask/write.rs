//! Byte writers the masking outputs share (hex digits, JSON string
//! literals). A leaf: it depends on nothing else in `mask`.

/// Appends `bytes` as lower-case hex.
pub(super) fn push_hex(bytes: &[u8], out: &mut Vec<u8>) {
    let digit = |n: u8| if n < 10 { b'0' + n } else { b'a' + n - 10 };
    for &b in bytes {
        out.extend_from_slice(&[digit(b >> 4), digit(b & 0x0f)]);
    }
}

/// Writes `text` as a JSON string literal with the escapes JSON requires.
pub(super) fn write_json_string(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                push_hex(&[b], out);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}
