//! Reading one access-log file: its data lines, each decoded on its own (DESIGN §2.1): blank
//! lines and a CSV header skipped, line ends and a byte-order mark stripped, a line past
//! [`MAX_LINE`] cut and `malformed`; and the text the quarantine keeps of a line.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{open_regular, Format};
use crate::logline::{decode_json, Call, CsvLayout, Reason};

/// How much of a quarantined line the store keeps; the archived file keeps all of it.
pub const QUARANTINE_KEEP: usize = 4096;

/// The text kept for a quarantined line: lossily decoded, at most [`QUARANTINE_KEEP`] bytes
/// of it, with a note of the full length when cut.
pub fn quarantine_text(bytes: &[u8]) -> String {
    if bytes.len() <= QUARANTINE_KEEP {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let kept = String::from_utf8_lossy(&bytes[..QUARANTINE_KEEP]);
    if bytes.len() > MAX_LINE {
        // The reader held only the start of the line.
        return format!("{kept}… (more than 1 MiB; the archived file has the whole line)");
    }
    format!(
        "{kept}… ({} bytes in all; the archived file has the whole line)",
        bytes.len()
    )
}

/// Reads the data lines of one access-log file: skips blank lines and a CSV header, strips
/// line ends and a leading byte-order mark, and decodes each line on its own.
pub struct LogReader {
    reader: BufReader<Box<dyn Read>>,
    pub(super) path: PathBuf,
    buf: Vec<u8>,
    line_no: u64,
    decoder: Decoder,
}

/// How the data lines of one file decode: its format and, for CSV, the layout its header gave
/// (`Some(None)` for a header that could not be read: every line is then `malformed`).
#[derive(Debug, Clone)]
pub struct Decoder {
    format: Format,
    layout: Option<Option<CsvLayout>>,
}

impl Decoder {
    /// The call on a data line, or the reason it cannot be one; a line cut at [`MAX_LINE`]
    /// is `malformed`.
    pub fn decode<'a>(&self, bytes: &'a [u8], too_long: bool) -> Result<Call<'a>, Reason> {
        if too_long {
            return Err(Reason::Malformed);
        }
        match std::str::from_utf8(bytes) {
            Err(_) => Err(Reason::Malformed),
            Ok(line) => match (self.format, &self.layout) {
                (Format::Ndjson, _) => decode_json(line),
                (Format::Csv, Some(Some(l))) => l.decode(line),
                (Format::Csv, _) => Err(Reason::Malformed),
            },
        }
    }
}

impl LogReader {
    pub fn open(path: &Path, format: Format, gz: bool) -> anyhow::Result<LogReader> {
        let file = open_regular(path)?;
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        Ok(LogReader {
            reader: BufReader::with_capacity(1 << 20, reader),
            path: path.to_path_buf(),
            buf: Vec::new(),
            line_no: 0,
            decoder: Decoder {
                format,
                layout: None,
            },
        })
    }

    /// How this file's lines decode; a CSV file's layout is known once its first data line
    /// has been read.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The next data line: its number in the file, its bytes, and the decoded call or the
    /// reason it cannot be one. `None` at the end of the file. A line longer than
    /// [`MAX_LINE`] is `malformed`: only its first `MAX_LINE + 1` bytes are held, the rest is
    /// read past.
    #[allow(clippy::type_complexity)]
    pub fn next_line(&mut self) -> anyhow::Result<Option<(u64, &[u8], Result<Call<'_>, Reason>)>> {
        let Some((line_no, (start, end), too_long)) = self.next_data_line()? else {
            return Ok(None);
        };
        let bytes = &self.buf[start..end];
        Ok(Some((line_no, bytes, self.decoder.decode(bytes, too_long))))
    }

    /// The next data line undecoded: its number, its bytes and whether it was cut at
    /// [`MAX_LINE`]. `None` at the end of the file.
    pub fn next_raw(&mut self) -> anyhow::Result<Option<(u64, &[u8], bool)>> {
        Ok(self
            .next_data_line()?
            .map(|(line_no, (start, end), too_long)| (line_no, &self.buf[start..end], too_long)))
    }

    /// Reads up to the next data line (past blank lines and a CSV header): its number, its
    /// span in `buf` and whether it was cut.
    fn next_data_line(&mut self) -> anyhow::Result<Option<DataLine>> {
        loop {
            let Some(line) = self.read_line().with_context(|| {
                format!(
                    "cannot read {} after line {}",
                    self.path.display(),
                    self.line_no
                )
            })?
            else {
                return Ok(None);
            };
            self.line_no += 1;
            if line.blank {
                continue;
            }
            let span = trimmed(&self.buf, self.line_no == 1);
            if self.decoder.format == Format::Csv && self.decoder.layout.is_none() {
                // The first non-blank line is the header; an unreadable header makes every
                // line of the file malformed rather than guessed at.
                let text = std::str::from_utf8(&self.buf[span.0..span.1]).ok();
                self.decoder.layout = Some(
                    text.filter(|_| !line.too_long)
                        .and_then(CsvLayout::from_header),
                );
                continue;
            }
            return Ok(Some((self.line_no, span, line.too_long)));
        }
    }

    /// Reads one line into `buf`, line end included, holding at most `MAX_LINE` bytes of it
    /// besides a line end and a byte-order mark; `None` at the end of the file.
    fn read_line(&mut self) -> std::io::Result<Option<LineRead>> {
        self.buf.clear();
        let first = self.line_no == 0;
        let limit = MAX_LINE + 2 + if first { 3 } else { 0 };
        let n = (&mut self.reader)
            .take(limit as u64)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        let cut = n == limit && !self.buf.ends_with(b"\n");
        // The rest of a cut line is read past, never held; it may still make it non-blank.
        let mut rest_blank = true;
        if cut {
            loop {
                let available = match self.reader.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if available.is_empty() {
                    break;
                }
                let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
                    Some(i) => (&available[..i], true),
                    None => (available, false),
                };
                rest_blank = rest_blank && chunk.iter().all(u8::is_ascii_whitespace);
                let used = chunk.len() + usize::from(done);
                self.reader.consume(used);
                if done {
                    break;
                }
            }
        }
        let (start, end) = trimmed(&self.buf, first);
        Ok(Some(LineRead {
            too_long: cut || end - start > MAX_LINE,
            blank: rest_blank && self.buf[start..end].iter().all(u8::is_ascii_whitespace),
        }))
    }
}

/// The longest line decoded (DESIGN §2.1): 1 MiB, line end excluded.
pub const MAX_LINE: usize = 1 << 20;

/// A data line's number, span in the reader's buffer, and whether it was cut at [`MAX_LINE`].
type DataLine = (u64, (usize, usize), bool);

/// What [`LogReader::read_line`] found besides the bytes.
struct LineRead {
    too_long: bool,
    blank: bool,
}

/// The span of a line without its line end (and, on the first line, a byte-order mark some
/// writers put first).
fn trimmed(buf: &[u8], first: bool) -> (usize, usize) {
    let mut end = buf.len();
    if buf[..end].ends_with(b"\n") {
        end -= 1;
    }
    if buf[..end].ends_with(b"\r") {
        end -= 1;
    }
    let start = if first && buf[..end].starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    (start, end)
}

#[cfg(test)]
mod long_lines {
    use super::*;
    use std::fs::File;
    use std::io::Write;

    fn call(rid: &str) -> Vec<u8> {
        format!("{{\"ts\":\"2025-10-08T10:00:00Z\",\"request_id\":\"{rid}\",\"org_id\":\"1\",\"method\":\"GET\",\"path\":\"/x\",\"status\":200}}").into_bytes()
    }

    /// A valid call whose line is exactly `len` bytes long (its path padded).
    fn call_of_len(rid: &str, len: usize) -> Vec<u8> {
        let short = call(rid);
        let pad = len - short.len();
        let line = String::from_utf8(short).unwrap();
        line.replace("\"/x\"", &format!("\"/x{}\"", "y".repeat(pad)))
            .into_bytes()
    }

    /// Reads every outcome of a file: (line number, bytes held, request id or reason).
    fn outcomes(bytes: &[u8], format: Format, gz: bool) -> (Vec<(u64, usize, String)>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        if gz {
            let mut enc =
                flate2::write::GzEncoder::new(File::create(&path).unwrap(), Default::default());
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap();
        } else {
            std::fs::write(&path, bytes).unwrap();
        }
        let mut reader = LogReader::open(&path, format, gz).unwrap();
        let mut out = Vec::new();
        while let Some((line, held, decoded)) = reader.next_line().unwrap() {
            let what = match decoded {
                Ok(call) => call.request_id.to_string(),
                Err(r) => r.to_string(),
            };
            out.push((line, held.len(), what));
        }
        (out, reader.buf.capacity())
    }

    #[test]
    fn a_line_over_1_mib_is_malformed_alone_and_never_held_whole() {
        for gz in [false, true] {
            let mut file = Vec::new();
            file.extend(call("a"));
            file.push(b'\n');
            // 20 MiB on one line, with the start of a valid call.
            file.extend(call_of_len("big", 20 << 20));
            file.push(b'\n');
            // 2 MiB of blanks is a blank line: skipped, not counted.
            file.extend(vec![b' '; 2 << 20]);
            file.push(b'\n');
            // Blanks up to 1 MiB, then text: not blank, too long.
            file.extend(vec![b' '; 1 << 20]);
            file.extend(b"x\r\n");
            file.extend(call("b"));
            file.push(b'\n');
            let (got, capacity) = outcomes(&file, Format::Ndjson, gz);
            let kinds: Vec<(u64, &str)> = got.iter().map(|(l, _, w)| (*l, w.as_str())).collect();
            assert_eq!(
                kinds,
                [(1, "a"), (2, "malformed"), (4, "malformed"), (5, "b")],
                "gz {gz}"
            );
            assert!(got[1].1 <= MAX_LINE + 2, "held {} bytes", got[1].1);
            assert!(got[1].1 > QUARANTINE_KEEP);
            assert!(
                capacity <= 4 << 20,
                "the line buffer grew to {capacity} bytes"
            );
        }
    }

    #[test]
    fn exactly_1_mib_is_a_line_one_byte_more_is_not() {
        let mut file = Vec::new();
        file.extend(b"\xEF\xBB\xBF");
        file.extend(call_of_len("bom", MAX_LINE));
        file.extend(b"\r\n");
        file.extend(call_of_len("crlf", MAX_LINE));
        file.extend(b"\r\n");
        file.extend(call_of_len("long", MAX_LINE + 1));
        file.extend(b"\n");
        file.extend(call_of_len("last", MAX_LINE));
        let (got, _) = outcomes(&file, Format::Ndjson, false);
        let kinds: Vec<(u64, usize, &str)> =
            got.iter().map(|(l, n, w)| (*l, *n, w.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (1, MAX_LINE, "bom"),
                (2, MAX_LINE, "crlf"),
                (3, MAX_LINE + 1, "malformed"),
                (4, MAX_LINE, "last"),
            ]
        );
    }

    #[test]
    fn csv_long_lines_and_a_long_header() {
        let header = "ts,request_id,org_id,method,path,status\n";
        let row = |rid: &str, path: &str| format!("2025-10-08T10:00:00Z,{rid},1,GET,{path},200\n");
        let mut file = String::from(header);
        file.push_str(&row("a", "/x"));
        file.push_str(&row("big", &"/y".repeat(1 << 20)));
        file.push_str(&row("b", "/x"));
        let (got, _) = outcomes(file.as_bytes(), Format::Csv, true);
        let kinds: Vec<(u64, &str)> = got.iter().map(|(l, _, w)| (*l, w.as_str())).collect();
        assert_eq!(kinds, [(2, "a"), (3, "malformed"), (4, "b")]);

        // A header over 1 MiB is unreadable: every line is malformed, none is guessed at.
        let mut file = format!("{}{}", "x".repeat(2 << 20), header);
        file.push_str(&row("a", "/x"));
        let (got, _) = outcomes(file.as_bytes(), Format::Csv, false);
        let kinds: Vec<(u64, &str)> = got.iter().map(|(l, _, w)| (*l, w.as_str())).collect();
        assert_eq!(kinds, [(2, "malformed")]);
    }

    #[test]
    fn the_quarantine_keeps_4_kib_of_a_long_line() {
        let text = quarantine_text(&vec![b'x'; MAX_LINE + 1]);
        assert!(text.starts_with(&"x".repeat(QUARANTINE_KEEP)));
        assert!(text.ends_with("… (more than 1 MiB; the archived file has the whole line)"));
        let text = quarantine_text(&vec![b'x'; 5000]);
        assert!(text.ends_with("… (5000 bytes in all; the archived file has the whole line)"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes — invalid UTF-8, CR, BOM, NUL — yield exactly one outcome (a call
        /// or a reason) per non-blank line: nothing is skipped, nothing is invented.
        #[test]
        fn every_non_blank_line_has_exactly_one_outcome(
            lines in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..60),
                    Just(b"{\"ts\":\"2025-10-08T10:00:00Z\",\"request_id\":\"r\",\"org_id\":\"1\",\"method\":\"GET\",\"path\":\"/x\",\"status\":200}".to_vec()),
                    Just(b"\xEF\xBB\xBF".to_vec()),
                    Just(b"   \r".to_vec()),
                ],
                0..40,
            ),
            csv in any::<bool>(),
        ) {
            let mut bytes = Vec::new();
            for l in &lines {
                bytes.extend(l.iter().map(|b| if *b == b'\n' { b' ' } else { *b }));
                bytes.push(b'\n');
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, &bytes).unwrap();
            let format = if csv { Format::Csv } else { Format::Ndjson };
            let mut reader = LogReader::open(&path, format, false).unwrap();
            let mut outcomes = 0;
            while let Some((_, _, decoded)) = reader.next_line().unwrap() {
                if let Err(r) = decoded {
                    prop_assert!(Reason::ALL.contains(&r));
                }
                outcomes += 1;
            }
            let mut expected = 0;
            for (i, l) in lines.iter().enumerate() {
                let mut l: Vec<u8> = l.iter().map(|b| if *b == b'\n' { b' ' } else { *b }).collect();
                if i == 0 && l.starts_with(b"\xEF\xBB\xBF") {
                    l.drain(..3);
                }
                if l.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                expected += 1;
            }
            // A CSV file's first non-blank line is its header.
            if csv && expected > 0 {
                expected -= 1;
            }
            prop_assert_eq!(outcomes, expected);
        }
    }
}
