//! `creditd files`: what happened to every input file.

use serde::Serialize;

use crate::logline::Reason;
use crate::store::FileRow;

pub const FILES_HEADER: &str = "file,sha256,status,lines,accepted,unique,duplicates,malformed,missing_field,bad_timestamp,bad_method,bad_status,unknown_org,before_signup,expired";

#[derive(Serialize)]
struct JsonRow<'a> {
    file: &'a str,
    sha256: &'a str,
    status: &'a str,
    lines: u64,
    accepted: u64,
    unique: u64,
    duplicates: u64,
    malformed: u64,
    missing_field: u64,
    bad_timestamp: u64,
    bad_method: u64,
    bad_status: u64,
    unknown_org: u64,
    before_signup: u64,
    expired: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// Renders file rows as CSV (the columns of DESIGN §4) or JSON.
pub fn render(rows: &[FileRow], json: bool) -> anyhow::Result<String> {
    if json {
        let out: Vec<JsonRow> = rows
            .iter()
            .map(|r| {
                let q = &r.counts.quarantined;
                JsonRow {
                    file: &r.file,
                    sha256: &r.sha256,
                    status: r.status.as_str(),
                    lines: r.counts.lines,
                    accepted: r.counts.accepted,
                    unique: r.counts.unique,
                    duplicates: r.counts.duplicates,
                    malformed: q[0],
                    missing_field: q[1],
                    bad_timestamp: q[2],
                    bad_method: q[3],
                    bad_status: q[4],
                    unknown_org: q[5],
                    before_signup: q[6],
                    expired: q[7],
                    error: r.error.as_deref(),
                }
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&out)? + "\n");
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(FILES_HEADER.split(','))?;
    for r in rows {
        let mut rec = vec![r.file.clone(), r.sha256.clone(), r.status.to_string()];
        let c = &r.counts;
        for n in [c.lines, c.accepted, c.unique, c.duplicates] {
            rec.push(n.to_string());
        }
        for (i, _) in Reason::ALL.iter().enumerate() {
            rec.push(c.quarantined[i].to_string());
        }
        w.write_record(&rec)?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}
