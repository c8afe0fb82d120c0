//! `gatehouse audit follow`: matching records as they are written.
//!
//! Reads what the file holds (unless `--new`), then polls it for growth. A
//! partly written last line waits for its newline; a file that shrinks
//! (rotated or truncated) is read again from its start.

use super::log::{Log, Selection};
use super::table::{RECORD_COLUMNS, record_row};
use super::{AuditError, Output};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// How often the file is checked for new lines.
const POLL: Duration = Duration::from_millis(200);

pub fn run(
    path: &Path,
    select: &Selection,
    output: Output,
    only_new: bool,
) -> Result<ExitCode, AuditError> {
    let open = || {
        std::fs::File::open(path).map_err(|source| AuditError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let mut file = open()?;
    let mut position = if only_new {
        file.seek(SeekFrom::End(0)).unwrap_or(0)
    } else {
        0
    };
    let mut pending = String::new();
    let mut printer = Printer::new(output);
    loop {
        let length = std::fs::metadata(path).map_or(position, |m| m.len());
        if length < position {
            eprintln!(
                "gatehouse audit: {} shrank; reading it from the start",
                path.display()
            );
            file = open()?;
            position = 0;
            pending.clear();
        }
        let mut chunk = Vec::new();
        if file.seek(SeekFrom::Start(position)).is_ok() {
            let _ = (&mut file).take(1 << 20).read_to_end(&mut chunk);
        }
        position += chunk.len() as u64;
        pending.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(end) = pending.rfind('\n') {
            let complete: String = pending.drain(..=end).collect();
            for line in complete.lines() {
                printer.line(line, select);
            }
        }
        if chunk.is_empty() {
            std::thread::sleep(POLL);
        }
    }
}

/// Prints matching lines; the table's header once, each row aligned to it.
struct Printer {
    output: Output,
    log: Log,
    header: Option<String>,
}

impl Printer {
    fn new(output: Output) -> Printer {
        Printer {
            output,
            log: Log::default(),
            header: None,
        }
    }

    fn line(&mut self, line: &str, select: &Selection) {
        let Some(record) = self.log.push_line(line) else {
            return;
        };
        if !select.matches(&record.value) {
            self.log.records.clear();
            return;
        }
        match self.output {
            Output::Json => println!("{}", record.line),
            Output::Table => {
                if let Some(row) = record_row(&record.value) {
                    // Fixed widths: a live view cannot know the widest cell to come.
                    let widths = [19, 18, 14, 60, 28, 16];
                    if self.header.is_none() {
                        let header = fixed(
                            &RECORD_COLUMNS
                                .iter()
                                .map(|c| (*c).to_owned())
                                .collect::<Vec<_>>(),
                            &widths,
                        );
                        println!("{header}");
                        self.header = Some(header);
                    }
                    println!("{}", fixed(&row, &widths));
                }
            }
        }
        self.log.records.clear();
    }
}

/// Cells padded to `widths` (the last one unpadded).
fn fixed(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        match widths.get(i) {
            Some(width) if i + 1 < cells.len() => line.push_str(&format!("{cell:width$}  ")),
            _ => line.push_str(cell),
        }
    }
    line.trim_end().to_owned()
}
