//! How the CLI prints: aligned tables and key/value blocks for people, JSON or YAML for programs.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// `-o table|json|yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people (the default).
    Table,
    /// Pretty-printed JSON (the API's own shapes).
    Json,
    /// YAML (the API's own shapes).
    Yaml,
}

/// Prints `value` as JSON or YAML (`format` must not be `Table`).
pub fn print_data<T: Serialize + ?Sized>(format: Format, value: &T) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Format::Table => anyhow::bail!("internal error: print_data called for table output"),
    }
    Ok(())
}

/// A table whose columns are padded to their widest cell, separated by three spaces. Cells are single lines
/// (newlines and tabs become spaces); the last column is not padded.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(headers: [&str; N]) -> Self {
        Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells.into_iter().map(|c| one_line(&c)).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < columns {
                    line.push_str(&" ".repeat(widths[i] - width(cell) + 3));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pairs: Vec<(String, String)>,
}

impl Fields {
    pub fn add(&mut self, key: &str, value: impl Into<String>) {
        self.pairs.push((key.to_string(), value.into()));
    }

    pub fn render(&self) -> String {
        let w = self.pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0) + 1;
        let mut out = String::new();
        for (k, v) in &self.pairs {
            let label = format!("{k}:");
            out.push_str(&format!("{label:<w$} {v}").replace('\n', &format!("\n{:w$} ", "")));
            out.push('\n');
        }
        out.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + "\n"
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if c == '\n' || c == '\t' || c == '\r' { ' ' } else { c }).collect()
}

/// An instant as `2026-11-25T07:00:05Z` (UTC, whole seconds).
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An optional instant, `-` when absent.
pub fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "-".into())
}

/// The length of an interval: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn duration(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    millis(u64::try_from((to - from).num_milliseconds()).unwrap_or(0))
}

/// A number of milliseconds as [`duration`] prints it.
pub fn millis(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// Cuts a cell to `max` characters, ending with `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    let s = one_line(s);
    if s.chars().count() <= max { s } else { s.chars().take(max.saturating_sub(1)).collect::<String>() + "…" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(["ID", "TASK", "STATE"]);
        t.row(vec!["1".into(), "demo/hello".into(), "succeeded".into()]);
        t.row(vec!["12345".into(), "a/b".into()]);
        assert_eq!(t.render(), "ID      TASK         STATE\n1       demo/hello   succeeded\n12345   a/b\n");
    }

    #[test]
    fn fields_align_values() {
        let mut f = Fields::default();
        f.add("Name", "x");
        f.add("Namespace", "a\nb");
        assert_eq!(f.render(), "Name:      x\nNamespace: a\n           b\n");
    }

    #[test]
    fn durations_are_short() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |ms| t0 + chrono::TimeDelta::milliseconds(ms);
        assert_eq!(duration(t0, at(850)), "850ms");
        assert_eq!(duration(t0, at(12_340)), "12.3s");
        assert_eq!(duration(t0, at(245_000)), "4m05s");
        assert_eq!(duration(t0, at(7_380_000)), "2h03m");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
