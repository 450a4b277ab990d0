//! Decoding, validating and pricing a file's lines, batch by batch.
//!
//! A file is read in batches of lines; each batch is decoded (JSON or CSV, timestamps, the org
//! checks, the local day, the price and the request-id fingerprint) into a [`Batch`] that owns
//! what it found, and the calling thread claims, quarantines and writes its lines one after the
//! other, in file order. With `[ingest] threads` above 1 the batches are read and decoded ahead
//! on other threads (`ahead`). What a line becomes depends only on the line, so the outcome —
//! the parts, the quarantine, the counts — is the same for any number of threads.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use super::*;

/// Lines per batch: the unit handed to a worker, and how often a stop request is seen.
const BATCH_LINES: usize = STOP_CHECK_LINES as usize;

/// Bytes per batch at most (a batch of long lines ends early), so batches in flight stay small.
const BATCH_BYTES: usize = 4 << 20;

/// Batches in flight per worker: one being decoded, three waiting. Batches are handed over in
/// file order, so one slower than the rest (longer lines, more of them quarantined) holds up
/// those taken after it: with two per worker, both workers of a two-core machine often stood
/// idle until it was done, and `run ingest` on the bench's main set took 1.03 × as long.
pub(super) const IN_FLIGHT_PER_WORKER: usize = 4;

/// Batches in flight at most, whatever the thread count: their bytes and decoded copies stay
/// within 64 × 2 × [`BATCH_BYTES`] even on a machine of many cores (a few hundred MiB for the
/// longest lines, ~150 MiB for lines of 300 bytes).
pub(super) const MAX_IN_FLIGHT: usize = 64;

/// A run of data lines as read, their bytes back to back.
pub(super) struct RawBatch {
    bytes: Vec<u8>,
    lines: Vec<RawLine>,
    decoder: Decoder,
}

impl RawBatch {
    /// The line number of the batch's first line.
    pub(super) fn first_line(&self) -> u64 {
        self.lines[0].line_no
    }
}

struct RawLine {
    line_no: u64,
    start: usize,
    end: usize,
    too_long: bool,
}

/// A range of a [`Batch`]'s text.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    start: usize,
    end: usize,
}

/// The decoded lines of one batch, in file order, with the strings they carry back to back.
pub struct Batch {
    text: String,
    pub lines: Vec<Line>,
}

/// What one data line became.
pub enum Line {
    /// Not charged: the reason, the line's text as quarantined (§2.1), and, once the call
    /// decoded, its org, local day (when known) and instant.
    Quarantined {
        line_no: u64,
        reason: Reason,
        text: Span,
        placed: Option<(Span, Option<NaiveDate>, i64)>,
    },
    /// A valid call of a known org, priced; it is charged unless its request id is claimed.
    Accepted(Accepted),
}

pub struct Accepted {
    pub line_no: u64,
    pub local_date: NaiveDate,
    pub fp: Fingerprint,
    request_id: Span,
    org_id: Span,
    dc: Option<Span>,
    ts_ms: i64,
    method: &'static str,
    endpoint: std::sync::Arc<str>,
    credits: u64,
    unpriced: bool,
    status: u16,
    billable: bool,
    latency_ms: Option<i64>,
    charged_credits: Option<i64>,
}

impl Batch {
    pub fn str(&self, span: Span) -> &str {
        &self.text[span.start..span.end]
    }

    fn push(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        Span {
            start,
            end: self.text.len(),
        }
    }

    /// The event of an accepted line of this batch, from the input file `file_sha`.
    pub fn event<'b>(&'b self, a: &'b Accepted, file_sha: &'b str) -> Event<'b> {
        Event {
            request_id: self.str(a.request_id),
            org_id: self.str(a.org_id),
            ts_ms: a.ts_ms,
            local_date: a.local_date,
            method: a.method,
            endpoint: a.endpoint.clone(),
            status: a.status,
            billable: a.billable,
            credits: a.credits,
            unpriced: a.unpriced,
            latency_ms: a.latency_ms,
            charged_credits: a.charged_credits,
            dc: a.dc.map(|d| self.str(d)),
            file: file_sha,
            line: a.line_no,
        }
    }
}

/// Reads `reader` to its end on the calling thread and hands every batch of decoded lines to
/// `consume`, in file order (`[ingest] threads = 1`; more threads read ahead, see `ahead`). An
/// error of `consume` or of reading stops the rest; a batch whose decoding panics fails the
/// file.
pub fn run(
    reader: &mut LogReader,
    setup: &Setup,
    now: DateTime<Utc>,
    mut consume: impl FnMut(&Batch) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut checker = Ingester::new(setup, now);
    while let Some(raw) = read_guarded(reader)? {
        let batch = decode_guarded(&raw, &mut checker)
            .map_err(|first_line| panicked(&reader.path, first_line))?;
        consume(&batch)?;
    }
    Ok(())
}

/// The error of a batch whose decoding panicked: the file fails alone (DESIGN §7).
pub(super) fn panicked(path: &Path, first_line: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "decoding {} panicked in the batch of lines from {first_line}",
        path.display()
    )
}

/// [`decode`], with a panic as the first line of the batch (its file fails alone, DESIGN §7);
/// `checker` then starts afresh, as what the panic left half done is not used again.
pub(super) fn decode_guarded(raw: &RawBatch, checker: &mut Ingester<'_>) -> Result<Batch, u64> {
    std::panic::catch_unwind(AssertUnwindSafe(|| decode(raw, checker))).map_err(|_| {
        *checker = Ingester::new(checker.setup, checker.now);
        raw.first_line()
    })
}

/// Opens a listed inbox file as its name says (format, gzip).
pub(super) fn open_listed(path: &Path, name: &str) -> anyhow::Result<LogReader> {
    let (format, gz) = classify(name).expect("listed files are access logs");
    LogReader::open(path, format, gz)
}

/// [`read_batch`], with a panic as an error of the file (DESIGN §7).
pub(super) fn read_guarded(reader: &mut LogReader) -> anyhow::Result<Option<RawBatch>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| read_batch(reader))).unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "reading {} panicked",
            reader.path.display()
        ))
    })
}

/// The next batch of data lines, or `None` at the end of the file.
fn read_batch(reader: &mut LogReader) -> anyhow::Result<Option<RawBatch>> {
    let mut bytes = Vec::new();
    let mut lines = Vec::new();
    while lines.len() < BATCH_LINES && bytes.len() < BATCH_BYTES {
        let Some((line_no, line, too_long)) = reader.next_raw()? else {
            break;
        };
        let start = bytes.len();
        bytes.extend_from_slice(line);
        lines.push(RawLine {
            line_no,
            start,
            end: bytes.len(),
            too_long,
        });
    }
    if lines.is_empty() {
        return Ok(None);
    }
    Ok(Some(RawBatch {
        bytes,
        lines,
        decoder: reader.decoder().clone(),
    }))
}

/// Decodes, checks and prices every line of `raw` (DESIGN §2.1, §2.4).
fn decode(raw: &RawBatch, checker: &mut Ingester<'_>) -> Batch {
    if crate::faults::check(&format!("decode:{}", raw.first_line())).is_err() {
        panic!(
            "fault injected at decode:{} (CREDITD_FAULTS)",
            raw.first_line()
        );
    }
    let mut out = Batch {
        text: String::with_capacity(raw.bytes.len() / 3),
        lines: Vec::with_capacity(raw.lines.len()),
    };
    for l in &raw.lines {
        let bytes = &raw.bytes[l.start..l.end];
        let call = match raw.decoder.decode(bytes, l.too_long) {
            Ok(call) => call,
            Err(reason) => {
                let text = out.push(&quarantine_text(bytes));
                out.lines.push(Line::Quarantined {
                    line_no: l.line_no,
                    reason,
                    text,
                    placed: None,
                });
                continue;
            }
        };
        match checker.check_org(&call) {
            Err(r) => {
                let text = out.push(&quarantine_text(bytes));
                let org = out.push(&call.org_id);
                out.lines.push(Line::Quarantined {
                    line_no: l.line_no,
                    reason: r.reason,
                    text,
                    placed: Some((org, r.local_date, call.ts_ms)),
                });
            }
            Ok(local_date) => {
                let event = checker.event(&call, local_date, "", l.line_no);
                let accepted = Accepted {
                    line_no: l.line_no,
                    local_date,
                    fp: fingerprint(&call.org_id, &call.request_id),
                    request_id: out.push(&call.request_id),
                    org_id: out.push(&call.org_id),
                    dc: call.dc.as_deref().map(|d| out.push(d)),
                    ts_ms: call.ts_ms,
                    method: event.method,
                    status: event.status,
                    billable: event.billable,
                    latency_ms: event.latency_ms,
                    charged_credits: event.charged_credits,
                    endpoint: event.endpoint,
                    credits: event.credits,
                    unpriced: event.unpriced,
                };
                out.lines.push(Line::Accepted(accepted));
            }
        }
    }
    out
}
