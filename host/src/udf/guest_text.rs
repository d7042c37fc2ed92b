//! Text a guest wrote (log messages and fields, error messages, panic reports), made safe to
//! print and to keep: control characters escaped, so no newline, carriage return or ANSI escape
//! can forge a log line or repaint a terminal, and cut to a bound, so no guest can make the host
//! keep or print more than that.

use std::fmt::Write;

/// `text` with control characters escaped (`\n`, `\r`, `\t`, `\u{1b}`, …) and cut after
/// `max_bytes` bytes of output; a cut text ends with `… (N more bytes)`.
///
/// Reads at most about `max_bytes` of the input, so a 100 MB message costs no more than a short
/// one.
pub fn sanitize(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes) + 24);
    for (at, c) in text.char_indices() {
        let before = out.len();
        push_escaped(&mut out, c);
        if out.len() > max_bytes {
            out.truncate(before);
            let _ = write!(out, "… ({} more bytes)", text.len() - at);
            return out;
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            sanitize("a\nb\rc\td\u{1b}[31mred\u{7}", 100),
            "a\\nb\\rc\\td\\u{1b}[31mred\\u{7}"
        );
        // Bidirectional overrides could reorder what a terminal shows.
        assert_eq!(sanitize("x\u{202e}y", 100), "x\\u{202e}y");
        assert_eq!(
            sanitize("plain words, ünïcode", 100),
            "plain words, ünïcode"
        );
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_and_says_how_much_is_left() {
        let text = "é".repeat(1000); // 2000 bytes
        let cut = sanitize(&text, 11);
        assert_eq!(cut, format!("{}… (1990 more bytes)", "é".repeat(5)));
        // An escape is never split in half.
        let cut = sanitize("abc\n\n\n", 5);
        assert_eq!(cut, "abc\\n… (2 more bytes)");
    }

    #[test]
    fn a_huge_text_costs_only_its_bound() {
        let text = "x".repeat(100 << 20);
        let cut = sanitize(&text, 4096);
        assert!(cut.len() < 4096 + 32, "{}", cut.len());
        assert!(cut.ends_with(&format!("… ({} more bytes)", (100 << 20) - 4096)));
    }
}
