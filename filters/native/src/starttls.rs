//! TLS for clients that ask with an SSLRequest (libpq before 17, JDBC, most
//! drivers): the native filter answers `S` itself and switches the client side
//! of the connection to TLS (Envoy's `starttls` transport socket), so the
//! engine then reads the StartupMessage — and the token — decrypted. The Wasm
//! build cannot: proxy-wasm has no call to write to the client or to start TLS.
//!
//! [`StartTlsGate`] decides, from the first bytes a client sends, whether they
//! are such a request. It is sans-IO: the filter feeds it the read buffer and
//! does what it answers.

/// An SSLRequest: length 8, then the request code 80877103.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// What to do with the bytes the client sent so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A prefix of an SSLRequest: wait for the rest (leave it in Envoy's buffer).
    Wait,
    /// An SSLRequest: answer `S`, drop these 8 bytes, and switch to TLS once
    /// the answer is on its way.
    Upgrade,
    /// Bytes after an SSLRequest, before TLS began: a client may not send any
    /// (an attacker's bytes would be read as if they came over TLS), so the
    /// connection is closed.
    Refuse,
    /// Not an SSLRequest, or TLS is already on: the engine reads everything
    /// from here on.
    Pass,
}

/// Where a connection is in the StartTLS handshake.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StartTlsGate {
    decided: bool,
}

impl StartTlsGate {
    /// Whether the gate has decided, so it passes everything from now on and
    /// the filter need not copy the client's bytes out to ask it.
    pub fn decided(&self) -> bool {
        self.decided
    }

    /// Judges the client's first bytes (the whole read buffer, `buffer`).
    /// After `Upgrade` or `Pass` the gate passes everything.
    pub fn on_client_bytes(&mut self, buffer: &[u8]) -> Gate {
        if self.decided {
            return Gate::Pass;
        }
        let prefix = buffer.len().min(SSL_REQUEST.len());
        if buffer.get(..prefix) != SSL_REQUEST.get(..prefix) {
            self.decided = true;
            return Gate::Pass;
        }
        match buffer.len().cmp(&SSL_REQUEST.len()) {
            std::cmp::Ordering::Less => Gate::Wait,
            std::cmp::Ordering::Equal => {
                self.decided = true;
                Gate::Upgrade
            }
            std::cmp::Ordering::Greater => {
                self.decided = true;
                Gate::Refuse
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // test code: a bad index is a failed test
mod tests {
    use super::*;

    #[test]
    fn an_ssl_request_is_upgraded_whole_or_byte_by_byte() {
        let mut gate = StartTlsGate::default();
        assert_eq!(gate.on_client_bytes(&SSL_REQUEST), Gate::Upgrade);
        assert!(gate.decided());
        assert_eq!(gate.on_client_bytes(b"\x16\x03\x01"), Gate::Pass);

        let mut gate = StartTlsGate::default();
        for end in 1..SSL_REQUEST.len() {
            assert_eq!(gate.on_client_bytes(&SSL_REQUEST[..end]), Gate::Wait);
            assert!(!gate.decided());
        }
        assert_eq!(gate.on_client_bytes(&SSL_REQUEST), Gate::Upgrade);
    }

    #[test]
    fn bytes_smuggled_after_the_request_close_the_connection() {
        let mut smuggled = SSL_REQUEST.to_vec();
        smuggled.extend_from_slice(b"Q\0\0\0\x0dselect 1\0");
        assert_eq!(
            StartTlsGate::default().on_client_bytes(&smuggled),
            Gate::Refuse
        );
    }

    #[test]
    fn anything_else_goes_to_the_engine() {
        // A StartupMessage (length 8 would be an empty one), a GSSENCRequest,
        // a CancelRequest: not ours to answer.
        for first in [
            &[0u8, 0, 0, 9, 0, 3, 0, 0, 0][..],
            &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30],
            &[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e],
            b"GET / HTTP/1.1\r\n",
        ] {
            let mut gate = StartTlsGate::default();
            assert_eq!(gate.on_client_bytes(first), Gate::Pass, "{first:?}");
            assert_eq!(gate.on_client_bytes(&SSL_REQUEST), Gate::Pass);
        }
        assert_eq!(
            StartTlsGate::default().on_client_bytes(&[0, 0, 1]),
            Gate::Pass
        );
    }
}
