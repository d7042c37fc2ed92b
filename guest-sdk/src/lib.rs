//! Write Sluice UDFs in Rust.
//!
//! A UDF is a plain, typed Rust function; one `export_*!` line per component turns several of
//! them into a WebAssembly component of one role (see `wit/udf.wit`):
//!
//! ```
//! use sluice_guest::export_transforms;
//!
//! fn split(line: &str) -> Vec<&str> {
//!     line.split_whitespace().collect()
//! }
//!
//! fn pair(word: &str) -> (&str, i64) {
//!     (word, 1)
//! }
//!
//! export_transforms! {
//!     flat_map split,
//!     map pair,
//! }
//! ```
//!
//! The types of a function's parameters and results pick the codec of keys and values (see
//! [`codec`]); a `(K, V)` tuple is a keyed record. The kinds per role are the runner functions in
//! [`transform`], [`reduce`], [`update`] and [`sink`]. Build with `cargo xtask udfs` (see the
//! README): the crate compiles for `wasm32-unknown-unknown` and is wrapped into a component that
//! imports nothing but the host's logging and metrics.

pub mod alloc;
pub mod bindings;
pub mod codec;
pub mod log;
pub mod records;
pub mod reduce;
pub mod sink;
pub mod transform;
pub mod update;

pub use bindings::{Batch, Column, FunctionInfo, FunctionKind, UdfError};
pub use codec::{Bincode, CodecError, Decode, Encode, Json};
pub use records::{
    ColumnBuilder, ColumnRef, Emit, FromRecord, Input, Output, RecordRef, Timed, error,
};
pub use sink::BatchInfo;
pub use update::State;

/// Every guest built with the SDK allocates through size-class free lists (see [`alloc`]);
/// disable the default `allocator` feature to keep Rust's default allocator.
#[cfg(all(
    target_arch = "wasm32",
    not(target_feature = "atomics"),
    feature = "allocator"
))]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses<std::alloc::System> =
    alloc::SizeClasses::new(std::alloc::System);

/// The Sluice UDF ABI version this SDK builds against; the host refuses components whose ABI
/// version it does not speak. Bumped whenever the meaning of the exchanged columns changes (the
/// shapes are versioned by the WIT package, `sluice:udf@0.2.0`, which the host checks first).
pub const ABI_VERSION: u32 = 1;

#[doc(hidden)]
pub fn __function_info(name: &str, kind: FunctionKind, has_inverse: bool) -> FunctionInfo {
    FunctionInfo {
        name: name.to_string(),
        kind,
        has_inverse,
    }
}

/// The [`FunctionKind`] of a runner named as an `export_*!` entry writes it (`flat_map`).
#[doc(hidden)]
#[macro_export]
macro_rules! __function_kind {
    (map) => {
        $crate::FunctionKind::Map
    };
    (try_map) => {
        $crate::FunctionKind::TryMap
    };
    (flat_map) => {
        $crate::FunctionKind::FlatMap
    };
    (try_flat_map) => {
        $crate::FunctionKind::TryFlatMap
    };
    (filter) => {
        $crate::FunctionKind::Filter
    };
    (try_filter) => {
        $crate::FunctionKind::TryFilter
    };
    (map_partitions) => {
        $crate::FunctionKind::MapPartitions
    };
    (raw) => {
        $crate::FunctionKind::Raw
    };
    (update) => {
        $crate::FunctionKind::Update
    };
    (update_with_key) => {
        $crate::FunctionKind::UpdateWithKey
    };
    (map_with_state) => {
        $crate::FunctionKind::MapWithState
    };
    (foreach) => {
        $crate::FunctionKind::Foreach
    };
    (try_foreach) => {
        $crate::FunctionKind::TryForeach
    };
    (foreach_batch) => {
        $crate::FunctionKind::ForeachBatch
    };
}

#[doc(hidden)]
pub fn __unknown_function(function: u32) -> UdfError {
    error(
        format!(
            "this component has no function number {function}; the host must call `functions` first"
        ),
        None,
    )
}

/// Export transform functions (map, flat_map, filter, map_partitions, transform) as a component
/// of the `transform` world. Each entry is `KIND function_name`, where KIND is one of `map`,
/// `try_map`, `flat_map`, `try_flat_map`, `filter`, `try_filter`, `map_partitions` or `raw`
/// (see [`transform`]). Jobs call them as `component#function_name`.
#[macro_export]
macro_rules! export_transforms {
    ($($kind:ident $name:ident),+ $(,)?) => {
        #[doc(hidden)]
        pub struct __SluiceTransforms;

        impl $crate::bindings::transform::Guest for __SluiceTransforms {
            fn abi_version() -> u32 {
                $crate::ABI_VERSION
            }
            fn functions() -> ::std::vec::Vec<$crate::FunctionInfo> {
                ::std::vec![$($crate::__function_info(stringify!($name), $crate::__function_kind!($kind), false)),+]
            }
        }

        impl $crate::bindings::transform::exports::sluice::udf::transforms::Guest for __SluiceTransforms {
            fn transform(function: u32, input: $crate::Batch) -> ::std::result::Result<$crate::Batch, $crate::UdfError> {
                $crate::log::install_panic_hook();
                let mut index = 0u32;
                $(
                    if function == index {
                        return $crate::__transform_call!($kind, $name, input);
                    }
                    index += 1;
                )+
                let _ = index;
                Err($crate::__unknown_function(function))
            }
        }

        // The export glue exists only in the component: natively the crate is a plain library
        // (unit tests, native twins in benchmarks).
        #[cfg(target_arch = "wasm32")]
        mod __sluice_exports {
            use super::__SluiceTransforms;
            $crate::bindings::transform::__export_transform_world!(__SluiceTransforms with_types_in $crate::bindings::transform);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __transform_call {
    (raw, $name:ident, $input:ident) => {
        $crate::transform::raw($input, $name)
    };
    ($kind:ident, $name:ident, $input:ident) => {
        $crate::transform::$kind($crate::Input::new(&$input)?, $name)
    };
}

/// Export reducers `fn(V, V) -> V` as a component of the `reducer` world. Each entry is
/// `function_name` or `function_name(inverse = inverse_name)`; the inverse `fn(V, V) -> V` takes
/// its second argument out of its first, so a sliding window can be updated incrementally.
#[macro_export]
macro_rules! export_reducers {
    ($($name:ident $( (inverse = $inverse:ident) )?),+ $(,)?) => {
        #[doc(hidden)]
        pub struct __SluiceReducers;

        impl $crate::bindings::reducer::Guest for __SluiceReducers {
            fn abi_version() -> u32 {
                $crate::ABI_VERSION
            }
            fn functions() -> ::std::vec::Vec<$crate::FunctionInfo> {
                ::std::vec![$($crate::__function_info(
                    stringify!($name),
                    $crate::FunctionKind::Reduce,
                    $crate::__has_inverse!($($inverse)?),
                )),+]
            }
        }

        impl $crate::bindings::reducer::exports::sluice::udf::reducers::Guest for __SluiceReducers {
            fn reduce(
                function: u32,
                values: $crate::Column,
                group_ends: ::std::vec::Vec<u32>,
            ) -> ::std::result::Result<$crate::Column, $crate::UdfError> {
                $crate::log::install_panic_hook();
                let mut index = 0u32;
                $(
                    if function == index {
                        return $crate::reduce::reduce(&values, &group_ends, $name);
                    }
                    index += 1;
                )+
                let _ = index;
                Err($crate::__unknown_function(function))
            }

            fn invert(
                function: u32,
                left: $crate::Column,
                right: $crate::Column,
            ) -> ::std::result::Result<$crate::Column, $crate::UdfError> {
                $crate::log::install_panic_hook();
                let mut index = 0u32;
                $(
                    if function == index {
                        return $crate::__invert_call!($name, left, right $(, $inverse)?);
                    }
                    index += 1;
                )+
                let _ = index;
                Err($crate::__unknown_function(function))
            }
        }

        // The export glue exists only in the component: natively the crate is a plain library
        // (unit tests, native twins in benchmarks).
        #[cfg(target_arch = "wasm32")]
        mod __sluice_exports {
            use super::__SluiceReducers;
            $crate::bindings::reducer::__export_reducer_world!(__SluiceReducers with_types_in $crate::bindings::reducer);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __has_inverse {
    () => {
        false
    };
    ($inverse:ident) => {
        true
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __invert_call {
    ($name:ident, $left:ident, $right:ident) => {
        Err($crate::reduce::no_inverse(stringify!($name)))
    };
    ($name:ident, $left:ident, $right:ident, $inverse:ident) => {
        $crate::reduce::invert(&$left, &$right, $inverse)
    };
}

/// Export state updaters as a component of the `updater` world. Each entry is `KIND
/// function_name`, where KIND is `update` (`fn(&[V], Option<S>) -> Option<S>`, Spark's
/// updateStateByKey), `update_with_key` (the same with the key first) or `map_with_state`
/// (`fn(K, &[V], &mut State<S>) -> I`, Spark's mapWithState).
#[macro_export]
macro_rules! export_updaters {
    ($($kind:ident $name:ident),+ $(,)?) => {
        #[doc(hidden)]
        pub struct __SluiceUpdaters;

        impl $crate::bindings::updater::Guest for __SluiceUpdaters {
            fn abi_version() -> u32 {
                $crate::ABI_VERSION
            }
            fn functions() -> ::std::vec::Vec<$crate::FunctionInfo> {
                ::std::vec![$($crate::__function_info(stringify!($name), $crate::__function_kind!($kind), false)),+]
            }
        }

        impl $crate::bindings::updater::exports::sluice::udf::updaters::Guest for __SluiceUpdaters {
            fn update(
                function: u32,
                input: $crate::bindings::updater::exports::sluice::udf::updaters::UpdateInput,
            ) -> ::std::result::Result<
                $crate::bindings::updater::exports::sluice::udf::updaters::UpdateOutput,
                $crate::UdfError,
            > {
                $crate::log::install_panic_hook();
                let mut index = 0u32;
                $(
                    if function == index {
                        return $crate::update::$kind(&input, $name);
                    }
                    index += 1;
                )+
                let _ = index;
                Err($crate::__unknown_function(function))
            }
        }

        // The export glue exists only in the component: natively the crate is a plain library
        // (unit tests, native twins in benchmarks).
        #[cfg(target_arch = "wasm32")]
        mod __sluice_exports {
            use super::__SluiceUpdaters;
            $crate::bindings::updater::__export_updater_world!(__SluiceUpdaters with_types_in $crate::bindings::updater);
        }
    };
}

/// Export foreach-batch sinks as a component of the `sink` world. Each entry is `KIND
/// function_name`, where KIND is `foreach` (`fn(A)` per record), `try_foreach` (`fn(A) ->
/// Result<(), E>`) or `foreach_batch` (`fn(BatchInfo, Input) -> Result<(), E>`).
#[macro_export]
macro_rules! export_sinks {
    ($($kind:ident $name:ident),+ $(,)?) => {
        #[doc(hidden)]
        pub struct __SluiceSinks;

        impl $crate::bindings::sink::Guest for __SluiceSinks {
            fn abi_version() -> u32 {
                $crate::ABI_VERSION
            }
            fn functions() -> ::std::vec::Vec<$crate::FunctionInfo> {
                ::std::vec![$($crate::__function_info(stringify!($name), $crate::__function_kind!($kind), false)),+]
            }
        }

        impl $crate::bindings::sink::exports::sluice::udf::sinks::Guest for __SluiceSinks {
            fn write(
                function: u32,
                batch_id: u64,
                batch_time: i64,
                partition: u32,
                input: $crate::Batch,
            ) -> ::std::result::Result<(), $crate::UdfError> {
                $crate::log::install_panic_hook();
                let info = $crate::BatchInfo { batch_id, batch_time, partition };
                let mut index = 0u32;
                $(
                    if function == index {
                        return $crate::sink::$kind(info, $crate::Input::new(&input)?, $name);
                    }
                    index += 1;
                )+
                let _ = index;
                Err($crate::__unknown_function(function))
            }
        }

        // The export glue exists only in the component: natively the crate is a plain library
        // (unit tests, native twins in benchmarks).
        #[cfg(target_arch = "wasm32")]
        mod __sluice_exports {
            use super::__SluiceSinks;
            $crate::bindings::sink::__export_sink_world!(__SluiceSinks with_types_in $crate::bindings::sink);
        }
    };
}
