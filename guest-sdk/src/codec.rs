//! How typed keys and values become bytes and back.
//!
//! The host moves keys and values as opaque bytes; the job manifest names a codec for each stream
//! so that the host can print and store them. The type of a UDF's parameter picks the codec on
//! the guest side:
//!
//! | Rust type | codec | bytes |
//! | --- | --- | --- |
//! | `&str`, `String` | `text` | UTF-8, as is |
//! | `&[u8]`, `Vec<u8>` | `bytes` | as is |
//! | integers, floats, `bool` | `text` (also valid `json`) | decimal text: `42`, `-1.5`, `true` |
//! | [`Json<T>`] | `json` | one JSON document |
//! | [`Bincode<T>`] | `bincode` | bincode 1 (little-endian, fixed-width integers) |
//!
//! Numbers are decimal text so that `print`, text files and the host's built-in reducers read them
//! without knowing the UDF, and so that a number is valid under both the `text` and `json` codecs.

use std::fmt;

/// A value that can be read from the bytes of a key or value.
///
/// `'a` is the lifetime of the input batch: `&str` and `&[u8]` borrow from it without copying.
pub trait Decode<'a>: Sized {
    /// Whether this type is read from UTF-8 text. The SDK then checks a batch's column as UTF-8
    /// once, so that each record can skip the check ([`Decode::decode_str`]).
    const TEXT: bool = false;

    /// Read a value, or say why the bytes are not one.
    fn decode(bytes: &'a [u8]) -> Result<Self, CodecError>;

    /// Read a value from bytes already known to be UTF-8; the default reads the bytes.
    fn decode_str(text: &'a str) -> Result<Self, CodecError> {
        Self::decode(text.as_bytes())
    }
}

/// A value that can be written as the bytes of a key or value.
pub trait Encode {
    /// Append this value's bytes to `out`.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError>;
}

/// Why bytes could not be decoded into a value, or a value not encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    /// What was expected, e.g. `UTF-8 text` or `an i64 in decimal`.
    pub expected: &'static str,
    /// What went wrong.
    pub detail: String,
}

impl CodecError {
    fn new(expected: &'static str, detail: impl fmt::Display) -> Self {
        Self {
            expected,
            detail: detail.to_string(),
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}: {}", self.expected, self.detail)
    }
}

impl std::error::Error for CodecError {}

/// Show at most the first 64 bytes of a bad input, so an error message stays readable.
fn preview(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(64)];
    let mut text = String::from_utf8_lossy(shown).into_owned();
    if bytes.len() > shown.len() {
        text.push('…');
    }
    format!("{text:?}")
}

impl<'a> Decode<'a> for &'a str {
    const TEXT: bool = true;

    fn decode(bytes: &'a [u8]) -> Result<Self, CodecError> {
        std::str::from_utf8(bytes)
            .map_err(|e| CodecError::new("UTF-8 text", format!("{e} in {}", preview(bytes))))
    }

    #[inline]
    fn decode_str(text: &'a str) -> Result<Self, CodecError> {
        Ok(text)
    }
}

impl Decode<'_> for String {
    const TEXT: bool = true;

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        <&str>::decode(bytes).map(str::to_owned)
    }

    fn decode_str(text: &str) -> Result<Self, CodecError> {
        Ok(text.to_owned())
    }
}

impl<'a> Decode<'a> for &'a [u8] {
    fn decode(bytes: &'a [u8]) -> Result<Self, CodecError> {
        Ok(bytes)
    }
}

impl Decode<'_> for Vec<u8> {
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(bytes.to_vec())
    }
}

impl Encode for str {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(self.as_bytes());
        Ok(())
    }
}

impl Encode for String {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.as_str().encode(out)
    }
}

impl Encode for [u8] {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(self);
        Ok(())
    }
}

impl Encode for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.as_slice().encode(out)
    }
}

impl<T: Encode + ?Sized> Encode for &T {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        (**self).encode(out)
    }
}

macro_rules! decimal_decode {
    ($($ty:ty => $what:literal),* $(,)?) => {$(
        impl Decode<'_> for $ty {
            const TEXT: bool = true;

            fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| CodecError::new($what, preview(bytes)))?;
                Self::decode_str(text)
            }

            fn decode_str(text: &str) -> Result<Self, CodecError> {
                text.trim().parse().map_err(|e| CodecError::new($what, format!("{e} in {}", preview(text.as_bytes()))))
            }
        }
    )*};
}

decimal_decode! {
    i8 => "an i8 in decimal", i16 => "an i16 in decimal", i32 => "an i32 in decimal",
    i64 => "an i64 in decimal", i128 => "an i128 in decimal",
    u8 => "a u8 in decimal", u16 => "a u16 in decimal", u32 => "a u32 in decimal",
    u64 => "a u64 in decimal", u128 => "a u128 in decimal",
    f32 => "an f32 in decimal", f64 => "an f64 in decimal", bool => "true or false",
}

// Integers are the common key and value, so they skip `core::fmt`: through `write!` an integer
// cost ~9 % of a whole W4 run's CPU in the guest (`perf`, SLUICE_WASM_PERFMAP=1).
macro_rules! integer_encode {
    ($($ty:ty),* $(,)?) => {$(
        impl Encode for $ty {
            fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
                out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
                Ok(())
            }
        }
    )*};
}

integer_encode!(i8, i16, i32, i64, i128, u8, u16, u32, u64, u128);

macro_rules! display_encode {
    ($($ty:ty => $what:literal),* $(,)?) => {$(
        impl Encode for $ty {
            fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
                use std::io::Write;
                write!(out, "{}", self).map_err(|e| CodecError::new($what, e))
            }
        }
    )*};
}

display_encode! { f32 => "an f32 in decimal", f64 => "an f64 in decimal", bool => "true or false" }

/// A value written as one JSON document (the `json` codec), for any serde type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Json<T>(pub T);

impl<'a, T: serde::Deserialize<'a>> Decode<'a> for Json<T> {
    const TEXT: bool = true;

    fn decode(bytes: &'a [u8]) -> Result<Self, CodecError> {
        serde_json::from_slice(bytes)
            .map(Json)
            .map_err(|e| CodecError::new("JSON", format!("{e} in {}", preview(bytes))))
    }

    fn decode_str(text: &'a str) -> Result<Self, CodecError> {
        serde_json::from_str(text)
            .map(Json)
            .map_err(|e| CodecError::new("JSON", format!("{e} in {}", preview(text.as_bytes()))))
    }
}

impl<T: serde::Serialize> Encode for Json<T> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(out, &self.0).map_err(|e| CodecError::new("JSON", e))
    }
}

/// A value written in bincode 1 (the `bincode` codec), for any serde type: compact and fast,
/// but opaque to the host, which prints it as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bincode<T>(pub T);

impl<'a, T: serde::Deserialize<'a>> Decode<'a> for Bincode<T> {
    fn decode(bytes: &'a [u8]) -> Result<Self, CodecError> {
        bincode::deserialize(bytes)
            .map(Bincode)
            .map_err(|e| CodecError::new("bincode", e))
    }
}

impl<T: serde::Serialize> Encode for Bincode<T> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        bincode::serialize_into(out, &self.0).map_err(|e| CodecError::new("bincode", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Encode>(value: T) -> Vec<u8> {
        let mut out = Vec::new();
        value.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn numbers_are_decimal_text() {
        assert_eq!(bytes_of(42i64), b"42");
        assert_eq!(bytes_of(-1.5f64), b"-1.5");
        assert_eq!(bytes_of(true), b"true");
        // Integers skip `core::fmt`; they must still read back exactly at every width's edges.
        assert_eq!(bytes_of(0u8), b"0");
        assert_eq!(bytes_of(i64::MIN), i64::MIN.to_string().as_bytes());
        assert_eq!(bytes_of(u128::MAX), u128::MAX.to_string().as_bytes());
        assert_eq!(bytes_of(-7i8), b"-7");
        for n in [i32::MIN, -1, 0, 9, 10, 99_999, i32::MAX] {
            assert_eq!(i32::decode(&bytes_of(n)).unwrap(), n);
        }
        assert_eq!(i64::decode(b"-17").unwrap(), -17);
        assert_eq!(u32::decode(b" 7\n").unwrap(), 7);
        let err = i64::decode(b"4x").unwrap_err();
        assert_eq!(err.expected, "an i64 in decimal");
        assert!(err.detail.contains("\"4x\""), "{err}");
    }

    #[test]
    fn text_borrows_and_rejects_bad_utf8() {
        let input = b"hello".to_vec();
        let s: &str = Decode::decode(&input).unwrap();
        assert_eq!(s, "hello");
        let err = <&str>::decode(&[0x66, 0xff]).unwrap_err();
        assert_eq!(err.expected, "UTF-8 text");
    }

    #[test]
    fn json_and_bincode_round_trip() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Event {
            user: u32,
            kind: String,
        }
        let event = Event {
            user: 7,
            kind: "click".into(),
        };
        let json = bytes_of(Json(&event));
        assert_eq!(json, br#"{"user":7,"kind":"click"}"#);
        let back: Json<Event> = Decode::decode(&json).unwrap();
        assert_eq!(back.0, event);
        let bin = bytes_of(Bincode(&event));
        let back: Bincode<Event> = Decode::decode(&bin).unwrap();
        assert_eq!(back.0, event);
        assert!(Json::<Event>::decode(b"{").is_err());
    }
}
