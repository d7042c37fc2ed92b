//! ASCII upper case over three boundary encodings, for the encoding benchmark. Written against
//! raw wit-bindgen bindings (no SDK) so that only the encoding differs.

wit_bindgen::generate!({
    path: "../../wit",
    world: "encodings",
});

/// The implementation.
pub struct Upper;

impl Guest for Upper {
    fn upper_one(value: Vec<u8>) -> Vec<u8> {
        value.to_ascii_uppercase()
    }

    fn upper_lists(values: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        values.iter().map(|v| v.to_ascii_uppercase()).collect()
    }

    fn upper_column(data: Vec<u8>, ends: Vec<u32>) -> (Vec<u8>, Vec<u32>) {
        let mut out = Vec::with_capacity(data.len());
        let mut start = 0usize;
        for &end in &ends {
            let end = (end as usize).min(data.len());
            let item = data.get(start..end).unwrap_or_default();
            out.extend(item.iter().map(u8::to_ascii_uppercase));
            start = end;
        }
        (out, ends)
    }
}

#[cfg(target_arch = "wasm32")]
export!(Upper);
