//! A component crafted to compile slowly: the input of the compile-bomb tests
//! (`tests/tests/udf_compile.rs`) and of tenant a's noise in `host bench noisy`.

/// A component whose one function nests `depth` loops, each adding the parameter to one of
/// `locals` locals, read from the next. 500 locals × 2000 loops take about half a minute to
/// compile with Cranelift.
pub fn nested_loops(locals: usize, depth: usize) -> Result<Vec<u8>, wat::Error> {
    let locals = locals.max(1);
    let mut body = String::new();
    for k in 0..depth {
        let (to, from) = (1 + k % locals, 1 + (k + 1) % locals);
        body.push_str(&format!(
            "loop local.get {from} local.get 0 i32.add local.set {to} "
        ));
    }
    for _ in 0..depth {
        body.push_str("local.get 0 br_if 0 end ");
    }
    let text = format!(
        "(component (core module (func (param i32) (result i32) (local {}) {body} local.get 1)))",
        "i32 ".repeat(locals)
    );
    wat::parse_str(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_small_one_parses() {
        let bytes = super::nested_loops(3, 4).expect("valid");
        assert_eq!(&bytes[..4], b"\0asm");
    }
}
