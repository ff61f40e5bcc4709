//! Where SQL input ends: a small scanner that knows quotes and comments, so
//! that the shell and scripts can tell a finished statement (`...;`) from one
//! that goes on over the next line. It does not parse SQL: DataFusion does
//! that once the input is complete.

/// What a piece of SQL input amounts to so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputState {
    /// Only whitespace and comments.
    Empty,
    /// Some SQL, not yet ended by a `;` outside quotes and comments.
    Incomplete,
    /// Ends with a `;` outside quotes and comments (comments and whitespace
    /// may follow it).
    Complete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Code,
    /// `'...'`; a doubled quote `''` inside reads as leaving and re-entering.
    SingleQuoted,
    /// `"..."`, a quoted identifier.
    DoubleQuoted,
    /// `-- ...` up to the end of the line.
    LineComment,
    /// `/* ... */`, nested as in PostgreSQL.
    BlockComment(u32),
}

/// Scans `input` and says whether it holds a finished statement.
pub fn input_state(input: &str) -> InputState {
    let mut context = Context::Code;
    let mut last_code: Option<char> = None;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match context {
            Context::Code => match c {
                '\'' => {
                    context = Context::SingleQuoted;
                    last_code = Some(c);
                }
                '"' => {
                    context = Context::DoubleQuoted;
                    last_code = Some(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    chars.next();
                    context = Context::LineComment;
                }
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    context = Context::BlockComment(1);
                }
                c if c.is_whitespace() => {}
                c => last_code = Some(c),
            },
            Context::SingleQuoted => {
                if c == '\'' {
                    context = Context::Code;
                }
            }
            Context::DoubleQuoted => {
                if c == '"' {
                    context = Context::Code;
                }
            }
            Context::LineComment => {
                if c == '\n' {
                    context = Context::Code;
                }
            }
            Context::BlockComment(depth) => {
                if c == '*' && chars.peek() == Some(&'/') {
                    chars.next();
                    context = if depth == 1 { Context::Code } else { Context::BlockComment(depth - 1) };
                } else if c == '/' && chars.peek() == Some(&'*') {
                    chars.next();
                    context = Context::BlockComment(depth + 1);
                }
            }
        }
    }
    match (context, last_code) {
        (_, None) => InputState::Empty,
        (Context::Code | Context::LineComment, Some(';')) => InputState::Complete,
        _ => InputState::Incomplete,
    }
}

/// Whether byte offset `pos` of `line` is inside a string literal or a
/// comment (where completion offers nothing), and whether it is inside a
/// quoted identifier.
pub fn position_context(line: &str, pos: usize) -> Position {
    let before = line.get(..pos).unwrap_or(line);
    let mut context = Context::Code;
    let mut chars = before.chars().peekable();
    while let Some(c) = chars.next() {
        context = match context {
            Context::Code => match c {
                '\'' => Context::SingleQuoted,
                '"' => Context::DoubleQuoted,
                '-' if chars.peek() == Some(&'-') => {
                    chars.next();
                    Context::LineComment
                }
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    Context::BlockComment(1)
                }
                _ => Context::Code,
            },
            Context::SingleQuoted if c == '\'' => Context::Code,
            Context::DoubleQuoted if c == '"' => Context::Code,
            Context::LineComment if c == '\n' => Context::Code,
            Context::BlockComment(depth) if c == '*' && chars.peek() == Some(&'/') => {
                chars.next();
                if depth == 1 { Context::Code } else { Context::BlockComment(depth - 1) }
            }
            other => other,
        };
    }
    match context {
        Context::Code => Position::Code,
        Context::DoubleQuoted => Position::QuotedIdentifier,
        Context::SingleQuoted | Context::LineComment | Context::BlockComment(_) => Position::Literal,
    }
}

/// Where a cursor stands, for completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Code,
    QuotedIdentifier,
    /// In a string literal or a comment.
    Literal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_ends_at_a_semicolon_outside_quotes_and_comments() {
        assert_eq!(input_state(""), InputState::Empty);
        assert_eq!(input_state("  \n\t"), InputState::Empty);
        assert_eq!(input_state("-- only a comment"), InputState::Empty);
        assert_eq!(input_state("/* only\n a comment */"), InputState::Empty);
        assert_eq!(input_state("SELECT 1"), InputState::Incomplete);
        assert_eq!(input_state("SELECT 1;"), InputState::Complete);
        assert_eq!(input_state("SELECT 1;  \n"), InputState::Complete);
        assert_eq!(input_state("SELECT 1; -- done"), InputState::Complete);
        assert_eq!(input_state("SELECT 1; /* done */"), InputState::Complete);
        assert_eq!(input_state("SELECT 1; SELECT 2"), InputState::Incomplete);
        assert_eq!(input_state("SELECT 1; SELECT 2;"), InputState::Complete);
        assert_eq!(input_state("SELECT\n1\n;"), InputState::Complete);
    }

    #[test]
    fn semicolons_in_quotes_and_comments_do_not_count() {
        assert_eq!(input_state("SELECT ';"), InputState::Incomplete);
        assert_eq!(input_state("SELECT ';'"), InputState::Incomplete);
        assert_eq!(input_state("SELECT ';';"), InputState::Complete);
        assert_eq!(input_state("SELECT 'it''s;'"), InputState::Incomplete);
        assert_eq!(input_state("SELECT 'it''s;';"), InputState::Complete);
        assert_eq!(input_state("SELECT 1 AS \"a;b\""), InputState::Incomplete);
        assert_eq!(input_state("SELECT 1 AS \"a;b\";"), InputState::Complete);
        assert_eq!(input_state("SELECT 1 -- the end;"), InputState::Incomplete);
        assert_eq!(input_state("SELECT 1 -- the end;\n;"), InputState::Complete);
        assert_eq!(input_state("SELECT 1 /* ; */"), InputState::Incomplete);
        assert_eq!(input_state("SELECT 1 /* /* ; */ ; */"), InputState::Incomplete);
        assert_eq!(input_state("SELECT 1 /* /* ; */ ; */;"), InputState::Complete);
        assert_eq!(input_state("SELECT 1 /* unclosed ;"), InputState::Incomplete);
        assert_eq!(input_state("SELECT 10 - 2;"), InputState::Complete);
        assert_eq!(input_state("SELECT 10 / 2;"), InputState::Complete);
    }

    #[test]
    fn cursor_positions_for_completion() {
        assert_eq!(position_context("SELECT dst", 10), Position::Code);
        assert_eq!(position_context("SELECT \"dst", 11), Position::QuotedIdentifier);
        assert_eq!(position_context("SELECT 'dst", 11), Position::Literal);
        assert_eq!(position_context("SELECT 'a' || dst", 17), Position::Code);
        assert_eq!(position_context("SELECT 1 -- dst", 15), Position::Literal);
        assert_eq!(position_context("SELECT /* x */ dst", 18), Position::Code);
    }
}
