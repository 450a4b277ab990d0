//! The layout every message shares (DESIGN §5, "Form"): a phone-first HTML page (viewport,
//! one column of at most 640 px, inline styles and tables for layout so Outlook reads it too,
//! wide tables scrolling inside their own box) and the same content as aligned plain text.

use std::fmt::Write as _;

use super::{html, one_line};

const FONT: &str = "font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif";

/// The tone of a message's headline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Over the allotment, or something failed.
    Alarm,
    /// Near the limit, or something needs a look.
    Warn,
    /// News without a problem.
    Info,
}

impl Tone {
    fn colors(self) -> (&'static str, &'static str) {
        match self {
            Tone::Alarm => ("#cf222e", "#fff1f0"),
            Tone::Warn => ("#bf8700", "#fff8e5"),
            Tone::Info => ("#0969da", "#eef6ff"),
        }
    }
}

/// A message being written: its plain text and its HTML body side by side.
#[derive(Debug, Default)]
pub struct Doc {
    pub text: String,
    pub html: String,
}

/// How a table cell aligns: figures right, words left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

impl Doc {
    /// The news: the first line of the text, a coloured box on top of the HTML.
    pub fn headline(&mut self, tone: Tone, news: &str) {
        let (edge, bg) = tone.colors();
        let _ = writeln!(self.text, "{}\n", one_line(news));
        let _ = writeln!(
            self.html,
            "<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\"><tr><td style=\"border-left:4px solid {edge};background:{bg};padding:10px 12px;font-size:17px;line-height:1.35;font-weight:600\">{}</td></tr></table>",
            html(news)
        );
    }

    /// A paragraph.
    pub fn para(&mut self, s: &str) {
        let _ = writeln!(self.text, "{}\n", one_line(s));
        let _ = writeln!(self.html, "<p style=\"margin:12px 0\">{}</p>", html(s));
    }

    /// A paragraph in smaller, grey type (a note, a footnote).
    pub fn note(&mut self, s: &str) {
        let _ = writeln!(self.text, "{}\n", one_line(s));
        let _ = writeln!(
            self.html,
            "<p style=\"margin:12px 0;font-size:13px;color:#57606a\">{}</p>",
            html(s)
        );
    }

    /// A section heading.
    pub fn heading(&mut self, s: &str) {
        let _ = writeln!(self.text, "{}", one_line(s));
        let _ = writeln!(
            self.html,
            "<h3 style=\"margin:20px 0 6px;font-size:16px\">{}</h3>",
            html(s)
        );
    }

    /// Label–value rows (a breakdown): two columns, which fit any screen. A row whose label
    /// starts with `=` is a total: drawn with a rule above it.
    pub fn pairs(&mut self, rows: &[(String, String)]) {
        let width = rows
            .iter()
            .map(|(k, _)| k.trim_start_matches('=').chars().count())
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            self.html,
            "<table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"border-collapse:collapse;width:100%;font-size:14px\">"
        );
        for (k, v) in rows {
            let total = k.starts_with('=');
            let k = k.trim_start_matches('=');
            let _ = writeln!(self.text, "  {k:<width$}  {}", one_line(v));
            let rule = if total {
                "border-top:1px solid #8c959f;font-weight:600;"
            } else {
                ""
            };
            let _ = writeln!(
                self.html,
                "<tr><td style=\"{rule}padding:3px 8px 3px 0;color:#57606a;vertical-align:top\">{}</td><td style=\"{rule}padding:3px 0;vertical-align:top\">{}</td></tr>",
                html(k),
                html(v)
            );
        }
        let _ = writeln!(self.html, "</table>");
        self.text.push('\n');
    }

    /// A table of rows; in HTML it scrolls sideways inside its own box when it is wider than
    /// the screen, so the page itself never does.
    pub fn table(&mut self, head: &[(&str, Align)], rows: &[Vec<String>]) {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|c| one_line(c)).collect())
            .collect();
        let mut widths: Vec<usize> = head.iter().map(|(h, _)| h.chars().count()).collect();
        for r in &cells {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let line = |cols: Vec<&str>| -> String {
            let mut out = String::new();
            for (i, c) in cols.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                let align = head.get(i).map_or(Align::Left, |h| h.1);
                match align {
                    Align::Left => {
                        let _ = write!(out, "  {c:<w$}");
                    }
                    Align::Right => {
                        let _ = write!(out, "  {c:>w$}");
                    }
                }
            }
            out.trim_end().to_string()
        };
        let _ = writeln!(self.text, "{}", line(head.iter().map(|h| h.0).collect()));
        for r in &cells {
            let _ = writeln!(
                self.text,
                "{}",
                line(r.iter().map(String::as_str).collect())
            );
        }
        self.text.push('\n');
        // About as wide as its columns need (long words may still break past 28 characters),
        // so a phone scrolls the table inside its box rather than squeezing it into a tall
        // column; on a desktop it fits the 640 px column.
        let min_width: usize = widths.iter().map(|w| (*w).min(28) * 7 + 16).sum();
        let _ = writeln!(
            self.html,
            "<div style=\"overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%\"><table cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"border-collapse:collapse;width:100%;min-width:{}px;font-size:14px\"><tr>",
            min_width.min(612)
        );
        for (h, a) in head {
            let _ = write!(
                self.html,
                "<th style=\"text-align:{};padding:4px 8px;border-bottom:2px solid #d0d7de;white-space:nowrap\">{}</th>",
                css(*a),
                html(h)
            );
        }
        let _ = writeln!(self.html, "</tr>");
        for r in rows {
            let _ = write!(self.html, "<tr>");
            for (i, c) in r.iter().enumerate() {
                let a = head.get(i).map_or(Align::Left, |h| h.1);
                // Figures, dates, ids and other short cells never break (an org id split over
                // two lines reads as two numbers); long ones (endpoints, file names) may.
                let wrap = if a == Align::Right || c.chars().count() <= 28 {
                    "white-space:nowrap"
                } else {
                    "word-break:break-word"
                };
                let _ = write!(
                    self.html,
                    "<td style=\"text-align:{};padding:4px 8px;border-bottom:1px solid #eee;{wrap}\">{}</td>",
                    css(a),
                    html(c)
                );
            }
            let _ = writeln!(self.html, "</tr>");
        }
        let _ = writeln!(self.html, "</table></div>");
    }

    /// The inline chart (`cid:chart`), `w`×`h` px, shrinking to the screen's width; `alt`
    /// says what it shows to a reader without pictures.
    pub fn chart(&mut self, w: u32, h: u32, alt: &str) {
        let _ = writeln!(
            self.html,
            "<p style=\"margin:8px 0\"><img src=\"cid:chart\" width=\"{w}\" height=\"{h}\" alt=\"{}\" style=\"display:block;width:100%;max-width:{w}px;height:auto;border:0\"></p>",
            html(alt)
        );
    }

    /// The page: `title` in the head, the body in one centred column.
    pub fn page(&self, title: &str) -> String {
        wrap(title, &self.html)
    }
}

fn css(a: Align) -> &'static str {
    match a {
        Align::Left => "left",
        Align::Right => "right",
    }
}

/// A whole HTML page around `body`: viewport for phones, one column of at most 640 px (a
/// fixed 640 px table around it for Outlook on Windows, whose Word engine ignores
/// `max-width`).
pub fn wrap(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title></head>\n\
         <body style=\"margin:0;padding:0;background:#f6f8fa\">\n\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"background:#f6f8fa\"><tr><td align=\"center\" style=\"padding:12px 6px\">\n\
         <!--[if mso]><table role=\"presentation\" width=\"640\" align=\"center\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\"><tr><td><![endif]-->\n\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"max-width:640px;table-layout:fixed;background:#ffffff;border:1px solid #d0d7de\"><tr><td style=\"padding:14px;{FONT};font-size:15px;line-height:1.45;color:#1f2328;text-align:left\">\n\
         {body}</td></tr></table>\n\
         <!--[if mso]></td></tr></table><![endif]-->\n\
         <p style=\"{FONT};font-size:12px;color:#57606a;margin:8px 0\">Sent by creditd, automatically. Replies are not read.</p>\n\
         </td></tr></table>\n</body></html>\n",
        html(&one_line(title))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outlook on Windows ignores `max-width`: a fixed 640 px table, read only by it, keeps
    /// the column from stretching across a wide window; every other client skips it.
    #[test]
    fn the_page_has_a_fixed_width_column_for_outlook_only() {
        let page = wrap("t", "<p>x</p>");
        let open = page
            .find("<!--[if mso]><table role=\"presentation\" width=\"640\"")
            .expect("an Outlook-only table");
        let close = page
            .find("<!--[if mso]></td></tr></table><![endif]-->")
            .expect("closed for Outlook only");
        let body = page.find("<p>x</p>").unwrap();
        assert!(open < body && body < close, "{page}");
        assert!(page.contains("max-width:640px"), "{page}");
    }
}
