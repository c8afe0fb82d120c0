//! A minimal PostgreSQL client for benches that move many rows: it logs in
//! (trust authentication, no TLS), sends one simple Query and reads the
//! answer off the wire, handing each DataRow's values to the caller and
//! counting bytes. It decodes nothing it does not need, so the client costs
//! far less than the proxy it measures (psql formatting a million rows
//! would dominate the time).

use anyhow::{Context, Result, bail};
use gatehouse_postgres::protocol::{
    BackendMessage, DataRowValues, FrontendMessage, StartupPacket, error_field,
};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A logged-in connection.
pub struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    body: Vec<u8>,
}

/// What one query brought back.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub rows: u64,
    /// Every byte of the answer on the wire, headers included.
    pub bytes: u64,
    /// From sending the Query to reading its ReadyForQuery.
    pub elapsed: Duration,
}

impl Connection {
    /// Connects to 127.0.0.1:`port` and logs in as `user` to `database`;
    /// fails unless the server trusts the login.
    pub fn connect(port: u16, user: &str, database: &str) -> Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connecting to port {port}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        let mut connection = Connection {
            writer: stream.try_clone()?,
            reader: BufReader::with_capacity(256 * 1024, stream),
            body: Vec::with_capacity(64 * 1024),
        };
        let mut startup = Vec::new();
        StartupPacket::Startup {
            version: 3 << 16,
            params: vec![("user", user), ("database", database)],
        }
        .encode(&mut startup);
        connection.writer.write_all(&startup)?;
        loop {
            let tag = connection.next_message()?;
            match BackendMessage::decode(tag, &connection.body)? {
                BackendMessage::Authentication { code: 0, .. } => {}
                BackendMessage::Authentication { code, .. } => {
                    bail!("the server asked for authentication {code}; benches log in trusted")
                }
                BackendMessage::ErrorResponse { fields } => bail!(
                    "login refused: {}",
                    String::from_utf8_lossy(error_field(&fields, b'M').unwrap_or_default())
                ),
                BackendMessage::ReadyForQuery { .. } => return Ok(connection),
                _ => {}
            }
        }
    }

    /// Runs `sql` as one simple Query; `row` sees each DataRow's values in
    /// turn. Fails on an ErrorResponse or a malformed message.
    pub fn query(
        &mut self,
        sql: &str,
        mut row: impl FnMut(&mut dyn Iterator<Item = Option<&[u8]>>) -> Result<()>,
    ) -> Result<Answer> {
        let mut query = Vec::new();
        FrontendMessage::Query {
            sql: sql.as_bytes(),
        }
        .encode(&mut query);
        let start = Instant::now();
        self.writer.write_all(&query)?;
        let (mut rows, mut bytes) = (0u64, 0u64);
        let mut error = None;
        loop {
            let tag = self.next_message()?;
            bytes += 5 + self.body.len() as u64;
            match tag {
                b'D' => {
                    rows += 1;
                    let mut values = DataRowValues::new(&self.body)?;
                    let mut failed = None;
                    let mut plain = values.by_ref().map_while(|value| match value {
                        Ok((_, value)) => Some(value),
                        Err(e) => {
                            failed = Some(e);
                            None
                        }
                    });
                    row(&mut plain)?;
                    // Values the caller left unread are still checked.
                    plain.for_each(drop);
                    if let Some(e) = failed {
                        return Err(e.into());
                    }
                    values.finish()?;
                }
                b'E' => {
                    if let BackendMessage::ErrorResponse { fields } =
                        BackendMessage::decode(tag, &self.body)?
                    {
                        error = Some(
                            String::from_utf8_lossy(error_field(&fields, b'M').unwrap_or_default())
                                .into_owned(),
                        );
                    }
                }
                b'Z' => break,
                _ => {}
            }
        }
        let elapsed = start.elapsed();
        if let Some(message) = error {
            bail!("the query failed: {message}");
        }
        Ok(Answer {
            rows,
            bytes,
            elapsed,
        })
    }

    /// Reads one backend message into `self.body`; returns its tag.
    fn next_message(&mut self) -> Result<u8> {
        let mut header = [0u8; 5];
        self.reader.read_exact(&mut header)?;
        let [tag, len @ ..] = header;
        let len = usize::try_from(u32::from_be_bytes(len))?;
        let Some(body_len) = len.checked_sub(4) else {
            bail!("message {tag} with length {len}");
        };
        self.body.resize(body_len, 0);
        self.reader.read_exact(&mut self.body)?;
        Ok(tag)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut terminate = Vec::new();
        FrontendMessage::Terminate.encode(&mut terminate);
        // Best effort: the server ends the session when the socket closes anyway.
        let _ = self.writer.write_all(&terminate);
    }
}
