//! Heroku-style output: `=== ` headers, aligned columns, `KEY: value` lines, `2m ago`.

use std::io::Write;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Writes to stdout; a reader that went away (`| head`) ends the program quietly.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if stdout.write_fmt(args).is_err() {
        std::process::exit(0);
    }
}

/// `=== title`.
pub fn header(title: &str) {
    outln!("=== {title}");
}

/// Rows with columns aligned (two spaces apart; the last column is not padded).
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `KEY: value` lines with the values aligned.
pub fn key_values(pairs: &[(String, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        out.push_str(format!("{label:width$} {value}").trim_end());
        out.push('\n');
    }
    out
}

/// How long ago an RFC 3339 time was: `just now`, `45s ago`, `2m ago`, `3h ago`,
/// `5d ago`, or the date for anything older than 30 days.
pub fn ago(rfc3339: &str) -> String {
    let Ok(at) = OffsetDateTime::parse(rfc3339, &Rfc3339) else {
        return rfc3339.to_string();
    };
    ago_from(at, OffsetDateTime::now_utc())
}

fn ago_from(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let seconds = (now - at).whole_seconds();
    match seconds {
        i64::MIN..5 => "just now".to_string(),
        5..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86_400 => format!("{}h ago", seconds / 3600),
        86_400..2_592_000 => format!("{}d ago", seconds / 86_400),
        _ => format!("{}", at.date()),
    }
}

/// A field of a JSON object as text: strings as they are, numbers as digits, null and
/// missing fields as the empty string.
pub fn text(value: &Value, field: &str) -> String {
    match value.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The API's JSON, pretty.
pub fn json(value: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// `A`, `A and B`, `A, B and C`.
pub fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec!["v10".to_string(), "Deploy 1a2b3c4".into(), "alice".into()],
            vec!["v9".to_string(), "Set A config vars".into(), "bob".into()],
        ];
        assert_eq!(
            table(&rows),
            "v10  Deploy 1a2b3c4     alice\nv9   Set A config vars  bob\n"
        );
        assert_eq!(table(&[]), "");
    }

    #[test]
    fn aligns_values() {
        let pairs = vec![
            ("A".to_string(), "1".to_string()),
            ("LONGER".to_string(), "two words".to_string()),
            ("EMPTY".to_string(), String::new()),
        ];
        assert_eq!(key_values(&pairs), "A:      1\nLONGER: two words\nEMPTY:\n");
    }

    #[test]
    fn says_how_long_ago() {
        let now = OffsetDateTime::parse("2024-05-01T12:00:00Z", &Rfc3339).unwrap();
        let at = |s: &str| OffsetDateTime::parse(s, &Rfc3339).unwrap();
        assert_eq!(ago_from(at("2024-05-01T12:00:00Z"), now), "just now");
        assert_eq!(ago_from(at("2024-05-01T11:59:30Z"), now), "30s ago");
        assert_eq!(ago_from(at("2024-05-01T11:58:00Z"), now), "2m ago");
        assert_eq!(ago_from(at("2024-05-01T09:00:00Z"), now), "3h ago");
        assert_eq!(ago_from(at("2024-04-26T12:00:00Z"), now), "5d ago");
        assert_eq!(ago_from(at("2024-01-02T12:00:00Z"), now), "2024-01-02");
        assert_eq!(ago("not a time"), "not a time");
    }

    #[test]
    fn lists_with_and() {
        let items = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(and_list(&items(&["A"])), "A");
        assert_eq!(and_list(&items(&["A", "B"])), "A and B");
        assert_eq!(and_list(&items(&["A", "B", "C"])), "A, B and C");
    }
}
