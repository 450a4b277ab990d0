//! Messages as MIME (lettre), the hourly chart as PNG (plotters), and delivery of the outbox:
//! `.eml` files without `[smtp]`, SMTP with retries and backoff otherwise.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use chrono::{DateTime, Utc};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::address::{smtp_url, Tls};
use crate::config::Smtp;
use crate::report::{one_line, Rendered};

mod chart;
pub use chart::chart_png;

/// The `X-Creditd-Key` header: the message's outbox key.
#[derive(Debug, Clone)]
struct XCreditdKey(String);

impl lettre::message::header::Header for XCreditdKey {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Creditd-Key")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(XCreditdKey(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// The `X-Creditd-Covers` header: the lower keys a message reports (DESIGN §5).
#[derive(Debug, Clone)]
struct XCreditdCovers(String);

impl lettre::message::header::Header for XCreditdCovers {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Creditd-Covers")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(XCreditdCovers(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// The `Auto-Submitted` header (RFC 3834): no out-of-office reply comes back.
#[derive(Debug, Clone)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_string())
    }
}

/// An outbox key as the local part of a Message-ID and a file name: `:` becomes `.`, letters,
/// digits and `-` stay, and every other byte is written `=XX` (hex), so two keys never share
/// an id or a file (`gw_1` and `gw.1` are `gw=5F1` and `gw=2E1`).
fn key_part(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if c == ':' {
            out.push('.');
        } else if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("={b:02X}"));
            }
        }
    }
    out
}

/// The domain of every Message-ID (DESIGN §5): the From domain, prefixed by the instance's
/// data centers, sorted and joined by `-`, when `[daemon] data_centers` is set
/// (`us-eu.example.com`), so two instances never mint the same id.
pub fn id_domain(from: &str, data_centers: &[String]) -> anyhow::Result<String> {
    Ok(domain_of(&parse_from(from)?, data_centers))
}

fn parse_from(from: &str) -> anyhow::Result<Mailbox> {
    from.parse()
        .with_context(|| format!("[alerts] from: not a mail address: {from:?}"))
}

fn domain_of(from: &Mailbox, data_centers: &[String]) -> String {
    let domain = from.email.domain().to_string();
    if data_centers.is_empty() {
        return domain;
    }
    let mut dcs: Vec<String> = data_centers.iter().map(|d| key_part(d)).collect();
    dcs.sort();
    dcs.dedup();
    format!("{}.{domain}", dcs.join("-"))
}

/// The Message-ID derived from an outbox key: `<near.100.2025-10-07.80@example.com>`.
pub fn message_id(key: &str, domain: &str) -> String {
    format!("<{}@{domain}>", key_part(key))
}

/// The synthetic root that threads every message of one org-day
/// (`<orgday.100.2025-10-07@example.com>`), for the keys of org-day messages (near, over,
/// summary and amended summary).
pub fn thread_root(key: &str, domain: &str) -> Option<String> {
    let mut fields = key.split(':');
    let kind = fields.next()?;
    if !matches!(kind, "near" | "over" | "summary") {
        return None;
    }
    let (org, date) = (fields.next()?, fields.next()?);
    Some(format!(
        "<orgday.{}.{}@{domain}>",
        key_part(org),
        key_part(date)
    ))
}

/// A file name for a key: `near.100.2025-10-07.80.eml`.
pub fn eml_name(key: &str) -> String {
    format!("{}.eml", key_part(key))
}

/// Builds the raw message (RFC 5322 bytes) for `rendered`, from `config`'s `[alerts] from`.
pub fn build(
    config: &crate::config::Config,
    key: &str,
    to: &[String],
    rendered: &Rendered,
    date: DateTime<Utc>,
) -> anyhow::Result<Vec<u8>> {
    let from = parse_from(&config.alerts.from)?;
    let domain = domain_of(&from, &config.data_centers);
    let mut builder = Message::builder()
        .from(from)
        .subject(one_line(&rendered.subject))
        .message_id(Some(message_id(key, &domain)))
        .date(SystemTime::from(date))
        .header(AutoSubmitted)
        .header(XCreditdKey(key.to_string()));
    if !rendered.covers.is_empty() {
        builder = builder.header(XCreditdCovers(rendered.covers.join(", ")));
    }
    if let Some(root) = thread_root(key, &domain) {
        builder = builder.in_reply_to(root.clone()).references(root);
    }
    for addr in to {
        let mbox: Mailbox = addr
            .parse()
            .with_context(|| format!("not a mail address: {addr:?}"))?;
        builder = builder.to(mbox);
    }
    let text = SinglePart::plain(rendered.text.clone());
    let body = match &rendered.chart {
        None => MultiPart::alternative()
            .singlepart(text)
            .singlepart(SinglePart::html(rendered.html.clone())),
        Some(chart) => {
            // A Content-ID unique to this message (and instance), named in the HTML.
            let cid = format!("chart.{}@{domain}", key_part(key));
            let html = rendered
                .html
                .replace("src=\"cid:chart\"", &format!("src=\"cid:{cid}\""));
            // `type=` names the root part (RFC 2387), which lettre's `related()` leaves out.
            let boundary = {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(format!("related {key}"));
                format!("related-{}", &hex::encode(digest)[..32])
            };
            let related = ContentType::parse(&format!(
                "multipart/related; type=\"text/html\"; boundary=\"{boundary}\""
            ))?;
            MultiPart::alternative().singlepart(text).multipart(
                MultiPart::builder()
                    .header(related)
                    .singlepart(SinglePart::html(html))
                    .singlepart(
                        Attachment::new_inline(cid)
                            .body(chart_png(chart)?, ContentType::parse("image/png")?),
                    ),
            )
        }
    };
    // Long lists travel whole as CSV files beside the message (DESIGN §5).
    let body = if rendered.attachments.is_empty() {
        body
    } else {
        let mut mixed = MultiPart::mixed().multipart(body);
        for (name, csv) in &rendered.attachments {
            mixed = mixed.singlepart(
                Attachment::new(name.clone())
                    .body(csv.clone(), ContentType::parse("text/csv; charset=utf-8")?),
            );
        }
        mixed
    };
    let message = builder
        .multipart(body)
        .context("cannot build the message")?;
    Ok(message.formatted())
}

/// Writes a message as `<dir>/<key>.eml`, atomically.
pub fn write_eml(dir: &Path, key: &str, raw: &[u8]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(eml_name(key));
    let tmp = path.with_extension("eml.tmp");
    std::fs::write(&tmp, raw).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The SMTP password: `CREDITD_SMTP_PASSWORD`, or the systemd credential `smtp-password`.
/// Never from the config file, never logged.
pub fn smtp_password() -> anyhow::Result<Option<String>> {
    if let Ok(p) = std::env::var("CREDITD_SMTP_PASSWORD") {
        return Ok(Some(p));
    }
    if let Ok(dir) = std::env::var("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join("smtp-password");
        if path.exists() {
            let p = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read the credential {}", path.display()))?;
            return Ok(Some(p.trim_end_matches(['\r', '\n']).to_string()));
        }
    }
    Ok(None)
}

/// A connection to the SMTP server of `[smtp]`.
pub struct Sender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Sender {
    /// Builds the transport: `smtps://` is implicit TLS, `smtp://` uses STARTTLS (required)
    /// unless `tls = "none"`, which only a loopback host may use.
    pub fn new(smtp: &Smtp) -> anyhow::Result<Sender> {
        let url = smtp_url(&smtp.url, smtp.tls_required)?;
        let mut builder = match url.tls {
            Tls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&url.host)?,
            Tls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&url.host)?,
            Tls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&url.host),
        };
        if let Some(port) = url.port {
            builder = builder.port(port);
        }
        if let Some(user) = url.user {
            let password = smtp_password()?.context(
                "[smtp] url names a user but no password was given: set CREDITD_SMTP_PASSWORD or the systemd credential smtp-password",
            )?;
            builder = builder.credentials(Credentials::new(user, password));
        }
        let transport = builder.timeout(Some(Duration::from_secs(30))).build();
        Ok(Sender { transport })
    }

    /// Sends one raw message; `Err` carries the server's answer (a 4xx or 5xx, or no answer)
    /// and whether it is final.
    pub async fn send(&self, from: &str, to: &[String], raw: &[u8]) -> Result<(), SendError> {
        let envelope = envelope(from, to).map_err(|error| SendError {
            error,
            permanent: true,
        })?;
        self.transport
            .send_raw(&envelope, raw)
            .await
            .map_err(|e| SendError {
                permanent: e.is_permanent(),
                error: e.into(),
            })?;
        Ok(())
    }
}

/// A message the server did not take: `permanent` for a 5xx answer or an envelope that can
/// never be sent (retrying cannot help), else a 4xx or a connection problem.
#[derive(Debug)]
pub struct SendError {
    pub error: anyhow::Error,
    pub permanent: bool,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

fn envelope(from: &str, to: &[String]) -> anyhow::Result<lettre::address::Envelope> {
    let from: Mailbox = from.parse()?;
    let to: Vec<lettre::Address> = to
        .iter()
        .map(|a| a.parse::<Mailbox>().map(|m| m.email))
        .collect::<Result<_, _>>()?;
    Ok(lettre::address::Envelope::new(Some(from.email), to)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_message_ids_and_file_names() {
        assert_eq!(
            message_id("near:100:2025-10-07:80", "example.com"),
            "<near.100.2025-10-07.80@example.com>"
        );
        assert_eq!(
            id_domain("creditd <creditd@example.com>", &[]).unwrap(),
            "example.com"
        );
        assert_eq!(
            id_domain(
                "creditd <creditd@example.com>",
                &["us".to_string(), "eu".to_string()]
            )
            .unwrap(),
            "eu-us.example.com"
        );
        assert_eq!(
            thread_root("summary:100:2025-10-07:r1", "example.com").as_deref(),
            Some("<orgday.100.2025-10-07@example.com>")
        );
        assert_eq!(thread_root("digest:2025-10-07", "example.com"), None);
        // Distinct keys, distinct ids and files, whatever a gateway's name holds.
        assert_eq!(eml_name("silence:gw_1:t"), "silence.gw=5F1.t.eml");
        assert_eq!(eml_name("silence:gw.1:t"), "silence.gw=2E1.t.eml");
        assert_ne!(eml_name("a:b"), eml_name("a=2Eb"));
        assert_eq!(eml_name("x:é/"), "x.=C3=A9=2F.eml");
        assert_eq!(
            eml_name("summary:100:2025-10-07:r1"),
            "summary.100.2025-10-07.r1.eml"
        );
    }

    #[test]
    fn tls_none_is_for_loopback_only() {
        let plain = |url: &str| Smtp {
            url: url.to_string(),
            tls_required: false,
        };
        assert!(Sender::new(&plain("smtp://127.0.0.1:2525")).is_ok());
        assert!(Sender::new(&plain("smtp://localhost:2525")).is_ok());
        let err = Sender::new(&plain("smtp://mail.example.com:25"))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "[smtp] tls = \"none\" is only allowed to a loopback host, not \"mail.example.com\""
        );
    }

    #[test]
    fn a_chart_is_a_png_with_the_allotment_line_and_the_running_total() {
        use crate::report::{Chart, CHART_H, CHART_W};
        let mut per_5min = vec![0u64; 24 * 12];
        per_5min[100] = 4_000;
        per_5min[150] = 2_000;
        let chart = Chart {
            per_5min,
            hourly: (0..24).map(|h| if h == 8 { 4_000 } else { 0 }).collect(),
            allotted: 5_000,
            unit: "credits",
            hour_labels: (0..24).map(|h| format!("{h:02}")).collect(),
            crossings: vec![("80%".into(), 100), ("over 100%".into(), 150)],
            zone: "CDT (UTC-05:00)".into(),
        };
        let decode = |png: Vec<u8>| {
            let mut reader = png::Decoder::new(std::io::Cursor::new(png))
                .read_info()
                .unwrap();
            let mut buf = vec![0; reader.output_buffer_size()];
            let info = reader.next_frame(&mut buf).unwrap();
            assert_eq!((info.width, info.height), (CHART_W, CHART_H));
            buf
        };
        let buf = decode(chart_png(&chart).unwrap());
        let (w, h) = (CHART_W as usize, CHART_H as usize);
        let is = |buf: &[u8], x: usize, y: usize, rgb: [u8; 3]| buf[(y * w + x) * 3..][..3] == rgb;
        const RED: [u8; 3] = [207, 34, 46];
        const BLUE: [u8; 3] = [9, 105, 218];
        // The allotment line: one row, dashed red from the left of the plot to its right.
        let red_in_row = |buf: &[u8], y: usize| (0..w).filter(|x| is(buf, *x, y, RED)).count();
        let line_y = (0..h).max_by_key(|y| red_in_row(&buf, *y)).unwrap();
        assert!(
            red_in_row(&buf, line_y) > 250,
            "{} red",
            red_in_row(&buf, line_y)
        );
        assert!(
            (60..150).any(|x| is(&buf, x, line_y, RED)),
            "starts at the left"
        );
        assert!(
            (w - 150..w - 14).any(|x| is(&buf, x, line_y, RED)),
            "ends at the right"
        );
        // The running total ends at 6,000, above the 5,000 line; it starts at 0, below it.
        let blue_ys = |xs: std::ops::Range<usize>| -> Vec<usize> {
            (0..h)
                .filter(|y| xs.clone().any(|x| is(&buf, x, *y, BLUE)))
                .collect()
        };
        let right = blue_ys(w - 40..w - 16);
        assert!(
            !right.is_empty() && right.iter().all(|y| *y < line_y),
            "{right:?} vs {line_y}"
        );
        let left = blue_ys(64..90);
        assert!(
            !left.is_empty() && left.iter().all(|y| *y > line_y),
            "{left:?} vs {line_y}"
        );

        // Without an allotment there is no line.
        let buf = decode(
            chart_png(&Chart {
                allotted: 0,
                crossings: vec![],
                ..chart
            })
            .unwrap(),
        );
        assert!(
            (0..h).all(|y| red_in_row(&buf, y) < 20),
            "no allotment line"
        );
    }
}
