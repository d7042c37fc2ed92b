//! The smallest Sluice UDF: copy this folder to `udfs/<your_name>`, rename the package in
//! `Cargo.toml` to `udf-<your_name>`, write your functions, and build with
//! `cargo xtask udfs <your_name>`; the component lands in `dist/udfs/<your_name>.wasm`.

use sluice_guest::export_transforms;

/// `name -> "hello, name"`.
pub fn greet(name: &str) -> String {
    format!("hello, {name}")
}

export_transforms! {
    map greet,
}
