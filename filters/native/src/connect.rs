//! Connections the module's own threads open (the record writer, the grant
//! poller): bounded in every step, so an unreachable address costs a thread
//! one timeout, never the operating system's connect default (minutes, when
//! the SYN is dropped).

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Opens a connection to `address` (`host:port`), trying each address it
/// resolves to for at most `timeout`, and bounds every later read and write
/// by `timeout` too. The error is the last address's, or why nothing resolved.
pub(crate) fn connect(address: &str, timeout: Duration) -> io::Result<TcpStream> {
    let timeout = timeout.max(Duration::from_millis(1));
    let mut last = None;
    for candidate in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                return Ok(stream);
            }
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{address} resolves to no address"),
        )
    }))
}

/// An address whose listener drops every SYN: its accept queue is full and
/// nobody accepts, so a connect to it is neither accepted nor refused and only
/// the connect timeout ends the attempt (what an unreachable address whose
/// packets are dropped does, made certain on the loopback). Keep the guard
/// alive while the address is used.
#[cfg(test)]
pub(crate) fn unreachable() -> (impl Sized, String) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let address = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue (a backlog of 0 still admits one or two).
    let mut fillers = Vec::new();
    loop {
        match TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "the accept queue never filled");
    }
    ((socket, fillers), address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn an_unreachable_address_gives_up_with_an_error() {
        let (_guard, address) = unreachable();
        let error = connect(&address, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(error.kind(), io::ErrorKind::TimedOut), "{error:?}");
    }

    #[test]
    fn a_name_that_does_not_resolve_is_an_error() {
        assert!(connect("no-such-host.invalid:80", Duration::from_millis(200)).is_err());
        assert!(connect("not an address", Duration::from_millis(200)).is_err());
    }

    #[test]
    fn a_connection_that_answers_nothing_times_out_on_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mut stream = connect(&address, Duration::from_millis(100)).unwrap();
        let (_silent, _) = listener.accept().unwrap();
        stream.write_all(b"hello").unwrap();
        let error = stream.read(&mut [0u8; 8]).unwrap_err();
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{error:?}"
        );
    }
}
