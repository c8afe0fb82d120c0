//! The table view: one line per record, columns aligned for reading.

use super::log::{Record, Who, is_kubernetes, is_postgres, masked_values, session_id};
use serde_json::Value;

/// Columns padded to their widest cell; the last column is not padded.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(i))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let width = widths.get(i).copied().unwrap_or(0);
                    line.push_str(&format!("{cell:width$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The records view's header.
pub const RECORD_COLUMNS: &[&str] = &[
    "TIME", "WHO", "WHERE", "WHAT", "DECISION", "RESULT", "MASKED",
];

/// The records as a table; records gatehouse does not write are left out.
pub fn records(records: &[&Record]) -> String {
    let mut table = Table::new(RECORD_COLUMNS);
    for record in records {
        if let Some(row) = record_row(&record.value) {
            table.push(row);
        }
    }
    table.render()
}

/// One record's row, or `None` for lines gatehouse does not write.
pub fn record_row(r: &Value) -> Option<Vec<String>> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let who = Who::of(r).short();
    if is_kubernetes(r) {
        // As kubectl writes it: `delete namespaces/prod`, `list pods -n dev`.
        let object = &r["objectRef"];
        let present = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let mut what = format!("{} ", text(&r["verb"]));
        match present(&object["resource"]) {
            Some(resource) => {
                what.push_str(&resource);
                if let Some(name) = present(&object["name"]) {
                    what.push_str(&format!("/{name}"));
                }
                if let Some(sub) = present(&object["subresource"]) {
                    what.push_str(&format!("/{sub}"));
                }
                if let Some(namespace) = present(&object["namespace"])
                    && resource != "namespaces"
                {
                    what.push_str(&format!(" -n {namespace}"));
                }
            }
            None => what.push_str(&text(&r["requestURI"])),
        }
        let annotations = &r["annotations"];
        let decision = match (
            annotations["authorization.k8s.io/decision"].as_str(),
            annotations["gatehouse.dev/rule"].as_str(),
        ) {
            (Some(decision), Some(rule)) => format!("{decision} {rule}"),
            (Some(decision), None) => decision.to_owned(),
            (None, _) => String::new(),
        };
        return Some(vec![
            short_time(&r["stageTimestamp"]),
            who,
            "kubernetes".to_owned(),
            what,
            decision,
            r["responseStatus"]["code"].to_string(),
            text(&annotations["gatehouse.dev/masked-fields"]),
        ]);
    }
    if r["type"] == "gatehouse.records_dropped" {
        return Some(vec![
            short_time(&r["time"]),
            "-".to_owned(),
            "gatehouse".to_owned(),
            format!("{} records dropped", r["dropped"]),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    if !is_postgres(r) {
        return None;
    }
    let place = format!("postgres #{}", session_id(r).unwrap_or_default());
    let (what, decision, result, masked) = match r["type"].as_str().unwrap_or_default() {
        "pg.statement" => {
            let decision = &r["decision"];
            let mut verdict = text(&decision["action"]);
            if let Some(rule) = decision["rule"].as_str() {
                verdict.push_str(&format!(" {rule}"));
            }
            let result = match (&r["error"], r["command_tag"].as_str()) {
                (Value::Object(e), _) => format!(
                    "{} {}",
                    e.get("severity").and_then(Value::as_str).unwrap_or("ERROR"),
                    e.get("sqlstate").and_then(Value::as_str).unwrap_or("")
                ),
                (_, Some(tag)) => tag.to_owned(),
                _ => String::new(),
            };
            let masked = match masked_values(r) {
                0 => String::new(),
                n => n.to_string(),
            };
            (
                one_line(&text(&r["statement"]), 60),
                verdict,
                result,
                masked,
            )
        }
        "pg.session_start" => (
            format!(
                "session start: database {} from {}",
                text(&r["database"]),
                text(&r["client_address"])
            ),
            String::new(),
            String::new(),
            String::new(),
        ),
        "pg.session_end" => {
            let mut what = format!("session end: {}", text(&r["reason"]));
            if let Some(detail) = r["detail"].as_str() {
                what.push_str(&format!(" ({detail})"));
            }
            (
                what,
                String::new(),
                format!("{} statements", r["statements"].as_u64().unwrap_or(0)),
                String::new(),
            )
        }
        other => (
            other.to_owned(),
            String::new(),
            String::new(),
            String::new(),
        ),
    };
    Some(vec![
        short_time(&r["time"]),
        who,
        place,
        what,
        decision,
        result,
        masked,
    ])
}

/// `2026-12-07T01:00:00.123456Z` as `2026-12-07 01:00:00`.
pub fn short_time(time: &Value) -> String {
    let time = time.as_str().unwrap_or("-");
    match time.get(..19) {
        Some(head) => head.replacen('T', " ", 1),
        None => time.to_owned(),
    }
}

/// Whitespace runs as one space, cut to `max` characters with `…`.
pub fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max {
        return joined;
    }
    let mut cut: String = joined.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::super::log::{Log, Selection, tests::LOG};
    use super::*;

    #[test]
    fn every_record_is_one_aligned_row_naming_the_person() {
        let log = Log::parse(LOG);
        let text = records(&log.select(&Selection::default()));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TIME"), "{text}");
        assert_eq!(
            lines.len(),
            1 + 7,
            "Envoy's pg.connection line is left out:\n{text}"
        );
        let statement = lines
            .iter()
            .find(|l| l.contains("drop table orders"))
            .unwrap();
        assert!(statement.contains("developer (app)"), "{statement}");
        assert!(statement.contains("deny no-ddl"), "{statement}");
        assert!(statement.contains("ERROR 42501"), "{statement}");
        let masked = lines.iter().find(|l| l.contains("select email")).unwrap();
        assert!(masked.trim_end().ends_with(" 3"), "{masked}");
        let event = lines.iter().find(|l| l.contains("kubernetes")).unwrap();
        assert!(
            event.contains("delete namespaces/prod ")
                && event.contains("forbid no-namespace-deletion"),
            "{event}"
        );
        let where_column = lines[0].find("WHERE").unwrap();
        assert!(lines[1..].iter().all(|l| l.len() > where_column));
    }

    #[test]
    fn long_statements_are_one_cut_line() {
        assert_eq!(one_line("select\n  1", 60), "select 1");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}
