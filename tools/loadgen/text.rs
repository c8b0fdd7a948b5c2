//! Message texts: `lg<run>-<conn>-<n>-` padded with `x`, unique per run and parseable back.
//! Pure functions; no IO.

use std::fmt::Write as _;

/// The unique prefix of every text this run sends.
pub fn run_tag(run_id: u32) -> String {
    format!("lg{run_id:08x}-")
}

pub fn message_text(tag: &str, conn: usize, n: u64, size: usize) -> String {
    let mut text = String::with_capacity(size.max(tag.len() + 24));
    let _ = write!(text, "{tag}{conn}-{n}-");
    while text.len() < size {
        text.push('x');
    }
    text
}

/// `(conn, n)` of a text this run sent; `None` for anyone else's text.
pub fn parse_text(tag: &str, text: &str) -> Option<(usize, u64)> {
    let rest = text.strip_prefix(tag)?;
    let (conn, rest) = rest.split_once('-')?;
    let (n, _) = rest.split_once('-')?;
    Some((conn.parse().ok()?, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_unique_padded_and_parse_back() {
        let tag = run_tag(0xabc);
        let text = message_text(&tag, 12, 345, 100);
        assert_eq!(text.len(), 100);
        assert!(text.starts_with("lg00000abc-12-345-xxx"));
        assert_eq!(parse_text(&tag, &text), Some((12, 345)));
        let short = message_text(&tag, 1, 2, 1);
        assert_eq!(
            short, "lg00000abc-1-2-",
            "never shorter than the unique prefix"
        );
        assert_eq!(parse_text(&tag, &short), Some((1, 2)));
        assert_eq!(
            parse_text(&run_tag(0xabd), &text),
            None,
            "another run's text"
        );
        assert_eq!(parse_text(&tag, "hello"), None);
        assert_eq!(parse_text(&tag, "lg00000abc-x-1-"), None);
    }
}
