//! Column rules on COPY TO STDOUT rows.
//!
//! CopyOutResponse carries only formats, not the columns, so the masker learns
//! them the way a client would: when a simple Query's first statement is a
//! `COPY … TO STDOUT`, the session sends, ahead of it, a Parse (unnamed) +
//! Describe + Sync of the equivalent query, `SELECT "col", … FROM table` (or
//! `SELECT * FROM table`) for a table, or the inner query of `COPY (query)`,
//! taken from the client's own text. Its answers are consumed here, never seen
//! by the client; the RowDescription gives table OIDs and attribute numbers,
//! hence the same [`RowPlan`] a DataRow of that query would get.
//!
//! In the extended protocol the same describe goes, with a statement of its
//! own that it closes again, ahead of the Parse of a COPY that starts a batch
//! outside a transaction block, and ahead of each Bind of a named COPY
//! statement that starts one (so a statement prepared long before is
//! described afresh when it runs); portals carry the description of their
//! statement to the Execute.
//!
//! Why that is invisible to the client:
//! - A simple Query destroys the unnamed statement anyway (the extended
//!   protocol's describe uses a named one), and Sync outside a transaction
//!   block only ends the implicit transaction Parse opened.
//! - It is sent only when the server is idle between requests (never inside
//!   an extended-protocol batch) and not in a failed transaction.
//! - Parse checks no privileges and runs nothing; the equivalent query fails
//!   to parse only when the COPY itself fails (same name resolution: column
//!   names are quoted after the server's case folding). Inside a transaction
//!   block such a failure aborts the transaction, as the COPY's own error would
//!   have: the client then gets the answer `25P02 current transaction is
//!   aborted`, which the masker replaces by the saved error of the equivalent
//!   query (without its position), the error the COPY would have returned.
//!
//! Rows are then parsed with the statement's options (FORMAT, DELIMITER,
//! QUOTE, ESCAPE, NULL, HEADER; the header line passes), every value masked as
//! in a DataRow ([`values::mask_value`], text format for text and CSV, binary
//! for binary) and the row re-encoded: text values re-escaped, CSV values
//! quoted, binary lengths recomputed.
//!
//! When the policy has column rules and the columns are not known (the COPY
//! is not its Query's first statement, is parsed inside an extended-protocol
//! batch, the description failed or does not match the COPY's column count,
//! the session is in shadow mode), the safe side is taken: every value of the
//! row becomes NULL, counted as over the cap. When even the options are
//! unknown (a portal the masker did not see bound, or options neither
//! sqlparser nor the old-syntax reader understands), text rows are starred
//! whole except tabs, newlines and backslash escapes. A row that cannot be
//! parsed is starred whole. Without column rules rows go through the
//! detectors as before. The describe is one more round trip per COPY.
//!
//! One module per concern: `sql` finds the COPY statements of a text and
//! reads their options; `describe` sends the describe and consumes its
//! answers; `codec` reads rows in each format and writes them back with some
//! fields replaced; `rows` decides what each value becomes.

mod codec;
mod describe;
mod rows;
mod sql;

pub use codec::{escape_text, unescape_text};
pub use describe::{describe_messages, named_describe_messages};
pub use rows::{CopyRows, star_keeping_shape};
pub use sql::{CopyFormat, CopyOptions, CopyStatement, DescribedFields, copy_statements};
#[cfg(test)]
use {
    codec::{BINARY_SIGNATURE, quote_csv, split_csv_row},
    rows::{CopyCounts, start_rows},
};

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests;
