//! Text transforms: the building blocks of word count.
//!
//! `text#split_words` (flat_map) splits a line on white space, `text#pair_one` (map) turns a
//! word into the keyed record `(word, 1)` for `reduce_by_key`, `text#uppercase` and
//! `text#lowercase` (map) change case, `text#non_empty` (filter) drops blank lines,
//! `text#key_number` (try_map) reads `KEY INTEGER` lines as keyed records.

use sluice_guest::export_transforms;

/// Split a line into words on white space.
pub fn split_words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `word -> (word, 1)`.
pub fn pair_one(word: &str) -> (&str, i64) {
    (word, 1)
}

/// `"key 12" -> (key, 12)`: a word and an integer; anything else fails the batch, naming the
/// line.
pub fn key_number(line: &str) -> Result<(&str, i64), String> {
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().map(str::parse::<i64>),
        parts.next(),
    ) {
        (Some(key), Some(Ok(n)), None) => Ok((key, n)),
        _ => Err(format!("{line:?} is not `KEY INTEGER`")),
    }
}

/// The line in upper case (Unicode-aware; ASCII lines take a fast path).
pub fn uppercase(line: &str) -> String {
    if line.is_ascii() {
        line.to_ascii_uppercase()
    } else {
        line.to_uppercase()
    }
}

/// The line in lower case (Unicode-aware).
pub fn lowercase(line: &str) -> String {
    line.to_lowercase()
}

/// Whether the line has anything but white space.
pub fn non_empty(line: &str) -> bool {
    !line.trim().is_empty()
}

export_transforms! {
    flat_map split_words,
    map pair_one,
    try_map key_number,
    map uppercase,
    map lowercase,
    filter non_empty,
}
