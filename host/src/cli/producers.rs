//! What a component says of how it was made: the `producers` custom sections of the
//! WebAssembly tool conventions (`language`, `processed-by`, `sdk`), for `host check`.
//!
//! A component built by `cargo xtask udfs` carries them twice over: rustc writes
//! `language: Rust` into the core module, and for Python UDFs xtask writes `language: Python`,
//! `processed-by: componentize-py` and `sdk: sluice-python` into the component itself. The
//! component's own section wins; without one, the languages of its core modules are listed
//! (a component embedding an interpreter also carries the interpreter's C modules, which is
//! why the build tools name the source language at the top).
//!
//! The bytes have already been loaded and validated by the runtime, but this walker still
//! trusts nothing: every length is checked, malformed input yields what was read so far, and
//! the text is guest text, shown escaped and cut.

use sluice_host::udf::guest_text::sanitize;

/// The most entries of one field shown, and the bytes of each.
const MAX_ENTRIES: usize = 8;
const MAX_ENTRY_BYTES: usize = 128;
/// Component and module nesting followed at most this deep.
const MAX_DEPTH: usize = 8;

/// The producers of a component: each field's `name version` entries, in the order found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Producers {
    /// Source languages, e.g. `Python`, `Rust`.
    pub language: Vec<String>,
    /// Tools that processed it, e.g. `componentize-py 0.25.1`, `wit-component 0.245.1`.
    pub processed_by: Vec<String>,
    /// SDKs used, e.g. `sluice-python 0.1.0`.
    pub sdk: Vec<String>,
}

impl Producers {
    fn add(&mut self, other: Producers) {
        for (mine, theirs) in [
            (&mut self.language, other.language),
            (&mut self.processed_by, other.processed_by),
            (&mut self.sdk, other.sdk),
        ] {
            for entry in theirs {
                if !mine.contains(&entry) && mine.len() < MAX_ENTRIES {
                    mine.push(entry);
                }
            }
        }
    }
}

/// The producers of `bytes` (a component or a core module): its own section's, with the
/// languages of what it nests when it names none itself.
pub fn of(bytes: &[u8]) -> Producers {
    let mut own = Producers::default();
    let mut nested = Producers::default();
    walk(bytes, 0, &mut own, &mut nested);
    if own.language.is_empty() {
        own.language = nested.language;
    }
    own
}

/// Read the sections of the binary `bytes`: its own producers into `own`, those of nested
/// modules and components into `nested`.
fn walk(bytes: &[u8], depth: usize, own: &mut Producers, nested: &mut Producers) {
    let Some(mut rest) = bytes.get(8..) else {
        return;
    };
    if !bytes.starts_with(b"\0asm") {
        return;
    }
    let component = bytes.get(6..8) == Some(&[1, 0]);
    while let Some((&id, after)) = rest.split_first() {
        let Some((size, after)) = leb_u32(after) else {
            return;
        };
        let Some(contents) = after.get(..size as usize) else {
            return;
        };
        rest = &after[size as usize..];
        match id {
            0 => {
                if let Some((name, data)) = string(contents)
                    && name == "producers"
                {
                    own.add(parse(data));
                }
            }
            // A nested core module (1) or component (4) of a component.
            1 | 4 if component && depth < MAX_DEPTH => {
                let mut inner_own = Producers::default();
                walk(contents, depth + 1, &mut inner_own, nested);
                nested.add(inner_own);
            }
            _ => {}
        }
    }
}

/// The payload of a `producers` section: fields, each a name and `(name, version)` entries.
fn parse(data: &[u8]) -> Producers {
    let mut out = Producers::default();
    let Some((fields, mut rest)) = leb_u32(data) else {
        return out;
    };
    for _ in 0..fields.min(16) {
        let Some((field, after)) = string(rest) else {
            return out;
        };
        let Some((count, mut after)) = leb_u32(after) else {
            return out;
        };
        let mut entries = Vec::new();
        for _ in 0..count.min(64) {
            let Some((name, next)) = string(after) else {
                return out;
            };
            let Some((version, next)) = string(next) else {
                return out;
            };
            after = next;
            let entry = if version.is_empty() {
                name.to_string()
            } else {
                format!("{name} {version}")
            };
            entries.push(sanitize(&entry, MAX_ENTRY_BYTES));
        }
        rest = after;
        let target = match field {
            "language" => &mut out.language,
            "processed-by" => &mut out.processed_by,
            "sdk" => &mut out.sdk,
            _ => continue,
        };
        for entry in entries {
            if !target.contains(&entry) && target.len() < MAX_ENTRIES {
                target.push(entry);
            }
        }
    }
    out
}

/// An unsigned LEB128 u32 and what follows it.
fn leb_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// A length-prefixed UTF-8 string and what follows it.
fn string(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = leb_u32(bytes)?;
    let text = rest.get(..len as usize)?;
    Some((std::str::from_utf8(text).ok()?, &rest[len as usize..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leb(mut n: u32, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn text(s: &str, out: &mut Vec<u8>) {
        leb(s.len() as u32, out);
        out.extend_from_slice(s.as_bytes());
    }

    /// A `producers` custom section with `fields`.
    fn producers(fields: &[(&str, &[(&str, &str)])]) -> Vec<u8> {
        let mut payload = Vec::new();
        text("producers", &mut payload);
        leb(fields.len() as u32, &mut payload);
        for (field, entries) in fields {
            text(field, &mut payload);
            leb(entries.len() as u32, &mut payload);
            for (name, version) in *entries {
                text(name, &mut payload);
                text(version, &mut payload);
            }
        }
        let mut section = vec![0];
        leb(payload.len() as u32, &mut section);
        section.extend(payload);
        section
    }

    fn module(sections: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"\0asm\x01\0\0\0".to_vec();
        sections.iter().for_each(|s| out.extend(s));
        out
    }

    fn component(sections: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"\0asm\x0d\0\x01\0".to_vec();
        sections.iter().for_each(|s| out.extend(s));
        out
    }

    fn nested(id: u8, bytes: Vec<u8>) -> Vec<u8> {
        let mut section = vec![id];
        leb(bytes.len() as u32, &mut section);
        section.extend(bytes);
        section
    }

    #[test]
    fn a_component_naming_its_language_is_taken_at_its_word() {
        let inner = module(&[producers(&[("language", &[("C11", "")])])]);
        let bytes = component(&[
            nested(1, inner),
            producers(&[
                ("language", &[("Python", "")]),
                ("processed-by", &[("componentize-py", "0.25.1")]),
                ("sdk", &[("sluice-python", "0.1.0")]),
            ]),
        ]);
        let p = of(&bytes);
        assert_eq!(p.language, ["Python"]);
        assert_eq!(p.processed_by, ["componentize-py 0.25.1"]);
        assert_eq!(p.sdk, ["sluice-python 0.1.0"]);
    }

    #[test]
    fn otherwise_the_languages_of_its_modules() {
        let inner = module(&[producers(&[
            ("language", &[("Rust", "")]),
            ("processed-by", &[("rustc", "1.95.0")]),
        ])]);
        let bytes = component(&[
            nested(1, inner),
            producers(&[("processed-by", &[("wit-component", "0.245.1")])]),
        ]);
        let p = of(&bytes);
        assert_eq!(p.language, ["Rust"]);
        assert_eq!(p.processed_by, ["wit-component 0.245.1"]);
    }

    #[test]
    fn malformed_bytes_give_what_was_read() {
        assert_eq!(of(b""), Producers::default());
        assert_eq!(
            of(b"\0asm\x0d\0\x01\0\0\xff\xff\xff\xff\xff"),
            Producers::default()
        );
        let mut bytes = component(&[producers(&[("language", &[("Py\u{1b}[31m", "")])])]);
        assert_eq!(of(&bytes).language, ["Py\\u{1b}[31m"]);
        bytes.truncate(bytes.len() - 3);
        assert_eq!(of(&bytes).language, Vec::<String>::new());
    }
}
