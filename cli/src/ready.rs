//! `gatehouse ready postgres HOST:PORT`: a readiness probe that exercises the
//! Postgres filter, not only Envoy. It sends the startup of the reserved user
//! [`READINESS_USER`]; the filter passes an SSLRequest to the server in its
//! place and, once the server has answered, replies itself with a message
//! that starts with [`READINESS_MESSAGE`] and names its build and policy.
//! Anything else (no answer, a server's own refusal, a closed connection)
//! means the filter is not serving here.
//!
//! Exit codes: 0 ready, 1 not ready, 2 usage error. For a Kubernetes exec
//! readiness probe or a deployment pipeline's health gate.

use gatehouse_postgres::protocol::{BackendMessage, StartupPacket, error_field};
use gatehouse_postgres::{READINESS_MESSAGE, READINESS_USER};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Probe a listener: does the gatehouse filter answer there.
///
/// Connects through the Postgres listener as the reserved user
/// gatehouse-readiness. The gatehouse filter answers it itself once the server
/// has answered too; the answer names the filter's build and policy.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 ready, 1 not ready, 2 usage error.")]
pub struct ReadyArgs {
    /// The filter to probe.
    #[arg(value_parser = ["postgres"])]
    filter: String,
    /// The listener's address.
    #[arg(value_name = "HOST:PORT")]
    address: String,
    /// How long to wait for the answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = positive_seconds)]
    timeout: f64,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Ok(seconds),
        _ => Err("needs a positive number of seconds".to_owned()),
    }
}

/// Longest answer read: the readiness message is one short ErrorResponse.
const MAX_ANSWER_BYTES: usize = 8 * 1024;

pub fn run(args: ReadyArgs) -> ExitCode {
    let address = &args.address;
    match probe_postgres(address, Duration::from_secs_f64(args.timeout)) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("gatehouse ready: {address}: not ready: {reason}");
            ExitCode::from(1)
        }
    }
}

/// The filter's readiness message, or why it was not received.
pub fn probe_postgres(address: &str, timeout: Duration) -> Result<String, String> {
    let addresses: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let mut stream = addresses
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, timeout).ok())
        .ok_or("cannot connect")?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let mut startup = Vec::new();
    StartupPacket::Startup {
        version: 196_608,
        params: vec![("user", READINESS_USER), ("database", READINESS_USER)],
    }
    .encode(&mut startup);
    stream
        .write_all(&startup)
        .map_err(|e| format!("sending the startup: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES as u64)
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    readiness_message(&answer)
}

/// The readiness message in the bytes a probe received: the first
/// ErrorResponse among the messages, which must be the filter's.
fn readiness_message(answer: &[u8]) -> Result<String, String> {
    let mut rest = answer;
    while let [tag, a, b, c, d, tail @ ..] = rest {
        let len = usize::try_from(u32::from_be_bytes([*a, *b, *c, *d])).unwrap_or(usize::MAX);
        let Some((body, next)) = len.checked_sub(4).and_then(|n| tail.split_at_checked(n)) else {
            break;
        };
        if *tag == b'E' {
            let Ok(BackendMessage::ErrorResponse { fields }) = BackendMessage::decode(b'E', body)
            else {
                return Err("the answer holds an unreadable ErrorResponse".into());
            };
            let message = error_field(&fields, b'M')
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .unwrap_or_default();
            return if message.starts_with(READINESS_MESSAGE) {
                Ok(message)
            } else {
                Err(format!("answered by something else: {message}"))
            };
        }
        rest = next;
    }
    Err(format!(
        "no error message in the answer ({} bytes): the filter did not answer",
        answer.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_response(message: &str) -> Vec<u8> {
        gatehouse_postgres::protocol::fatal_error("08004", message)
    }

    #[test]
    fn only_the_filters_answer_counts_as_ready() {
        let ready = error_response("gatehouse ready: gatehouse postgres filter 0.1.0, policy none");
        assert!(readiness_message(&ready).is_ok());
        let server = error_response("role \"gatehouse-readiness\" does not exist");
        assert!(
            readiness_message(&server)
                .unwrap_err()
                .contains("something else")
        );
        assert!(readiness_message(b"").is_err());
        assert!(readiness_message(b"N").is_err());
        assert!(readiness_message(b"E\0\0\0\x04garbage").is_err());
    }
}
