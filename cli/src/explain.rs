//! `gatehouse explain`: a dry run of a policy for policy authors. Given a
//! configuration, an identity and a SQL text or a Kubernetes request, prints the
//! decision the filter's own policy code reaches and the rule behind it.
//!
//! Token verification is not simulated: the identity is taken as given.

// Reading a `serde_json::Value` by key never panics: an absent key reads as null.
#![allow(clippy::indexing_slicing)]

use crate::document::{self, Compiled, Kind};
use crate::identities;
use gatehouse_core::identity::{Identity, IdentityConfig};
use gatehouse_core::policy::Decision;
use gatehouse_core::record::FilterMode;
use gatehouse_kubernetes::exec::{StreamRequest, authorization_verb};
use gatehouse_kubernetes::masking::needs_masking;
use gatehouse_kubernetes::policy::{Policy, Request};
use gatehouse_kubernetes::request_info::{DecodedRequest, decode_request};
use gatehouse_postgres::FilterConfig;
use gatehouse_postgres::policy::{PgPolicy, SessionContext};
use gatehouse_postgres::sql;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

/// Show the decision a policy reaches for an identity and a statement or request.
///
/// Prints the decision the policy in FILE reaches for the identity and the SQL
/// text (Postgres) or the request (Kubernetes), the rule that decided, and what
/// would be masked. The identity is given with --subject/--group/--claim, by
/// name from an identities file (--identity), or read from a token (--token,
/// whose signature is not checked: this is a dry run). --claim repeated with one
/// name gives the claim a list of values.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 explained, 1 the file is invalid, 2 usage or read error.")]
pub struct ExplainArgs {
    /// The filter configuration or policy to explain.
    file: String,
    /// What FILE holds; told from the content when absent.
    #[arg(long, value_parser = Kind::NAMES)]
    kind: Option<String>,
    /// The caller's subject.
    #[arg(long, value_name = "NAME", help_heading = "Identity")]
    subject: Option<String>,
    /// A group of the caller (repeat for more).
    #[arg(long, value_name = "GROUP", help_heading = "Identity")]
    group: Vec<String>,
    /// A claim of the caller, NAME=VALUE (repeat for more).
    #[arg(long, value_name = "NAME=VALUE", help_heading = "Identity")]
    claim: Vec<String>,
    /// A named identity from the identities file (e.g. the demo's `developer`).
    #[arg(long, value_name = "NAME", help_heading = "Identity",
          conflicts_with_all = ["subject", "group", "claim", "token"])]
    identity: Option<String>,
    /// The identities file for --identity (the demo sets GATEHOUSE_IDENTITIES).
    #[arg(
        long,
        value_name = "FILE",
        env = "GATEHOUSE_IDENTITIES",
        help_heading = "Identity"
    )]
    identities: Option<PathBuf>,
    /// A token (JWT) whose claims give the identity; its signature is not checked.
    #[arg(long, value_name = "JWT", help_heading = "Identity",
          conflicts_with_all = ["subject", "group", "claim"])]
    token: Option<String>,
    /// Print JSON for programs.
    #[arg(long)]
    json: bool,
    /// SQL text to judge (Postgres).
    #[arg(long, value_name = "TEXT", help_heading = "Postgres")]
    sql: Option<String>,
    /// The session's database.
    #[arg(long, value_name = "DB", help_heading = "Postgres")]
    database: Option<String>,
    /// The session's database role (also checked against token login's role grants).
    #[arg(long, value_name = "ROLE", help_heading = "Postgres")]
    role: Option<String>,
    /// A Kubernetes request, "METHOD /path?query".
    #[arg(long, value_name = "REQUEST", help_heading = "Kubernetes")]
    request: Option<String>,
    /// A request header, "Name: value" (repeat for more).
    #[arg(long, value_name = "HEADER", help_heading = "Kubernetes")]
    header: Vec<String>,
    /// The request's verb (get, list, watch, create, update, patch, delete, deletecollection).
    #[arg(long, help_heading = "Kubernetes")]
    verb: Option<String>,
    /// The resource, RESOURCE[/SUBRESOURCE].
    #[arg(long, help_heading = "Kubernetes")]
    resource: Option<String>,
    #[arg(long, help_heading = "Kubernetes")]
    namespace: Option<String>,
    #[arg(long, help_heading = "Kubernetes")]
    name: Option<String>,
    #[arg(long, value_name = "GROUP", help_heading = "Kubernetes")]
    api_group: Option<String>,
    #[arg(long, value_name = "VERSION", help_heading = "Kubernetes")]
    api_version: Option<String>,
}

/// Entry point for `gatehouse explain ...`.
pub fn run(args: ExplainArgs) -> ExitCode {
    match explain(&args) {
        Ok(explanation) => {
            if args.json {
                println!("{}", explanation.json);
            } else {
                for line in &explanation.lines {
                    println!("{line}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => usage_error(&message),
        Err(Failure::Invalid(message)) => {
            eprintln!("gatehouse explain: {message}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("gatehouse explain: {message} (see `gatehouse explain --help`)");
    ExitCode::from(2)
}

enum Failure {
    /// Bad arguments or an unreadable file (exit 2).
    Usage(String),
    /// The configuration does not compile (exit 1).
    Invalid(String),
}

/// The same explanation for people and for programs.
struct Explanation {
    lines: Vec<String>,
    json: Value,
}

fn explain(args: &ExplainArgs) -> Result<Explanation, Failure> {
    let file = &args.file;
    let postgres = args.sql.as_deref().is_some();
    let kubernetes = args.request.as_deref().is_some() || args.verb.as_deref().is_some();
    let candidates: &[Kind] = match (postgres, kubernetes) {
        (true, false) => &[Kind::PostgresFilter, Kind::PostgresPolicy],
        (false, true) => &[Kind::Kubernetes],
        _ => {
            return Err(Failure::Usage(
                "give either --sql, or --request or --verb".to_owned(),
            ));
        }
    };
    let json = document::read(file).map_err(Failure::Usage)?;
    let kind = match args.kind.as_deref() {
        Some(name) => Kind::from_name(name)
            .filter(|kind| candidates.contains(kind))
            .ok_or_else(|| Failure::Usage(format!("--kind {name} does not fit this request")))?,
        None => {
            let doc: Value = serde_json::from_slice(&json)
                .map_err(|e| Failure::Invalid(format!("{file}: {e}")))?;
            document::detect(&doc, &json, candidates)
                .map_err(|e| Failure::Usage(format!("{file}: {e}")))?
        }
    };
    let compiled = kind.check(&json).map_err(|e| {
        Failure::Invalid(format!(
            "{file} is not a valid {} configuration: {e} (see `gatehouse validate`)",
            kind.name()
        ))
    })?;
    let trusted = trusted_issuers(&compiled, &json);
    let (identity, notes) = identity(args, trusted.as_ref())?;
    let mode = match &compiled {
        Compiled::PostgresFilter(config) => config.mode,
        Compiled::Kubernetes(gate) => gate.mode(),
        Compiled::PostgresPolicy(_) => FilterMode::Enforce,
    };
    let explanation = match (compiled, args.sql.as_deref()) {
        (Compiled::PostgresFilter(config), Some(sql)) => {
            let mut explanation = match &config.policy {
                Some(policy) => explain_sql(&policy.0, &identity, args, sql),
                None => no_postgres_policy(&identity, sql),
            };
            preview_login_and_masking(&mut explanation, &config, &identity, args, sql);
            Ok(explanation)
        }
        (Compiled::PostgresPolicy(policy), Some(sql)) => {
            Ok(explain_sql(&policy, &identity, args, sql))
        }
        (Compiled::Kubernetes(gate), None) => explain_request(gate.policy(), &identity, args),
        _ => Err(Failure::Usage(
            "the request does not fit the configuration's kind".to_owned(),
        )),
    }?;
    let mut explanation = with_mode(explanation, mode);
    explanation.lines.extend(notes);
    Ok(explanation)
}

/// The issuers a configuration trusts, for reading a token as the filter would.
fn trusted_issuers(compiled: &Compiled, json: &[u8]) -> Option<IdentityConfig> {
    match compiled {
        Compiled::Kubernetes(gate) => gate.policy().identity().cloned(),
        Compiled::PostgresFilter(_) => serde_json::from_slice::<Value>(json)
            .ok()
            .and_then(|doc| serde_json::from_value(doc["identity"].clone()).ok()),
        Compiled::PostgresPolicy(_) => None,
    }
}

/// What token login and masking would do for this identity and statement.
fn preview_login_and_masking(
    explanation: &mut Explanation,
    config: &FilterConfig,
    identity: &Identity,
    args: &ExplainArgs,
    sql: &str,
) {
    let mut preview = serde_json::Map::new();
    if let (Some(login), Some(role)) = (&config.token_login, args.role.as_deref()) {
        let allowed = login.login.may_use_role(identity, role);
        explanation.lines.push(if allowed {
            format!("login: role \"{role}\" is open to this identity")
        } else {
            format!("login: role \"{role}\" is refused to this identity (FATAL 28000)")
        });
        preview.insert("login_allowed".to_owned(), json!(allowed));
    }
    if let Some(masking) = &config.masking {
        let masks = gatehouse_postgres::masking::preview::preview(
            &masking.policy,
            identity,
            &sql::analyze(sql, &Default::default()),
        );
        explanation.lines.extend(masks.lines());
        preview.insert(
            "masking".to_owned(),
            serde_json::to_value(&masks).unwrap_or_default(),
        );
    }
    if let Some(object) = explanation.json.as_object_mut() {
        object.extend(preview);
    }
}

/// A shadow configuration's decision is only recorded: say so.
fn with_mode(mut explanation: Explanation, mode: FilterMode) -> Explanation {
    if mode.is_shadow() {
        explanation.lines.insert(
            1,
            "mode: shadow (observe only: recorded, never applied)".to_owned(),
        );
        if let Some(object) = explanation.json.as_object_mut() {
            object.insert("mode".to_owned(), json!(mode.as_str()));
        }
    }
    explanation
}

/// The identity to explain for, with notes on how it was had.
fn identity(
    args: &ExplainArgs,
    trusted: Option<&IdentityConfig>,
) -> Result<(Identity, Vec<String>), Failure> {
    if let Some(name) = &args.identity {
        let identity = identities::named(args.identities.as_deref(), name)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        return Ok((identity, Vec::new()));
    }
    let Some(token) = &args.token else {
        return Ok((claimed_identity(args)?, Vec::new()));
    };
    let read = identities::from_token(token, trusted, now_unix())
        .map_err(|e| Failure::Usage(format!("--token: {e}")))?;
    let mut notes = vec!["token: claims read without checking the signature".to_owned()];
    if !read.trusted_issuer {
        notes.push(format!(
            "token: issuer {} is not trusted by this configuration: the filter would refuse the token",
            read.identity.issuer.as_deref().unwrap_or("(none)")
        ));
    }
    if let Some(past) = read.expired_for.filter(|past| *past > 0) {
        notes.push(format!(
            "token: expired {past} s ago (past exp and the clock-skew leeway): the filter would refuse it"
        ));
    }
    Ok((read.identity, notes))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The identity from `--subject`, `--group` and `--claim`.
fn claimed_identity(args: &ExplainArgs) -> Result<Identity, Failure> {
    let mut identity = Identity::claimed(args.subject.as_deref().unwrap_or_default());
    identity.groups = args.group.clone();
    for claim in &args.claim {
        let Some((name, value)) = claim.split_once('=') else {
            return Err(Failure::Usage(format!("--claim {claim}: write NAME=VALUE")));
        };
        let value = Value::String(value.to_owned());
        match identity.claims.get_mut(name) {
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.clone(), value]),
            None => {
                identity.claims.insert(name.to_owned(), value);
            }
        }
    }
    Ok(identity)
}

fn identity_json(identity: &Identity) -> Value {
    json!({
        "subject": identity.subject,
        "groups": identity.groups,
        "claims": identity.claims,
    })
}

fn identity_line(identity: &Identity) -> String {
    let mut line = format!("identity: subject \"{}\"", identity.subject);
    if !identity.groups.is_empty() {
        line.push_str(&format!(", groups {}", identity.groups.join(", ")));
    }
    for (name, value) in &identity.claims {
        line.push_str(&format!(", claim {name}={value}"));
    }
    line
}

/// The decision lines every explanation starts with.
fn decision_lines(decision: &Decision) -> Vec<String> {
    let mut lines = vec![format!("decision: {}", action_name(decision))];
    lines.push(match &decision.rule {
        Some(rule) => format!("rule: {rule}"),
        None => "rule: (none: the policy's default)".to_owned(),
    });
    if let Some(message) = &decision.message {
        lines.push(format!("message: {message}"));
    }
    lines
}

fn action_name(decision: &Decision) -> String {
    serde_json::to_value(decision.action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn no_postgres_policy(identity: &Identity, sql: &str) -> Explanation {
    let decision = Decision::allow();
    let mut lines = decision_lines(&decision);
    lines.push("policy: none configured, so every statement is allowed".to_owned());
    lines.push(identity_line(identity));
    Explanation {
        lines,
        json: json!({
            "kind": "postgres",
            "policy_version": null,
            "identity": identity_json(identity),
            "sql": sql,
            "decision": decision,
        }),
    }
}

fn explain_sql(
    policy: &PgPolicy,
    identity: &Identity,
    args: &ExplainArgs,
    sql: &str,
) -> Explanation {
    let context = SessionContext {
        identity: identity.clone(),
        database: args.database.as_deref().unwrap_or_default().to_owned(),
        role: args.role.as_deref().unwrap_or_default().to_owned(),
        ..SessionContext::default()
    };
    let verdict = policy.decide(&context, sql);
    let analysis = sql::analyze(sql, policy.limits());
    let mut lines = decision_lines(&verdict.decision);
    lines.push(format!("policy version: {}", policy.version()));
    lines.push(identity_line(identity));
    if !context.database.is_empty() || !context.role.is_empty() {
        lines.push(format!(
            "session: database \"{}\", role \"{}\"",
            context.database, context.role
        ));
    }
    if let Some(index) = verdict.blocked_by {
        lines.push(format!("blocked by statement {index}"));
    }
    for (verdict, info) in verdict.statements.iter().zip(&analysis.statements) {
        let analysis = serde_json::to_value(info).unwrap_or_default();
        let runs: Vec<String> = info
            .walk()
            .into_iter()
            .skip(1)
            .map(|s| text(&serde_json::to_value(s.kind).unwrap_or_default()))
            .collect();
        lines.push(format!(
            "statement {}: {}{} -> {}{}",
            verdict.index,
            text(&analysis["kind"]),
            if info.unparseable {
                " (could not be analyzed)"
            } else {
                ""
            },
            action_name(&verdict.decision),
            verdict.decision.rule.as_ref().map_or_else(
                || " (default)".to_owned(),
                |rule| format!(" by rule {rule}")
            ),
        ));
        let objects: Vec<String> = info
            .objects
            .iter()
            .map(|o| {
                let access = text(&serde_json::to_value(o.access).unwrap_or_default());
                match &o.schema {
                    Some(schema) => format!("{schema}.{} ({access})", o.name),
                    None => format!("{} ({access})", o.name),
                }
            })
            .collect();
        let properties: Vec<String> = analysis["properties"]
            .as_object()
            .map(|props| {
                props
                    .iter()
                    .filter(|(_, set)| set.as_bool() == Some(true))
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        for (label, items) in [
            ("objects", objects),
            ("functions", info.functions.clone()),
            ("properties", properties),
            ("runs", runs),
        ] {
            if !items.is_empty() {
                lines.push(format!("  {label}: {}", items.join(", ")));
            }
        }
    }
    Explanation {
        lines,
        json: json!({
            "kind": "postgres",
            "policy_version": policy.version(),
            "identity": identity_json(identity),
            "database": context.database,
            "role": context.role,
            "sql": sql,
            "decision": verdict.decision,
            "blocked_by": verdict.blocked_by,
            "statements": verdict.statements,
            "analysis": analysis.statements,
        }),
    }
}

/// A JSON string's text, or the value as JSON.
fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// The method and raw path of the request to explain.
fn request_target(args: &ExplainArgs) -> Result<(String, String), Failure> {
    if let Some(request) = args.request.as_deref() {
        let mut words = request.split_whitespace();
        return match (words.next(), words.next(), words.next()) {
            (Some(method), Some(path), None) => Ok((method.to_ascii_uppercase(), path.to_owned())),
            _ => Err(Failure::Usage(format!(
                "--request \"{request}\": write METHOD /path"
            ))),
        };
    }
    let verb = args.verb.as_deref().unwrap_or_default();
    let Some(resource) = args.resource.as_deref() else {
        return Err(Failure::Usage("--verb needs --resource".to_owned()));
    };
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let name = args.name.as_deref().unwrap_or_default();
    let namespace = args.namespace.as_deref().unwrap_or_default();
    for (option, value) in [
        ("--resource", resource),
        ("--resource", subresource),
        ("--name", name),
        ("--namespace", namespace),
    ] {
        if value.contains(['/', '?', '%', '#']) || value.chars().any(char::is_whitespace) {
            return Err(Failure::Usage(format!(
                "{option} \"{value}\" is not a Kubernetes name"
            )));
        }
    }
    let version = args.api_version.as_deref().unwrap_or("v1");
    let mut path = match args.api_group.as_deref() {
        None | Some("" | "core") => format!("/api/{version}"),
        Some(group) => format!("/apis/{group}/{version}"),
    };
    if !namespace.is_empty() {
        path.push_str(&format!("/namespaces/{namespace}"));
    }
    path.push_str(&format!("/{resource}"));
    let needs_name =
        matches!(verb, "get" | "update" | "patch" | "delete") || !subresource.is_empty();
    if needs_name && name.is_empty() {
        return Err(Failure::Usage(format!(
            "--verb {verb} on {resource} needs --name"
        )));
    }
    if !name.is_empty() {
        path.push_str(&format!("/{name}"));
    }
    if !subresource.is_empty() {
        path.push_str(&format!("/{subresource}"));
    }
    let (method, query) = match verb {
        "get" | "list" => ("GET", ""),
        "watch" => ("GET", "?watch=true"),
        "create" => ("POST", ""),
        "update" => ("PUT", ""),
        "patch" => ("PATCH", ""),
        "delete" | "deletecollection" => ("DELETE", ""),
        other => {
            return Err(Failure::Usage(format!(
                "--verb {other}: use get, list, watch, create, update, patch, delete or deletecollection (or --request)"
            )));
        }
    };
    if matches!(verb, "list" | "watch" | "deletecollection" | "create")
        && !name.is_empty()
        && subresource.is_empty()
    {
        return Err(Failure::Usage(format!(
            "--verb {verb} acts on a collection; leave out --name"
        )));
    }
    Ok((method.to_owned(), format!("{path}{query}")))
}

/// `Name: value` headers, names lowercased as Envoy hands them to the filter.
fn headers(args: &ExplainArgs) -> Result<Vec<(String, String)>, Failure> {
    args.header
        .iter()
        .map(|header| {
            header
                .split_once(':')
                .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| Failure::Usage(format!("--header \"{header}\": write Name: value")))
        })
        .collect()
}

fn explain_request(
    policy: &Policy,
    identity: &Identity,
    args: &ExplainArgs,
) -> Result<Explanation, Failure> {
    let (method, path) = request_target(args)?;
    let headers = headers(args)?;
    let version = policy.version().map(str::to_owned);
    let DecodedRequest { info, query } = match decode_request(&method, &path) {
        Ok(decoded) => decoded,
        Err(error) => {
            let message = format!("gatehouse refused an ambiguous request: {error}");
            let status = error.http_status();
            return Ok(Explanation {
                lines: vec![
                    format!(
                        "decision: refused before policy ({status} {})",
                        error.reason()
                    ),
                    format!("message: {message}"),
                ],
                json: json!({
                    "kind": "kubernetes",
                    "policy_version": version,
                    "request": {"method": method, "path": path},
                    "refused": {"status": status, "message": message},
                }),
            });
        }
    };
    let request_json = json!({
        "method": method,
        "path": path,
        "verb": authorization_verb(&info),
        "api_group": info.api_group,
        "api_version": info.api_version,
        "namespace": info.namespace,
        "resource": info.resource,
        "subresource": info.subresource,
        "name": info.name,
        "resource_request": info.is_resource_request,
    });
    // The filter refuses impersonation headers from callers before policy runs.
    if let Some((name, _)) = headers
        .iter()
        .find(|(name, _)| gatehouse_kubernetes::gate::is_impersonation_header(name))
    {
        let message = format!("gatehouse does not forward {name} headers");
        return Ok(Explanation {
            lines: vec![
                "decision: refused before policy (403 Forbidden)".to_owned(),
                format!("message: {message}"),
            ],
            json: json!({
                "kind": "kubernetes",
                "policy_version": version,
                "identity": identity_json(identity),
                "request": request_json,
                "refused": {"status": 403, "message": message},
            }),
        });
    }
    let stream = StreamRequest::from_request(
        &info,
        &query,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let verdict = policy.decide(&Request {
        info: &info,
        stream: stream.as_ref(),
        identity,
    });
    let masked =
        !verdict.decision.action.blocks() && verdict.mask && needs_masking(&info, policy.masking());
    let mut lines = decision_lines(&verdict.decision);
    lines.push(format!(
        "policy version: {}",
        version.as_deref().unwrap_or("(none)")
    ));
    lines.push(identity_line(identity));
    lines.push(if info.is_resource_request {
        let resource = info.resource_path();
        let group = info.api_group_name();
        let mut line = format!(
            "request: {} {resource} (api group {group})",
            authorization_verb(&info)
        );
        if !info.name.is_empty() {
            line.push_str(&format!(", name {}", info.name));
        }
        if !info.namespace.is_empty() {
            line.push_str(&format!(", namespace {}", info.namespace));
        }
        line
    } else {
        format!("request: {} non-resource path {}", info.verb, info.path)
    });
    if let Some(stream) = &stream
        && !stream.command.is_empty()
    {
        lines.push(format!("command: {}", stream.command.join(" ")));
    }
    if !verdict.decision.action.blocks() {
        lines.push(format!(
            "response masking: {}",
            if masked { "yes" } else { "no" }
        ));
    }
    Ok(Explanation {
        lines,
        json: json!({
            "kind": "kubernetes",
            "policy_version": version,
            "identity": identity_json(identity),
            "request": request_json,
            "decision": verdict.decision,
            "masked": masked,
        }),
    })
}
