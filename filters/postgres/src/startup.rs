//! The StartupMessage's parameters, judged before the server sees them.
//!
//! The server applies every startup parameter before the first statement, and
//! some change what later statements mean: `options=-c
//! standard_conforming_strings=off` changes how strings are lexed, a multibyte
//! `client_encoding` can hide a quote or backslash byte inside a character,
//! `role` switches the role. So a session starts only when each parameter is
//! one the configuration allows ([`EngineConfig::startup_parameters`]);
//! otherwise the client gets a FATAL naming the parameter and the server never
//! sees the StartupMessage.
//!
//! - `user` and `database` are always allowed.
//! - `options` is never allowed: its `-c` switches would each have to be judged
//!   as the SET they amount to, under the server's own escaping rules. A client
//!   can SET the same settings after connecting, where the policy judges them.
//! - `replication` is never allowed: a replication connection runs replication
//!   commands the policy cannot judge and can stream the whole cluster.
//! - Protocol options (`_pq_.*`) pass only when the server says it does not
//!   know them (NegotiateProtocolVersion lists them): one it accepted could
//!   change the protocol the filter decodes, so the session then ends before
//!   the client's first message (see [`protocol_options`]).
//! - A parameter given twice is refused: the server keeps the last value, and
//!   two spellings of one setting (names compare without case) must not pass
//!   as two settings.
//! - `client_encoding` must name an encoding in which no multibyte character
//!   contains a byte below 0x80 (so no quote or backslash can hide in one):
//!   SJIS, SHIFT_JIS_2004, BIG5, GBK, GB18030, UHC and JOHAB, under any alias the
//!   server accepts, are refused, and so is a name the server would not know.
//!
//! [`EngineConfig::startup_parameters`]: crate::EngineConfig::startup_parameters

use thiserror::Error;

/// Why a StartupMessage is refused. Its `Display` is the message the client sees.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StartupRefusal {
    #[error(
        "gatehouse: startup parameter \"options\" is not allowed through the gateway; \
         SET the settings after connecting"
    )]
    Options,
    #[error("gatehouse: replication connections are not allowed through the gateway")]
    Replication,
    #[error(
        "gatehouse: the server accepted protocol option \"{0}\", which the gateway does \
         not support; connect without it"
    )]
    AcceptedProtocolOption(String),
    #[error(
        "gatehouse: startup parameter \"{name}\" is not allowed through the gateway \
         (allowed: user, database, {allowed})"
    )]
    NotAllowed { name: String, allowed: String },
    #[error("gatehouse: startup parameter \"{0}\" is given more than once")]
    Duplicate(String),
    #[error(
        "gatehouse: client_encoding \"{value}\" ({encoding}) is not allowed: in it a \
         multibyte character can contain a quote or backslash byte; use UTF8"
    )]
    UnsafeEncoding {
        value: String,
        encoding: &'static str,
    },
    #[error("gatehouse: client_encoding \"{0}\" is not an encoding the gateway knows; use UTF8")]
    UnknownEncoding(String),
}

impl StartupRefusal {
    /// The SQLSTATE of the FATAL the client gets.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            StartupRefusal::AcceptedProtocolOption(_) => "0A000",
            StartupRefusal::UnsafeEncoding { .. } | StartupRefusal::UnknownEncoding(_) => "22023",
            StartupRefusal::Duplicate(_) => "08P01",
            _ => "42501",
        }
    }
}

/// Why a name cannot be on the configured allow list.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllowListError {
    #[error("\"{0}\" is not a setting name (letters, digits, '_' and '.')")]
    NotASetting(String),
    #[error("\"options\" cannot be allowed: its -c switches would bypass the statement policy")]
    Options,
    #[error("\"replication\" cannot be allowed: replication commands cannot be judged")]
    Replication,
    #[error("\"{0}\" is a protocol option, not a setting, and cannot be allowed")]
    ProtocolOption(String),
    #[error("\"{0}\" changes how the server lexes statements and cannot be allowed")]
    ChangesLexing(String),
    #[error("\"{0}\" switches the session's role and cannot be allowed")]
    SwitchesRole(String),
}

/// Settings the allow list may never name: what they change is what the policy judges.
const LEXING_SETTINGS: &[&str] = &["standard_conforming_strings", "backslash_quote"];
const ROLE_SETTINGS: &[&str] = &["role", "session_authorization"];

/// Checks a name for the configured allow list.
pub fn check_allowed_name(name: &str) -> Result<(), AllowListError> {
    if name == "options" {
        return Err(AllowListError::Options);
    }
    if name == "replication" {
        return Err(AllowListError::Replication);
    }
    if name.starts_with("_pq_.") {
        return Err(AllowListError::ProtocolOption(name.to_owned()));
    }
    let setting_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'));
    if !setting_name {
        return Err(AllowListError::NotASetting(name.to_owned()));
    }
    let lower = name.to_ascii_lowercase();
    if LEXING_SETTINGS.contains(&lower.as_str()) {
        return Err(AllowListError::ChangesLexing(name.to_owned()));
    }
    if ROLE_SETTINGS.contains(&lower.as_str()) {
        return Err(AllowListError::SwitchesRole(name.to_owned()));
    }
    Ok(())
}

/// Judges a StartupMessage's parameters against the allow list (checked with
/// [`check_allowed_name`]).
pub fn check(params: &[(&str, &str)], allowed: &[String]) -> Result<(), StartupRefusal> {
    let mut seen: Vec<String> = Vec::with_capacity(params.len());
    for (name, value) in params {
        // The server matches these keys exactly; every other key names a
        // setting, matched without regard to case.
        let key = match *name {
            "user" | "database" => (*name).to_owned(),
            "options" => return Err(StartupRefusal::Options),
            "replication" => return Err(StartupRefusal::Replication),
            n if n.starts_with("_pq_.") => (*name).to_owned(),
            n => {
                let key = n.to_ascii_lowercase();
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(n)) {
                    return Err(StartupRefusal::NotAllowed {
                        name: n.to_owned(),
                        allowed: allowed.join(", "),
                    });
                }
                if key == "client_encoding" {
                    check_client_encoding(value)?;
                }
                // A setting named like a special key is still a setting.
                format!("setting:{key}")
            }
        };
        if seen.contains(&key) {
            return Err(StartupRefusal::Duplicate((*name).to_owned()));
        }
        seen.push(key);
    }
    Ok(())
}

/// The protocol options (`_pq_.*`) among the parameters: each must be one the
/// server reports it does not know.
pub fn protocol_options(params: &[(&str, &str)]) -> Vec<String> {
    params
        .iter()
        .filter(|(name, _)| name.starts_with("_pq_."))
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

/// Checks a client encoding name as the server reads it; `Ok` with the
/// encoding's own name when it is safe to lex in.
pub fn check_client_encoding(value: &str) -> Result<&'static str, StartupRefusal> {
    match encoding(value) {
        Some((name, true)) => Ok(name),
        Some((name, false)) => Err(StartupRefusal::UnsafeEncoding {
            value: value.to_owned(),
            encoding: name,
        }),
        None => Err(StartupRefusal::UnknownEncoding(value.to_owned())),
    }
}

/// The encoding an encoding name means to the server, and whether it is safe:
/// `None` for a name the server would not accept (or the filter cannot read).
///
/// The server drops every character but letters and digits and compares the
/// rest without case (`Shift-JIS`, `shift_jis` and `SHIFTJIS` are one name).
pub fn encoding(value: &str) -> Option<(&'static str, bool)> {
    if !value.is_ascii() {
        return None;
    }
    let key: String = value
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let (_, name) = ENCODING_ALIASES.iter().find(|(alias, _)| *alias == key)?;
    Some((name, !UNSAFE_CLIENT_ENCODINGS.contains(name)))
}

/// Client-only encodings whose second (or later) byte of a character may be
/// below 0x80: a `'` (0x27) or `\` (0x5c) byte can be part of a character.
pub const UNSAFE_CLIENT_ENCODINGS: &[&str] = &[
    "SJIS",
    "SHIFT_JIS_2004",
    "BIG5",
    "GBK",
    "GB18030",
    "UHC",
    "JOHAB",
];

/// Every name the server accepts for an encoding (PostgreSQL's `pg_encname_tbl`,
/// letters and digits only, lower case), and the encoding it means.
pub const ENCODING_ALIASES: &[(&str, &str)] = &[
    ("abc", "WIN1258"),
    ("alt", "WIN866"),
    ("big5", "BIG5"),
    ("euccn", "EUC_CN"),
    ("eucjis2004", "EUC_JIS_2004"),
    ("eucjp", "EUC_JP"),
    ("euckr", "EUC_KR"),
    ("euctw", "EUC_TW"),
    ("gb18030", "GB18030"),
    ("gbk", "GBK"),
    ("iso88591", "LATIN1"),
    ("iso885910", "LATIN6"),
    ("iso885913", "LATIN7"),
    ("iso885914", "LATIN8"),
    ("iso885915", "LATIN9"),
    ("iso885916", "LATIN10"),
    ("iso88592", "LATIN2"),
    ("iso88593", "LATIN3"),
    ("iso88594", "LATIN4"),
    ("iso88595", "ISO_8859_5"),
    ("iso88596", "ISO_8859_6"),
    ("iso88597", "ISO_8859_7"),
    ("iso88598", "ISO_8859_8"),
    ("iso88599", "LATIN5"),
    ("johab", "JOHAB"),
    ("koi8", "KOI8R"),
    ("koi8r", "KOI8R"),
    ("koi8u", "KOI8U"),
    ("latin1", "LATIN1"),
    ("latin10", "LATIN10"),
    ("latin2", "LATIN2"),
    ("latin3", "LATIN3"),
    ("latin4", "LATIN4"),
    ("latin5", "LATIN5"),
    ("latin6", "LATIN6"),
    ("latin7", "LATIN7"),
    ("latin8", "LATIN8"),
    ("latin9", "LATIN9"),
    ("mskanji", "SJIS"),
    ("muleinternal", "MULE_INTERNAL"),
    ("shiftjis", "SJIS"),
    ("shiftjis2004", "SHIFT_JIS_2004"),
    ("sjis", "SJIS"),
    ("sqlascii", "SQL_ASCII"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("uhc", "UHC"),
    ("unicode", "UTF8"),
    ("utf8", "UTF8"),
    ("vscii", "WIN1258"),
    ("win", "WIN1251"),
    ("win1250", "WIN1250"),
    ("win1251", "WIN1251"),
    ("win1252", "WIN1252"),
    ("win1253", "WIN1253"),
    ("win1254", "WIN1254"),
    ("win1255", "WIN1255"),
    ("win1256", "WIN1256"),
    ("win1257", "WIN1257"),
    ("win1258", "WIN1258"),
    ("win866", "WIN866"),
    ("win874", "WIN874"),
    ("win932", "SJIS"),
    ("win936", "GBK"),
    ("win949", "UHC"),
    ("win950", "BIG5"),
    ("windows1250", "WIN1250"),
    ("windows1251", "WIN1251"),
    ("windows1252", "WIN1252"),
    ("windows1253", "WIN1253"),
    ("windows1254", "WIN1254"),
    ("windows1255", "WIN1255"),
    ("windows1256", "WIN1256"),
    ("windows1257", "WIN1257"),
    ("windows1258", "WIN1258"),
    ("windows866", "WIN866"),
    ("windows874", "WIN874"),
    ("windows932", "SJIS"),
    ("windows936", "GBK"),
    ("windows949", "UHC"),
    ("windows950", "BIG5"),
];

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_STARTUP_PARAMETERS;

    fn defaults() -> Vec<String> {
        DEFAULT_STARTUP_PARAMETERS
            .iter()
            .map(|n| (*n).to_owned())
            .collect()
    }

    #[test]
    fn what_real_clients_send_passes() {
        let allowed = defaults();
        let clients: &[&[(&str, &str)]] = &[
            // psql (libpq, C locale) and pgbench
            &[
                ("user", "app"),
                ("database", "shop"),
                ("application_name", "psql"),
                ("client_encoding", "SQL_ASCII"),
            ],
            // libpq with PGDATESTYLE, PGTZ and PGGEQO set
            &[
                ("user", "app"),
                ("datestyle", "ISO"),
                ("timezone", "UTC"),
                ("geqo", "off"),
            ],
            // pgjdbc 42.5 with currentSchema
            &[
                ("user", "app"),
                ("database", "shop"),
                ("client_encoding", "UTF8"),
                ("DateStyle", "ISO"),
                ("TimeZone", "Europe/Berlin"),
                ("extra_float_digits", "3"),
                ("application_name", "PostgreSQL JDBC Driver"),
                ("search_path", "public"),
            ],
            // node-postgres with timeouts
            &[
                ("user", "app"),
                ("database", "shop"),
                ("statement_timeout", "5000"),
                ("lock_timeout", "100"),
                ("idle_in_transaction_session_timeout", "600"),
                ("client_encoding", "UTF8"),
            ],
            // asyncpg
            &[("user", "app"), ("client_encoding", "utf-8")],
        ];
        for params in clients {
            assert_eq!(check(params, &allowed), Ok(()), "{params:?}");
        }
    }

    #[test]
    fn options_and_replication_are_refused_whatever_the_list() {
        let mut allowed = defaults();
        allowed.push("options".into());
        let refused = |params: &[(&str, &str)]| check(params, &allowed).unwrap_err();
        assert_eq!(
            refused(&[
                ("user", "app"),
                ("options", "-c standard_conforming_strings=off")
            ]),
            StartupRefusal::Options
        );
        assert_eq!(
            refused(&[("user", "app"), ("replication", "database")]),
            StartupRefusal::Replication
        );
        assert_eq!(
            refused(&[("replication", "false")]),
            StartupRefusal::Replication
        );
        // Protocol options are left to the server's answer.
        let params = [("user", "app"), ("_pq_.compression", "on")];
        assert_eq!(check(&params, &allowed), Ok(()));
        assert_eq!(protocol_options(&params), ["_pq_.compression"]);
    }

    #[test]
    fn settings_off_the_list_are_refused_with_the_list() {
        let allowed = defaults();
        let e = check(
            &[("user", "app"), ("standard_conforming_strings", "off")],
            &allowed,
        )
        .unwrap_err();
        assert!(
            matches!(&e, StartupRefusal::NotAllowed { name, .. } if name == "standard_conforming_strings")
        );
        assert!(
            e.to_string()
                .contains("allowed: user, database, application_name"),
            "{e}"
        );
        assert_eq!(e.sqlstate(), "42501");
        for name in [
            "role",
            "session_authorization",
            "Options",
            "USER",
            "backslash_quote",
        ] {
            assert!(check(&[(name, "x")], &allowed).is_err(), "{name}");
        }
    }

    #[test]
    fn a_parameter_given_twice_is_refused_in_any_spelling() {
        let allowed = defaults();
        // The server logs in as the last `user`.
        assert_eq!(
            check(&[("user", "app"), ("user", "postgres")], &allowed),
            Err(StartupRefusal::Duplicate("user".into()))
        );
        assert_eq!(
            check(
                &[("client_encoding", "UTF8"), ("CLIENT_ENCODING", "UTF8")],
                &allowed
            ),
            Err(StartupRefusal::Duplicate("CLIENT_ENCODING".into()))
        );
    }

    #[test]
    fn multibyte_encodings_that_can_hide_a_quote_are_refused_under_every_alias() {
        for alias in [
            "SJIS",
            "sjis",
            "Shift_JIS",
            "shift-jis",
            "MS_Kanji",
            "WIN932",
            "Windows932",
            "SHIFT_JIS_2004",
            "BIG5",
            "win950",
            "GBK",
            "WIN936",
            "gb18030",
            "UHC",
            "windows949",
            "JOHAB",
            "s.j.i.s",
        ] {
            let e = check_client_encoding(alias).unwrap_err();
            assert!(
                matches!(e, StartupRefusal::UnsafeEncoding { .. }),
                "{alias}: {e}"
            );
            assert!(
                check(&[("client_encoding", alias)], &defaults()).is_err(),
                "{alias}"
            );
        }
        for alias in [
            "UTF8",
            "utf-8",
            "Unicode",
            "SQL_ASCII",
            "LATIN1",
            "EUC_JP",
            "euc-kr",
            "KOI8-R",
            "WIN1252",
            "mule_internal",
        ] {
            assert!(check_client_encoding(alias).is_ok(), "{alias}");
        }
        for unknown in ["", "auto", "default", "utf16", "SJIS\u{e9}", "cp932"] {
            assert!(
                matches!(
                    check_client_encoding(unknown),
                    Err(StartupRefusal::UnknownEncoding(_))
                ),
                "{unknown}"
            );
        }
    }

    #[test]
    fn every_unsafe_encoding_has_an_alias_and_the_table_is_sorted() {
        for name in UNSAFE_CLIENT_ENCODINGS {
            assert!(ENCODING_ALIASES.iter().any(|(_, n)| n == name), "{name}");
        }
        assert!(ENCODING_ALIASES.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
