//! The fast-path interface (FunctionCall), judged as the SQL call it is.
//!
//! A FunctionCall names its function by OID only, and runs it without any SQL
//! the policy could read. So the session learns which OIDs the functions it may
//! call have, from the server's own catalog ([`lookup_sql`], sent once ahead of
//! the client's first request), and judges each call as the statement
//! [`equivalent_sql`] writes for it: `SELECT "pg_catalog"."lo_open"(16400,
//! 262144)`, its arguments read from text or binary. A function the
//! configuration does not name ([`EngineConfig::fast_path_functions`]) is
//! refused whatever its OID; its name is looked up for the record only
//! ([`name_sql`]).
//!
//! [`EngineConfig::fast_path_functions`]: crate::EngineConfig::fast_path_functions

use crate::protocol::FunctionCall;
use thiserror::Error;

/// Longest argument written into the equivalent statement as a literal;
/// longer ones (and those that cannot be read) are written as a parameter
/// (`$n`), as a client using the extended protocol would send them.
pub const MAX_LITERAL_BYTES: usize = 256;

/// A function name from the configuration: `schema.name`, or `name` in `pg_catalog`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionName {
    pub schema: String,
    pub name: String,
}

/// Why a configured function name is not usable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FunctionNameError {
    #[error(
        "\"{0}\" is not a function name: use name or schema.name as the catalog spells \
         them (no double quotes, parentheses, backslashes or control characters, at most \
         63 bytes each)"
    )]
    Invalid(String),
}

impl FunctionName {
    pub fn parse(text: &str) -> Result<Self, FunctionNameError> {
        let invalid = || FunctionNameError::Invalid(text.to_owned());
        let (schema, name) = match text.split_once('.') {
            Some((schema, name)) => (schema, name),
            None => ("pg_catalog", text),
        };
        let part_ok = |part: &str| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .chars()
                    .all(|c| !c.is_control() && !matches!(c, '"' | '\\' | '.' | '(' | ')'))
        };
        if !part_ok(schema) || !part_ok(name) {
            return Err(invalid());
        }
        Ok(FunctionName {
            schema: schema.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// What the catalog says about one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub schema: String,
    pub name: String,
    /// `proargtypes`: the argument types' OIDs, in order.
    pub arg_types: Vec<u32>,
}

/// A SQL string literal of a name checked by [`FunctionName::parse`] (no
/// backslash or control character), so doubling quotes is enough whatever
/// `standard_conforming_strings` says.
fn name_literal(name: &str) -> String {
    format!("'{}'", name.replace('\'', "''"))
}

/// The catalog query that finds every overload of the configured functions.
/// Each answer row is `(oid, schema, name, argument type OIDs)` in text;
/// `None` without configured functions.
pub fn lookup_sql(functions: &[FunctionName]) -> Option<String> {
    if functions.is_empty() {
        return None;
    }
    let values: Vec<String> = functions
        .iter()
        .map(|f| format!("({},{})", name_literal(&f.schema), name_literal(&f.name)))
        .collect();
    Some(format!(
        "SELECT p.oid::pg_catalog.int8, n.nspname, p.proname, p.proargtypes::pg_catalog.text \
         FROM pg_catalog.pg_proc p \
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE (n.nspname, p.proname) IN (VALUES {})",
        values.join(",")
    ))
}

/// The catalog query naming the function a refused call asked for: one row
/// `(schema, name)`, or none.
pub fn name_sql(oid: u32) -> String {
    format!(
        "SELECT n.nspname, p.proname FROM pg_catalog.pg_proc p \
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = {oid}"
    )
}

fn text_value<'a>(values: &[Option<&'a [u8]>], i: usize) -> Option<&'a str> {
    std::str::from_utf8((*values.get(i)?)?).ok()
}

/// One answer row of [`lookup_sql`]; `None` when it is not one.
pub fn parse_lookup_row(values: &[Option<&[u8]>]) -> Option<(u32, Signature)> {
    if values.len() != 4 {
        return None;
    }
    let oid = text_value(values, 0)?.parse::<u32>().ok()?;
    let arg_types = text_value(values, 3)?
        .split_ascii_whitespace()
        .map(str::parse::<u32>)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some((
        oid,
        Signature {
            schema: text_value(values, 1)?.to_owned(),
            name: text_value(values, 2)?.to_owned(),
            arg_types,
        },
    ))
}

/// One answer row of [`name_sql`]: `(schema, name)`.
pub fn parse_name_row(values: &[Option<&[u8]>]) -> Option<(String, String)> {
    if values.len() != 2 {
        return None;
    }
    Some((
        text_value(values, 0)?.to_owned(),
        text_value(values, 1)?.to_owned(),
    ))
}

/// A quoted identifier: the catalog's spelling, exactly.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statement a call is judged and recorded as: `SELECT schema.name(args)`,
/// each argument a literal when it can be read (see [`render_argument`]), else
/// the parameter `$n` it would be in the extended protocol.
pub fn equivalent_sql(signature: &Signature, call: &FunctionCall<'_>) -> String {
    let args: Vec<String> = call
        .args
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let binary = match call.arg_formats.as_slice() {
                [] => false,
                [one] => *one == 1,
                many => many.get(i) == Some(&1),
            };
            let type_oid = signature.arg_types.get(i).copied();
            render_argument(*value, binary, type_oid).unwrap_or_else(|| format!("${}", i + 1))
        })
        .collect();
    format!(
        "SELECT {}.{}({})",
        quote_ident(&signature.schema),
        quote_ident(&signature.name),
        args.join(", ")
    )
}

/// The statement recorded for a call of a function known only by name.
pub fn named_call_sql(schema: &str, name: &str, args: usize) -> String {
    let params: Vec<String> = (1..=args).map(|i| format!("${i}")).collect();
    format!(
        "SELECT {}.{}({})",
        quote_ident(schema),
        quote_ident(name),
        params.join(", ")
    )
}

// Type OIDs of the binary formats read here (fixed in PostgreSQL's catalog).
const BOOL: u32 = 16;
const BYTEA: u32 = 17;
const CHAR: u32 = 18;
const NAME: u32 = 19;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const TEXT: u32 = 25;
const OID: u32 = 26;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const BPCHAR: u32 = 1042;
const VARCHAR: u32 = 1043;

/// An argument as a SQL literal, or `None` when it is too long or cannot be
/// read with certainty (then the caller writes a parameter instead).
pub fn render_argument(
    value: Option<&[u8]>,
    binary: bool,
    type_oid: Option<u32>,
) -> Option<String> {
    let Some(value) = value else {
        return Some("NULL".to_owned());
    };
    if value.len() > MAX_LITERAL_BYTES {
        return None;
    }
    if !binary {
        return string_literal(value);
    }
    match type_oid? {
        BOOL => match value {
            [0] => Some("false".to_owned()),
            [1] => Some("true".to_owned()),
            _ => None,
        },
        INT2 => exact(value).map(|b| i16::from_be_bytes(b).to_string()),
        INT4 => exact(value).map(|b| i32::from_be_bytes(b).to_string()),
        OID => exact(value).map(|b| u32::from_be_bytes(b).to_string()),
        INT8 => exact(value).map(|b| i64::from_be_bytes(b).to_string()),
        FLOAT4 => exact(value)
            .map(f32::from_be_bytes)
            .filter(|f| f.is_finite())
            .map(|f| format!("{f:e}")),
        FLOAT8 => exact(value)
            .map(f64::from_be_bytes)
            .filter(|f| f.is_finite())
            .map(|f| format!("{f:e}")),
        TEXT | VARCHAR | BPCHAR | NAME | CHAR => string_literal(value),
        BYTEA => {
            let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
            Some(format!("E'\\\\x{hex}'::pg_catalog.bytea"))
        }
        _ => None,
    }
}

/// A binary value of exactly `N` bytes.
fn exact<const N: usize>(value: &[u8]) -> Option<[u8; N]> {
    value.try_into().ok()
}

/// An `E''` literal of UTF-8 text without control characters (which means the
/// same whatever `standard_conforming_strings` says); `None` for other bytes.
fn string_literal(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    if text.chars().any(char::is_control) {
        return None;
    }
    let mut literal = String::with_capacity(text.len() + 4);
    literal.push_str("E'");
    for c in text.chars() {
        match c {
            '\\' => literal.push_str("\\\\"),
            '\'' => literal.push_str("''"),
            c => literal.push(c),
        }
    }
    literal.push('\'');
    Some(literal)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn call<'a>(formats: Vec<i16>, args: Vec<Option<&'a [u8]>>) -> FunctionCall<'a> {
        FunctionCall {
            oid: 952,
            arg_formats: formats,
            args,
            result_format: 1,
        }
    }

    fn signature(name: &str, arg_types: Vec<u32>) -> Signature {
        Signature {
            schema: "pg_catalog".into(),
            name: name.into(),
            arg_types,
        }
    }

    #[test]
    fn configured_names_default_to_pg_catalog_and_reject_what_is_not_a_name() {
        assert_eq!(
            FunctionName::parse("lo_open").unwrap(),
            FunctionName {
                schema: "pg_catalog".into(),
                name: "lo_open".into()
            }
        );
        assert_eq!(FunctionName::parse("app.Fn").unwrap().name, "Fn");
        for bad in [
            "",
            ".x",
            "x.",
            "a.b.c",
            "x\\y",
            "f()",
            "\"f\"",
            "a\nb",
            &"x".repeat(64),
        ] {
            assert!(FunctionName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lookup_finds_every_overload_by_schema_and_name() {
        let names = [
            FunctionName::parse("lo_open").unwrap(),
            FunctionName::parse("o'brien.f").unwrap(),
        ];
        let sql = lookup_sql(&names).unwrap();
        assert!(
            sql.contains("IN (VALUES ('pg_catalog','lo_open'),('o''brien','f'))"),
            "{sql}"
        );
        assert_eq!(lookup_sql(&[]), None);
        let row = [
            Some(&b"952"[..]),
            Some(b"pg_catalog"),
            Some(b"lo_open"),
            Some(b"26 23"),
        ];
        assert_eq!(
            parse_lookup_row(&row),
            Some((952, signature("lo_open", vec![26, 23])))
        );
        let no_args = [Some(&b"1"[..]), Some(b"s"), Some(b"f"), Some(b"")];
        assert_eq!(
            parse_lookup_row(&no_args).unwrap().1.arg_types,
            Vec::<u32>::new()
        );
        assert_eq!(parse_lookup_row(&row[..3]), None);
        assert_eq!(parse_lookup_row(&[None, None, None, None]), None);
    }

    #[test]
    fn binary_arguments_are_read_by_their_type() {
        // libpq's lo_open(oid, int4) and lo_lseek64(int4, int8, int4), all binary.
        let open = call(
            vec![1],
            vec![Some(&[0, 0, 0x40, 0x10]), Some(&[0, 4, 0, 0])],
        );
        assert_eq!(
            equivalent_sql(&signature("lo_open", vec![OID, INT4]), &open),
            r#"SELECT "pg_catalog"."lo_open"(16400, 262144)"#
        );
        let seek = call(
            vec![1],
            vec![Some(&[0, 0, 0, 1]), Some(&[0xff; 8]), Some(&[0, 0, 0, 2])],
        );
        assert_eq!(
            equivalent_sql(&signature("lo_lseek64", vec![INT4, INT8, INT4]), &seek),
            r#"SELECT "pg_catalog"."lo_lseek64"(1, -1, 2)"#
        );
        // A short bytea is a literal; a long one, or a type not read here, a parameter.
        let write = call(vec![1], vec![Some(&[0, 0, 0, 1]), Some(b"\x00'\\")]);
        assert_eq!(
            equivalent_sql(&signature("lowrite", vec![INT4, BYTEA]), &write),
            r#"SELECT "pg_catalog"."lowrite"(1, E'\\x00275c'::pg_catalog.bytea)"#
        );
        let long = vec![7u8; MAX_LITERAL_BYTES + 1];
        let write = call(vec![1], vec![Some(&[0, 0, 0, 1]), Some(&long)]);
        assert_eq!(
            equivalent_sql(&signature("lowrite", vec![INT4, BYTEA]), &write),
            r#"SELECT "pg_catalog"."lowrite"(1, $2)"#
        );
        let odd = call(vec![1], vec![Some(&[1, 2, 3])]);
        assert_eq!(
            equivalent_sql(&signature("f", vec![INT4]), &odd),
            r#"SELECT "pg_catalog"."f"($1)"#
        );
        assert_eq!(
            equivalent_sql(
                &signature("f", vec![1186]),
                &call(vec![1], vec![Some(b"xx")])
            ),
            r#"SELECT "pg_catalog"."f"($1)"#
        );
    }

    #[test]
    fn text_arguments_are_escaped_literals_and_nulls_stay_null() {
        let c = call(
            vec![0],
            vec![Some(b"select 'x' \\ y"), None, Some(b"true"), Some(b"a\rb")],
        );
        assert_eq!(
            equivalent_sql(&signature("query_to_xml", vec![TEXT, BOOL, BOOL, TEXT]), &c),
            r#"SELECT "pg_catalog"."query_to_xml"(E'select ''x'' \\ y', NULL, E'true', $4)"#
        );
        // Per-argument formats: the first text, the second binary.
        let c = call(vec![0, 1], vec![Some(b"role"), Some(b"\x01")]);
        assert_eq!(
            equivalent_sql(&signature("set_config", vec![TEXT, BOOL]), &c),
            r#"SELECT "pg_catalog"."set_config"(E'role', true)"#
        );
        let invalid_utf8 = call(vec![0], vec![Some(b"\xff")]);
        assert_eq!(
            equivalent_sql(&signature("f", vec![TEXT]), &invalid_utf8),
            r#"SELECT "pg_catalog"."f"($1)"#
        );
    }

    #[test]
    fn names_with_quotes_stay_one_identifier() {
        let s = Signature {
            schema: "we\"ird".into(),
            name: "f".into(),
            arg_types: vec![],
        };
        assert_eq!(
            equivalent_sql(&s, &call(vec![], vec![])),
            r#"SELECT "we""ird"."f"()"#
        );
        assert_eq!(
            named_call_sql("pg_catalog", "query_to_xml", 2),
            r#"SELECT "pg_catalog"."query_to_xml"($1, $2)"#
        );
    }
}
