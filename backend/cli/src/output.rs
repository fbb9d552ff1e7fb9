//! Printing: the `-o` formats of every command, resources as a table, YAML documents or JSON,
//! and references and watch events on one line.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use serde_json::Value;
use stigmer_client::Client;

/// What `-o` picks, for every command that has one; each offers only the formats it prints.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// NAME, ID, REVISION and AGE columns.
    Table,
    /// Full resources, one YAML document each.
    Yaml,
    /// Full resources: an object, or an array when listing.
    Json,
    /// One line per event.
    Text,
}

impl Format {
    /// `-o` accepting only `formats`, each described in --help.
    pub fn described(formats: &'static [Format]) -> impl TypedValueParser<Value = Format> {
        parser(formats.iter().filter_map(Format::to_possible_value))
    }

    /// `-o` accepting only `formats`, named without their descriptions: those describe
    /// resources as get and list print them, and the option's own help says the rest.
    pub fn offered(formats: &'static [Format]) -> impl TypedValueParser<Value = Format> {
        parser(
            formats
                .iter()
                .filter_map(Format::to_possible_value)
                .map(|value| PossibleValue::new(value.get_name().to_string())),
        )
    }
}

fn parser(values: impl Iterator<Item = PossibleValue>) -> impl TypedValueParser<Value = Format> {
    PossibleValuesParser::new(values).try_map(|name| Format::from_str(&name, false))
}

/// `-o` of the commands that print resources.
#[derive(Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(
        short,
        long,
        value_parser = Format::described(&[Format::Table, Format::Yaml, Format::Json]),
        default_value = "table"
    )]
    pub output: Format,
}

pub fn print_one(resource: &Value, format: Format) -> Result<()> {
    match format {
        // A table is what resources look like as text.
        Format::Table | Format::Text => print!("{}", table(std::slice::from_ref(resource))),
        Format::Yaml => print!("{}", yaml(resource)?),
        Format::Json => println!("{}", json(resource)?),
    }
    Ok(())
}

pub fn print_many(items: &[Value], format: Format) -> Result<()> {
    match format {
        Format::Table | Format::Text if items.is_empty() => eprintln!("no resources found"),
        Format::Table | Format::Text => print!("{}", table(items)),
        Format::Yaml => {
            let documents = items.iter().map(yaml).collect::<Result<Vec<_>>>()?;
            print!("{}", documents.join("---\n"));
        }
        Format::Json => println!("{}", json(&Value::Array(items.to_vec()))?),
    }
    Ok(())
}

fn yaml(value: &Value) -> Result<String> {
    serde_yaml_ng::to_string(value).context("cannot write YAML")
}

fn json(value: &Value) -> Result<String> {
    serde_json::to_string_pretty(value).context("cannot write JSON")
}

/// `agent/code-reviewer`
pub fn reference(client: &Client, kind: &str, resource: &Value, fallback: &str) -> String {
    let kind = client
        .kind(kind)
        .map(|k| k.name.to_lowercase())
        .unwrap_or_else(|_| kind.to_lowercase());
    let metadata = &resource["metadata"];
    let name = [&metadata["slug"], &metadata["name"], &metadata["id"]]
        .into_iter()
        .filter_map(Value::as_str)
        .find(|s| !s.is_empty())
        .unwrap_or(fallback);
    format!("{kind}/{name}")
}

/// A JSON scalar as text (proto3 JSON writes int64 as strings).
pub fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn table(items: &[Value]) -> String {
    let mut rows = vec![vec![
        "NAME".to_string(),
        "ID".to_string(),
        "REVISION".to_string(),
        "AGE".to_string(),
    ]];
    for item in items {
        let metadata = &item["metadata"];
        let name = match metadata["slug"].as_str().filter(|s| !s.is_empty()) {
            Some(slug) => slug.to_string(),
            None => scalar(&metadata["name"]),
        };
        rows.push(vec![
            name,
            scalar(&metadata["id"]),
            scalar(&metadata["revision"]),
            since(&item["status"]["audit"]["specAudit"]["createdAt"]),
        ]);
    }
    align(&rows)
}

/// How long ago an RFC 3339 timestamp was (`5m`), or the value as is when it is not one.
pub fn since(timestamp: &Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    timestamp
        .as_str()
        .and_then(parse_rfc3339)
        .map_or_else(|| scalar(timestamp), |t| age(now - t))
}

/// Rows as columns separated by three spaces, each as wide as its widest cell.
pub fn align(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        widths.resize(widths.len().max(row.len()), 0);
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `42s`, `5m`, `3h`, `12d`.
fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.chars().next()? {
                '+' => 1,
                '-' => -1,
                _ => return None,
            };
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    // Days from civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + hour * 3600 + minute * 60 + second - offset)
}

/// `REVISION TYPE kind/slug id`
pub fn event_line(event: &Value) -> String {
    let kind = event["kind"].as_str().unwrap_or("-").to_lowercase();
    let metadata = &event["resource"]["metadata"];
    let name = [&metadata["slug"], &metadata["name"]]
        .into_iter()
        .filter_map(Value::as_str)
        .find(|s| !s.is_empty())
        .unwrap_or("-");
    let kind_type = scalar(&event["type"]);
    let kind_type = kind_type
        .strip_prefix("EVENT_TYPE_")
        .unwrap_or(&kind_type)
        .to_string();
    format!(
        "{} {} {kind}/{name} {}",
        scalar(&event["revision"]),
        kind_type,
        scalar(&event["id"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:01.5Z"), Some(951_868_801));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("nope"), None);
    }

    #[test]
    fn tables_align() {
        let items = vec![serde_json::json!({
            "metadata": {"slug": "a", "id": "agt-1", "revision": "3"},
            "status": {"audit": {"specAudit": {"createdAt": "1970-01-01T00:00:00Z"}}}
        })];
        let text = table(&items);
        assert!(
            text.starts_with("NAME   ID      REVISION   AGE\na      agt-1   3"),
            "{text}"
        );
    }

    #[test]
    fn events_print_on_one_line() {
        let event = serde_json::json!({"revision": "7", "type": "EVENT_TYPE_CREATED", "kind": "Agent",
            "id": "agt-1", "resource": {"metadata": {"slug": "x"}}});
        assert_eq!(event_line(&event), "7 CREATED agent/x agt-1");
    }
}
