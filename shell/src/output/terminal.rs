//! Text that is safe to show on a terminal.
//!
//! Strings in flows come from the network: a DNS server can answer with a
//! name holding ESC sequences that clear the screen, move the cursor, rewrite
//! earlier lines or set the window title. The table and line printers pass
//! every string through [`escape`], which writes control characters (C0, DEL,
//! C1) and the invisible characters that reorder or hide text (bidirectional
//! overrides, zero-width characters, line and paragraph separators) as
//! visible escapes: `\x1b`, `\n`, `\u{202e}`.

/// The width of the terminal standard output writes to, in characters;
/// `None` when standard output is not a terminal (a file, a pipe).
#[cfg(feature = "sql")]
pub fn stdout_columns() -> Option<usize> {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
    // points to `size`, alive and writable for the whole call; the file
    // descriptor is standard output's, which the process holds open.
    let result = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    if result == 0 && size.ws_col > 0 {
        return Some(usize::from(size.ws_col));
    }
    // A terminal that does not say its size: $COLUMNS, else 80.
    Some(std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|c| *c > 0).unwrap_or(80))
}

/// Whether `c` must not reach a terminal raw.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'                   // Arabic letter mark
                | '\u{180e}'             // Mongolian vowel separator
                | '\u{200b}'..='\u{200f}' // zero-width space/joiners, LRM, RLM
                | '\u{2028}'..='\u{202e}' // line/paragraph separators, bidi embeddings and overrides
                | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
                | '\u{2066}'..='\u{2069}' // bidi isolates
                | '\u{feff}'             // zero-width no-break space
                | '\u{fff9}'..='\u{fffb}' // interlinear annotations
        )
}

/// Appends `text` to `out` with every unsafe character escaped. With
/// `keep_newlines`, `\n` stays a line break (for text the program wrote
/// itself, such as query plans).
pub fn escape_into(text: &str, keep_newlines: bool, out: &mut String) {
    if !text.chars().any(is_unsafe) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) && u32::from(c) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
}

/// `text` with every unsafe character escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(text, false, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(escape("www.example.com"), "www.example.com");
        assert_eq!(escape("bücher.example"), "bücher.example");
        assert_eq!(escape("例え.テスト"), "例え.テスト");
        assert_eq!(escape(r"a\b"), r"a\b");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("evil\x1b[2J"), r"evil\x1b[2J");
        assert_eq!(escape("bell\x07"), r"bell\x07");
        assert_eq!(escape("back\x08space"), r"back\x08space");
        assert_eq!(escape("a\rb\nc\td"), r"a\rb\nc\td");
        assert_eq!(escape("nul\0"), r"nul\x00");
        assert_eq!(escape("del\x7f"), r"del\x7f");
        // C1 controls, including the 8-bit CSI.
        assert_eq!(escape("csi\u{9b}2J"), r"csi\u{9b}2J");
        assert_eq!(escape("osc\u{9d}0;title\u{9c}"), r"osc\u{9d}0;title\u{9c}");
    }

    #[test]
    fn invisible_reordering_characters_are_escaped() {
        assert_eq!(escape("moc.\u{202e}evil"), r"moc.\u{202e}evil");
        assert_eq!(escape("zero\u{200b}width"), r"zero\u{200b}width");
        assert_eq!(escape("bom\u{feff}"), r"bom\u{feff}");
    }

    #[test]
    fn newlines_can_be_kept_for_trusted_text() {
        let mut out = String::new();
        escape_into("line 1\nline\x1b 2", true, &mut out);
        assert_eq!(out, "line 1\nline\\x1b 2");
    }
}
