//! Mail addresses and the SMTP URL as creditd takes them: `check` (config and registry) and
//! sending (`mail`) use these same parsers, so what `check` accepts is what sending can use.

use std::net::IpAddr;

use anyhow::{bail, Context};
use lettre::message::Mailbox;

/// Checks one recipient (`report_to`, `ops_to`) as sending will take it: a bare address
/// `local@domain` that lettre reads both as an [`lettre::Address`] and as the [`Mailbox`]
/// `mail` builds and sends to, with no comma (the outbox keeps recipients comma-separated).
/// `Err` is lettre's reason, e.g. "Invalid email user".
pub fn check_recipient(addr: &str) -> Result<(), String> {
    if addr.contains(',') {
        return Err("a comma separates addresses".into());
    }
    addr.parse::<lettre::Address>().map_err(|e| e.to_string())?;
    addr.parse::<Mailbox>().map_err(|e| e.to_string())?;
    Ok(())
}

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://` with STARTTLS required.
    StartTls,
    /// `smtp://` in the clear: only to a loopback host.
    None,
}

/// `[smtp] url` taken apart and checked, with how to secure it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub tls: Tls,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads `[smtp] url` (`scheme://[user@]host[:port]`) without connecting or reading the
/// password: a password in the URL is refused, and `tls_required = false` (`tls = "none"`)
/// is only allowed to a loopback host.
pub fn smtp_url(url: &str, tls_required: bool) -> anyhow::Result<SmtpUrl> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| "[smtp] url: expected scheme://[user@]host[:port]".to_string())?;
    let rest = rest.trim_end_matches('/');
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => {
            if u.contains(':') {
                bail!("[smtp] url: no password in the url; use CREDITD_SMTP_PASSWORD or the systemd credential smtp-password");
            }
            (Some(u.to_string()), h)
        }
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            let port = p
                .parse()
                .with_context(|| format!("[smtp] url: bad port {p:?}"))?;
            (h.trim_matches(['[', ']']).to_string(), Some(port))
        }
        _ => (hostport.to_string(), None),
    };
    let tls = match (scheme, tls_required) {
        ("smtps", _) => Tls::Implicit,
        ("smtp", true) => Tls::StartTls,
        ("smtp", false) if is_loopback(&host) => Tls::None,
        ("smtp", false) => {
            bail!("[smtp] tls = \"none\" is only allowed to a loopback host, not {host:?}")
        }
        (other, _) => bail!("[smtp] url: expected smtp:// or smtps://, found {other}://"),
    };
    Ok(SmtpUrl {
        tls,
        user,
        host,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls() {
        let url = smtp_url("smtps://bob@mail.example.com:465", true).unwrap();
        assert_eq!(
            url,
            SmtpUrl {
                tls: Tls::Implicit,
                user: Some("bob".into()),
                host: "mail.example.com".into(),
                port: Some(465),
            }
        );
        assert_eq!(smtp_url("smtp://[::1]:25", false).unwrap().tls, Tls::None);
        assert_eq!(smtp_url("smtp://localhost", false).unwrap().port, None);
        let err = smtp_url("smtps://bob:hunter2@mail.example.com:465", true).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let err = smtp_url("http://mail.example.com", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "[smtp] url: expected smtp:// or smtps://, found http://"
        );
    }

    #[test]
    fn recipients() {
        assert!(check_recipient("ops@example.com").is_ok());
        assert!(check_recipient("a@example.com,b@example.com").is_err());
        assert!(check_recipient("Ops <ops@example.com>").is_err());
    }
}
