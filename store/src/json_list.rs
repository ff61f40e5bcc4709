//! Domain lists as the row-per-flow hot tier of flowsql 0.1 stored them:
//! JSON arrays of strings (`[]`, `["a.example","b.example"]`), read without a
//! JSON value per row; anything unusual (escapes) goes through serde_json.
//! Read once, when such a data directory is upgraded (see `upgrade`).

/// Appends `names` to `out` as a JSON array of strings (as flowsql 0.1 wrote
/// them; the tests check that `decode` reads what it wrote).
#[cfg(test)]
pub(crate) fn encode<'a>(names: impl IntoIterator<Item = &'a str>, out: &mut String) {
    out.push('[');
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        if name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            out.push_str(name);
        } else {
            for c in name.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 => {
                        out.push_str(&format!("\\u{:04x}", c as u32));
                    }
                    c => out.push(c),
                }
            }
        }
        out.push('"');
    }
    out.push(']');
}

/// A list that is not a JSON array of strings.
#[derive(Debug)]
pub(crate) struct NotAList(pub String);

/// Calls `each` for every string of the JSON array `text`, in order.
pub(crate) fn decode(text: &[u8], mut each: impl FnMut(&str)) -> Result<(), NotAList> {
    if text == b"[]" {
        return Ok(());
    }
    if !text.contains(&b'\\') && fast_decode(text, &mut each).is_some() {
        return Ok(());
    }
    let names: Vec<String> = serde_json::from_slice(text)
        .map_err(|e| NotAList(format!("{}: {e}", String::from_utf8_lossy(text))))?;
    for name in &names {
        each(name);
    }
    Ok(())
}

/// `["a","b"]` without escapes or spaces; `None` if the text is anything else
/// (then nothing has been passed to `each`: the whole text is checked first).
fn fast_decode(text: &[u8], each: &mut impl FnMut(&str)) -> Option<()> {
    let inner = text.strip_prefix(b"[\"")?.strip_suffix(b"\"]")?;
    let inner = std::str::from_utf8(inner).ok()?;
    // Without escapes, every quote inside is one of the `","` separators.
    let bytes = inner.as_bytes();
    let mut i = 0;
    while let Some(q) = bytes[i..].iter().position(|&b| b == b'"') {
        let at = i + q;
        if bytes.get(at.wrapping_sub(1)) != Some(&b'"')
            && bytes.get(at + 1) == Some(&b',')
            && bytes.get(at + 2) == Some(&b'"')
        {
            i = at + 3;
        } else {
            return None;
        }
    }
    let mut start = 0;
    while let Some(q) = bytes[start..].iter().position(|&b| b == b'"') {
        each(&inner[start..start + q]);
        start += q + 3;
    }
    each(&inner[start..]);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(names: &[&str]) -> (String, Vec<String>) {
        let mut text = String::new();
        encode(names.iter().copied(), &mut text);
        let mut back = Vec::new();
        decode(text.as_bytes(), |n| back.push(n.to_owned())).expect("decodes");
        let parsed: Vec<String> = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed, names);
        (text, back)
    }

    #[test]
    fn lists_round_trip_and_are_valid_json() {
        assert_eq!(round_trip(&[]).0, "[]");
        assert_eq!(round_trip(&["a.example"]).0, r#"["a.example"]"#);
        assert_eq!(round_trip(&["a.example", "b.example"]).0, r#"["a.example","b.example"]"#);
        for names in
            [&["weird\\003name", "quote\"d", "tab\there", "ctl\u{1}x"][..], &[""], &["", ""], &["é.example"]]
        {
            let (_, back) = round_trip(names);
            assert_eq!(back, names);
        }
    }

    #[test]
    fn anything_else_is_an_error() {
        assert!(decode(b"[1]", |_| {}).is_err());
        assert!(decode(b"nope", |_| {}).is_err());
        let mut seen = Vec::new();
        decode(br#"[ "a" , "b" ]"#, |n| seen.push(n.to_owned())).expect("spaces are fine");
        assert_eq!(seen, ["a", "b"]);
    }
}
