//! DNS names as flowsql stores and prints them.
//!
//! The labels come from packets anyone can send, so they may hold any byte.
//! A stored name is lower case ASCII without the trailing dot; every byte that
//! is not a printable ASCII character (controls, escape sequences, UTF-8, ...)
//! and every `.` or `\` inside a label is written as `\DDD` (decimal, as in
//! RFC 1035 presentation format). So a stored name is always safe to print and
//! names the same wire name it came from, and two spellings that differ only
//! in case are one name (DNS compares names case-insensitively).

use flowsql_event::DomainName;
use hickory_proto::rr::Name;

/// The presentation form of `name`: lower case, escaped, no trailing dot.
/// The root name gives an empty string.
pub fn present(name: &Name) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for &byte in label {
            let byte = byte.to_ascii_lowercase();
            if byte.is_ascii_graphic() && byte != b'.' && byte != b'\\' {
                out.push(char::from(byte));
            } else {
                out.push('\\');
                out.push(char::from(b'0' + byte / 100));
                out.push(char::from(b'0' + byte / 10 % 10));
                out.push(char::from(b'0' + byte % 10));
            }
        }
    }
    out
}

/// `present` as a shared name, or `None` for the root (no name at all).
pub fn domain_name(name: &Name) -> Option<DomainName> {
    let text = present(name);
    (!text.is_empty()).then(|| DomainName::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_from_labels(labels: &[&[u8]]) -> Name {
        Name::from_labels(labels.iter().copied()).expect("valid labels")
    }

    #[test]
    fn lower_case_without_trailing_dot() {
        let name = Name::from_ascii("WWW.Example.COM.").expect("name");
        assert_eq!(present(&name), "www.example.com");
    }

    #[test]
    fn control_and_non_ascii_bytes_are_escaped() {
        let name = name_from_labels(&[b"a\x1b[31mred", b"caf\xc3\xa9", b"x"]);
        assert_eq!(present(&name), "a\\027[31mred.caf\\195\\169.x");
        assert!(present(&name).chars().all(|c| c.is_ascii_graphic()));
    }

    #[test]
    fn dots_backslashes_and_spaces_inside_labels_are_escaped() {
        let name = name_from_labels(&[b"a.b", b"c\\d", b"e f"]);
        assert_eq!(present(&name), "a\\046b.c\\092d.e\\032f");
    }

    #[test]
    fn the_root_has_no_name() {
        assert_eq!(domain_name(&Name::root()), None);
    }
}
