//! How the host reads the bytes of keys and values it has to show or decode: in `print` and
//! `text_files` lines, in `jsonl` output and in the JSON arrays that joins and groups build. The
//! codecs match the SDK's (`guest-sdk/src/codec.rs`), so what a UDF wrote reads back as it meant.

use serde::{Deserialize, Serialize};

/// How the bytes of keys or values are read when they are shown (`print`, `text_files`) or
/// decoded (`jsonl` output, JSON arrays of joins and groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// UTF-8 text (the SDK's `&str` / `String`); a JSON string.
    #[default]
    Text,
    /// A number in decimal text (the SDK's integers and floats); a JSON number.
    Number,
    /// A JSON document (the SDK's `Json<T>`); embedded as it is.
    Json,
    /// Opaque bytes (the SDK's `Bincode<T>` and `Vec<u8>`); shown and written as hex.
    Bytes,
}

impl Codec {
    /// Its name in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Text => "text",
            Codec::Number => "number",
            Codec::Json => "json",
            Codec::Bytes => "bytes",
        }
    }

    /// Append the item as text: as it is for text, numbers and JSON (invalid UTF-8 replaced),
    /// hex for bytes.
    pub fn show(self, item: &[u8], out: &mut String) {
        match self {
            Codec::Bytes => out.push_str(&hex::encode(item)),
            _ => out.push_str(&String::from_utf8_lossy(item)),
        }
    }

    /// Append the item as one JSON value: a string for text and bytes (hex), the number or
    /// document itself for numbers and JSON. An item that is not what its codec says (a number
    /// codec over `abc`) is written as a JSON string, so the output stays valid JSON; the return
    /// value says whether that happened.
    pub fn write_json(self, item: &[u8], out: &mut Vec<u8>) -> bool {
        let as_string = |out: &mut Vec<u8>, text: &str| {
            // Serializing a &str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, text);
        };
        match self {
            Codec::Text => {
                as_string(out, &String::from_utf8_lossy(item));
                true
            }
            Codec::Bytes => {
                as_string(out, &hex::encode(item));
                true
            }
            Codec::Number => {
                let trimmed = item.trim_ascii();
                if serde_json::from_slice::<serde_json::Number>(trimmed).is_ok() {
                    out.extend_from_slice(trimmed);
                    true
                } else {
                    as_string(out, &String::from_utf8_lossy(item));
                    false
                }
            }
            Codec::Json => {
                if serde_json::from_slice::<serde::de::IgnoredAny>(item).is_ok() {
                    out.extend_from_slice(item.trim_ascii());
                    true
                } else {
                    as_string(out, &String::from_utf8_lossy(item));
                    false
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(codec: Codec, item: &[u8]) -> (String, bool) {
        let mut out = Vec::new();
        let ok = codec.write_json(item, &mut out);
        (String::from_utf8(out).unwrap(), ok)
    }

    #[test]
    fn items_decode_by_codec() {
        assert_eq!(json(Codec::Text, b"a \"q\""), (r#""a \"q\"""#.into(), true));
        assert_eq!(json(Codec::Number, b"42"), ("42".into(), true));
        assert_eq!(json(Codec::Number, b"-1.5"), ("-1.5".into(), true));
        assert_eq!(json(Codec::Number, b"abc"), (r#""abc""#.into(), false));
        assert_eq!(
            json(Codec::Json, br#"{"a":[1]}"#),
            (r#"{"a":[1]}"#.into(), true)
        );
        assert_eq!(json(Codec::Json, b"{oops"), (r#""{oops""#.into(), false));
        assert_eq!(json(Codec::Bytes, &[0, 255]), (r#""00ff""#.into(), true));
        let mut shown = String::new();
        Codec::Text.show(&[0x66, 0xff], &mut shown);
        assert_eq!(shown, "f\u{fffd}");
    }
}
