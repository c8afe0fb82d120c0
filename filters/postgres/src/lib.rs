//! PostgreSQL v3 wire protocol as gatehouse sees it: decoding, session state, records.
