#!/usr/bin/env bash
# Measures libpg_query (crate pg_query) against gatehouse's own SQL analysis on the
# compatibility corpus, natively, and tries to build pg_query for wasm32-wasip1.
# Nothing third-party is kept in the repository: both programs are written into a
# scratch directory and built there. Needs clang, libclang-dev, lld, wasi-libc
# (Debian packages) and the wasm32-wasip1 Rust target. See docs/sql-parser.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
scratch="${1:-/tmp/gatehouse-pg-query}"
corpus="$root/integration/testdata/compat/corpus.sql"
mkdir -p "$scratch/pgq/src" "$scratch/gq/src"

# Statements of the corpus without psql's COPY data blocks, shared by both programs.
statements_rs='
fn corpus_sql(path: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let (mut sql, mut in_copy) = (String::new(), false);
    for line in text.lines() {
        if in_copy { in_copy = line != "\\."; continue; }
        sql.push_str(line); sql.push(chr(10));
        in_copy = line.to_ascii_lowercase().contains("from stdin");
    }
    sql
}
fn chr(c: u8) -> char { c as char }
'

cat > "$scratch/pgq/Cargo.toml" <<'EOF'
[package]
name = "pgq"
version = "0.1.0"
edition = "2021"
[dependencies]
pg_query = "6"
EOF
cat > "$scratch/pgq/src/main.rs" <<EOF
use std::time::Instant;
$statements_rs
fn main() {
    let sql = corpus_sql(&std::env::args().nth(1).unwrap());
    let t0 = Instant::now();
    pg_query::parse("select 1").unwrap();
    let cold = t0.elapsed();
    let statements = pg_query::split_with_parser(&sql).unwrap();
    let (mut ok, mut times) = (0, Vec::new());
    for s in &statements {
        let t = Instant::now();
        ok += usize::from(pg_query::parse(s).is_ok());
        times.push(t.elapsed().as_nanos());
    }
    times.sort();
    println!("pg_query: {} statements, {ok} parsed; first parse {cold:?}; median {} ns",
        statements.len(), times[times.len() / 2]);
}
EOF

cat > "$scratch/gq/Cargo.toml" <<EOF
[package]
name = "gq"
version = "0.1.0"
edition = "2024"
[dependencies]
gatehouse-postgres = { path = "$root/filters/postgres" }
[profile.release]
opt-level = "s"
EOF
cat > "$scratch/gq/src/main.rs" <<EOF
use gatehouse_postgres::sql::{Limits, analyze, lexer};
use std::time::Instant;
$statements_rs
fn main() {
    let sql = corpus_sql(&std::env::args().nth(1).unwrap());
    let limits = Limits::default();
    let t0 = Instant::now();
    let _ = analyze("select 1", &limits);
    let cold = t0.elapsed();
    let lexed = lexer::tokenize(&sql);
    let (mut ok, mut times, mut n) = (0, Vec::new(), 0);
    for tokens in lexed.statement_tokens() {
        let s = &sql[tokens[0].span.start..tokens[tokens.len() - 1].span.end];
        let t = Instant::now();
        ok += usize::from(analyze(s, &limits).statements.iter().all(|s| !s.unparseable));
        times.push(t.elapsed().as_nanos());
        n += 1;
    }
    times.sort();
    println!("gatehouse: {n} statements, {ok} analyzed; first analysis {cold:?}; median {} ns",
        times[times.len() / 2]);
}
EOF

(cd "$scratch/pgq" && cargo run --release -q -- "$corpus")
(cd "$scratch/gq" && cargo run --release -q -- "$corpus")
echo "pg_query for wasm32-wasip1:"
(cd "$scratch/pgq" && CC_wasm32_wasip1=clang AR_wasm32_wasip1=llvm-ar \
    CFLAGS_wasm32_wasip1="--target=wasm32-wasi --sysroot=/usr -I/usr/include/wasm32-wasi" \
    BINDGEN_EXTRA_CLANG_ARGS_wasm32_wasip1="--target=wasm32-wasi -I/usr/include/wasm32-wasi" \
    cargo build --release --target wasm32-wasip1 2>&1 | grep -E "error|setjmp" | head -5) || true
