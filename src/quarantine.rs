//! `creditd quarantine`: the quarantined lines themselves (DESIGN §4), for finding out what a
//! gateway sent that was refused.

use serde::Serialize;

use crate::report::escape_controls;
use crate::store::QuarantinedLine;

pub const QUARANTINE_HEADER: &str = "file,line,reason,org_id,local_date,raw";

#[derive(Serialize)]
struct JsonRow<'a> {
    file: String,
    line: u64,
    reason: &'a str,
    org_id: Option<String>,
    local_date: Option<&'a str>,
    raw: String,
}

/// Renders quarantined lines as CSV (the columns of DESIGN §4) or JSON.
pub fn render(rows: &[QuarantinedLine], json: bool) -> anyhow::Result<String> {
    if json {
        let out: Vec<JsonRow> = rows
            .iter()
            .map(|r| JsonRow {
                file: escape_controls(&r.file),
                line: r.line,
                reason: &r.reason,
                org_id: r.org_id.as_deref().map(escape_controls),
                local_date: r.local_date.as_deref(),
                raw: escape_controls(&r.raw),
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&out)? + "\n");
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(QUARANTINE_HEADER.split(','))?;
    for r in rows {
        w.write_record([
            escape_controls(&r.file).as_str(),
            &r.line.to_string(),
            &r.reason,
            &escape_controls(r.org_id.as_deref().unwrap_or("")),
            r.local_date.as_deref().unwrap_or(""),
            &escape_controls(&r.raw),
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_written_as_hex_and_the_rest_is_kept() {
        assert_eq!(
            escape_controls("{\"a\":\"\u{1b}[31mred\u{7f}\u{9b}2J\tü\\\"\"}"),
            "{\"a\":\"\\x1b[31mred\\x7f\\x9b2J\\x09ü\\\"\"}"
        );
    }
}
