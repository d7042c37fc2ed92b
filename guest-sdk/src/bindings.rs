//! The raw wit-bindgen bindings of the four worlds in `wit/udf.wit`.
//!
//! Most authors never touch these: the `export_*!` macros of this crate generate the glue. They
//! are public for authors who want to exchange columns directly (see [`crate::transform::Raw`]).
//! The shared interfaces (`types`, `logging`, `metrics`) are generated once, in [`transform`], and
//! reused by the other worlds so that one `Batch` type serves every role.
#![allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]

pub mod transform {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sluice:udf/transform@0.2.0",
        pub_export_macro: true,
        export_macro_name: "__export_transform_world",
        default_bindings_module: "::sluice_guest::bindings::transform",
    });
}

pub mod reducer {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sluice:udf/reducer@0.2.0",
        pub_export_macro: true,
        export_macro_name: "__export_reducer_world",
        default_bindings_module: "::sluice_guest::bindings::reducer",
        with: {
            "sluice:udf/types@0.2.0": crate::bindings::transform::sluice::udf::types,
            "sluice:udf/logging@0.2.0": crate::bindings::transform::sluice::udf::logging,
            "sluice:udf/metrics@0.2.0": crate::bindings::transform::sluice::udf::metrics,
        },
    });
}

pub mod updater {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sluice:udf/updater@0.2.0",
        pub_export_macro: true,
        export_macro_name: "__export_updater_world",
        default_bindings_module: "::sluice_guest::bindings::updater",
        with: {
            "sluice:udf/types@0.2.0": crate::bindings::transform::sluice::udf::types,
            "sluice:udf/logging@0.2.0": crate::bindings::transform::sluice::udf::logging,
            "sluice:udf/metrics@0.2.0": crate::bindings::transform::sluice::udf::metrics,
        },
    });
}

pub mod sink {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sluice:udf/sink@0.2.0",
        pub_export_macro: true,
        export_macro_name: "__export_sink_world",
        default_bindings_module: "::sluice_guest::bindings::sink",
        with: {
            "sluice:udf/types@0.2.0": crate::bindings::transform::sluice::udf::types,
            "sluice:udf/logging@0.2.0": crate::bindings::transform::sluice::udf::logging,
            "sluice:udf/metrics@0.2.0": crate::bindings::transform::sluice::udf::metrics,
        },
    });
}

pub use transform::sluice::udf::types::{Batch, Column, FunctionInfo, FunctionKind, UdfError};
