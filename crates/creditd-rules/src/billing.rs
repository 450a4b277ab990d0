//! Which calls are charged (DESIGN §2.5 `[billing] exempt_status`): an exempt status is
//! counted but never charged.

/// A status or a class of statuses (`5xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusPattern {
    Exact(u16),
    Class(u16),
}

impl StatusPattern {
    /// Reads `"429"`, `429` or a class `"5xx"` (any case, spaces around ignored): a status or
    /// class of 100–599; `None` for anything else.
    pub fn parse(text: &str) -> Option<StatusPattern> {
        let text = text.trim().to_ascii_lowercase();
        let bytes = text.as_bytes();
        let ok_class = bytes.len() == 3 && (b'1'..=b'5').contains(&bytes[0]);
        if ok_class && &bytes[1..] == b"xx" {
            return Some(StatusPattern::Class(u16::from(bytes[0] - b'0')));
        }
        if ok_class && bytes[1..].iter().all(u8::is_ascii_digit) {
            return text.parse().ok().map(StatusPattern::Exact);
        }
        None
    }

    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusPattern::Exact(s) => s == status,
            StatusPattern::Class(c) => status / 100 == c,
        }
    }
}

/// Whether a call with `status` is counted but never charged under `exempt`.
pub fn is_exempt(exempt: &[StatusPattern], status: u16) -> bool {
    exempt.iter().any(|p| p.matches(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_classes() {
        let exempt = [
            StatusPattern::parse("429").unwrap(),
            StatusPattern::parse(" 5XX ").unwrap(),
        ];
        assert!(is_exempt(&exempt, 429) && is_exempt(&exempt, 503));
        assert!(!is_exempt(&exempt, 404) && !is_exempt(&exempt, 200));
        for bad in ["6xx", "42", "4291", "x29", "", "0xx"] {
            assert_eq!(StatusPattern::parse(bad), None, "{bad:?}");
        }
    }
}
