//! What crossing the Wasm boundary costs: the same function, `udf_text::uppercase` on 1 M text
//! records of 100 bytes, compiled natively and run through the `text#uppercase` component, one
//! call per record and once per partition of 64, 1 k and 16 k records. Two native baselines:
//! `native_columnar` reads and writes the same columns the host uses (the strict one), and
//! `native_boxed` keeps each record as its own heap object (a `Vec<u8>` in, a `String` out), as
//! engines that hold records as objects do. `bench#echo` (columns in and out, untouched) and
//! `bench#copy` (every value through the SDK, unchanged) split the cost into boundary and SDK.
//! Also: the fixed cost of one call and of one instantiation.
//!
//! `paired` times native and Wasm alternately, round by round, and reports the median ratio (the
//! figure the README quotes), also for a runtime without the CPU deadline (`--udf-timeout off`).
//!
//! Run: `cargo bench -p sluice-tests --bench udf_boundary` (figures in the README).
//! `SLUICE_BENCH_OTHER_TEXT=other/text.wasm` also runs another build of `text#uppercase`, so
//! a change to the SDK is measured before/after in one run.

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluice_host::batch::{Batch, Column};
use sluice_host::udf::{CallContext, RuntimeConfig, UdfFunction};
use sluice_tests::{load, runtime_with, test_guest, udf};

const RECORDS: usize = 1_000_000;
const RECORD_BYTES: usize = 100;
/// The per-record path is ~10× slower; measure it on a tenth of the data (same units: rec/s).
const PER_RECORD_RECORDS: usize = 100_000;

/// Deterministic text records of 100 bytes: lowercase words separated by spaces.
fn records(n: usize) -> Vec<Vec<u8>> {
    let mut state = 42u64;
    (0..n)
        .map(|_| {
            (0..RECORD_BYTES)
                .map(|i| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    if i % 8 == 7 {
                        b' '
                    } else {
                        b'a' + ((state >> 33) % 26) as u8
                    }
                })
                .collect()
        })
        .collect()
}

fn batches(records: &[Vec<u8>], size: usize) -> Vec<Batch> {
    records
        .chunks(size)
        .map(|chunk| {
            let mut batch = Batch::empty(false);
            for r in chunk {
                batch.push(None, r, 0);
            }
            batch
        })
        .collect()
}

/// `text#uppercase` compiled natively, over the same columns.
fn native_columnar(input: &Batch) -> usize {
    let mut values = Column::with_capacity(input.len(), input.values.data.len());
    for item in input.values.iter() {
        values.push(udf_text::uppercase(std::str::from_utf8(item).expect("UTF-8")).as_bytes());
    }
    let out = Batch {
        keys: None,
        values,
        event_times: input.event_times.clone(),
    };
    out.len()
}

/// `text#uppercase` compiled natively, over records held one heap object each.
fn native_boxed(input: &[Vec<u8>]) -> usize {
    let out: Vec<String> = input
        .iter()
        .map(|r| udf_text::uppercase(std::str::from_utf8(r).expect("UTF-8")))
        .collect();
    out.len()
}

/// Every partition through the transform `f`; how many records came back.
fn transform_all(f: &UdfFunction, ctx: &CallContext, parts: &[Batch]) -> usize {
    parts
        .iter()
        .map(|p| f.transform(ctx, p).expect("call").len())
        .sum()
}

fn boundary(c: &mut Criterion) {
    let runtime = runtime_with(RuntimeConfig::default());
    let text = load(&runtime, &udf("text"));
    let upper = text.function("uppercase").expect("text#uppercase");
    let ctx = CallContext::adhoc();
    let data = records(RECORDS);

    let mut group = c.benchmark_group("uppercase_1M_x_100B");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(RECORDS as u64));

    let parts = batches(&data, 1024);
    group.bench_function("native_columnar", |b| {
        b.iter(|| parts.iter().map(native_columnar).sum::<usize>())
    });
    group.bench_function("native_boxed", |b| {
        b.iter(|| data.chunks(1024).map(native_boxed).sum::<usize>())
    });
    let bench = load(&runtime, &test_guest("bench"));
    for name in ["echo", "copy"] {
        let f = bench.function(name).expect("bench guest function");
        group.bench_function(format!("wasm_{name}_1024"), |b| {
            b.iter(|| transform_all(&f, &ctx, &parts))
        });
    }
    for size in [64usize, 1024, 16 * 1024] {
        let parts = batches(&data, size);
        group.bench_function(format!("wasm_batch_{size}"), |b| {
            b.iter(|| transform_all(&upper, &ctx, &parts))
        });
    }
    // A/B of two builds in one run (the machine is too noisy to compare separate runs):
    // SLUICE_BENCH_OTHER_TEXT=/path/to/other/text.wasm adds `wasm_other_batch_1024`.
    if let Some(other) = std::env::var_os("SLUICE_BENCH_OTHER_TEXT") {
        let other = load(&runtime, std::path::Path::new(&other));
        let other_upper = other.function("uppercase").expect("other text#uppercase");
        let parts = batches(&data, 1024);
        group.bench_function("wasm_other_batch_1024", |b| {
            b.iter(|| transform_all(&other_upper, &ctx, &parts))
        });
    }
    group.throughput(Throughput::Elements(PER_RECORD_RECORDS as u64));
    let singles = batches(&data[..PER_RECORD_RECORDS], 1);
    group.bench_function("wasm_per_record", |b| {
        b.iter(|| transform_all(&upper, &ctx, &singles))
    });
    group.finish();

    let mut fixed = c.benchmark_group("fixed_costs");
    fixed
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let empty = Batch::empty(false);
    fixed.bench_function("call_empty_batch", |b| {
        b.iter(|| upper.transform(&ctx, &empty).expect("call"))
    });
    fixed.bench_function("instantiate", |b| {
        b.iter_batched(
            || (),
            |_| text.instantiate_probe().expect("instantiate"),
            BatchSize::SmallInput,
        )
    });
    fixed.finish();
}

mod encodings {
    wasmtime::component::bindgen!({ path: "wit", world: "encodings" });
}

/// The encoding choice, kept as a measurement: the same ASCII upper case (raw bindings, no SDK)
/// with one call per record, a `list<list<u8>>` per batch, and one buffer plus end offsets per
/// batch (what `wit/udf.wit` uses).
fn encoding(c: &mut Criterion) {
    use wasmtime::component::{Component, Linker};
    use wasmtime::{Config, Engine, Store};

    let mut config = Config::new();
    config.concurrency_support(false);
    let engine = Engine::new(&config).expect("engine");
    let component =
        Component::from_file(&engine, test_guest("encodings")).expect("encodings component");
    let linker = Linker::<()>::new(&engine);
    let mut store = Store::new(&engine, ());
    let guest =
        encodings::Encodings::instantiate(&mut store, &component, &linker).expect("instantiate");
    let data = records(RECORDS);

    let mut group = c.benchmark_group("encoding_1M_x_100B");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(RECORDS as u64));
    let columns: Vec<(Vec<u8>, Vec<u32>)> = batches(&data, 1024)
        .into_iter()
        .map(|b| (b.values.data, b.values.ends))
        .collect();
    group.bench_function("native_column_1024", |b| {
        b.iter(|| {
            columns
                .iter()
                .map(|(data, ends)| {
                    let out: Vec<u8> = data.iter().map(u8::to_ascii_uppercase).collect();
                    (out, ends.clone()).1.len()
                })
                .sum::<usize>()
        })
    });
    group.bench_function("column_1024", |b| {
        b.iter(|| {
            columns
                .iter()
                .map(|(data, ends)| {
                    guest
                        .call_upper_column(&mut store, data, ends)
                        .expect("call")
                        .1
                        .len()
                })
                .sum::<usize>()
        })
    });
    let lists: Vec<Vec<Vec<u8>>> = data.chunks(1024).map(<[Vec<u8>]>::to_vec).collect();
    group.bench_function("list_of_lists_1024", |b| {
        b.iter(|| {
            lists
                .iter()
                .map(|l| guest.call_upper_lists(&mut store, l).expect("call").len())
                .sum::<usize>()
        })
    });
    group.throughput(Throughput::Elements(PER_RECORD_RECORDS as u64));
    group.bench_function("one_per_call", |b| {
        b.iter(|| {
            data[..PER_RECORD_RECORDS]
                .iter()
                .map(|r| guest.call_upper_one(&mut store, r).expect("call").len())
                .sum::<usize>()
        })
    });
    group.finish();
}

/// Rounds of a paired comparison: each round times both sides once, back to back.
const PAIRED_ROUNDS: usize = 21;

/// The median over rounds of `time(b) / time(a)`, with the lowest and highest round: both sides
/// run alternately in the same seconds, so the machine's drift (other tenants, frequency) hits
/// both alike. On this machine the throughput of one side moves ±30 % between criterion runs;
/// the paired ratio moves a few percent.
fn paired_ratio(mut a: impl FnMut() -> usize, mut b: impl FnMut() -> usize) -> (f64, f64, f64) {
    let time = |f: &mut dyn FnMut() -> usize| {
        let start = std::time::Instant::now();
        std::hint::black_box(f());
        start.elapsed().as_secs_f64()
    };
    // Warm both (instances, caches) before counting.
    time(&mut a);
    time(&mut b);
    let mut ratios: Vec<f64> = (0..PAIRED_ROUNDS)
        .map(|_| {
            let ta = time(&mut a);
            let tb = time(&mut b);
            ta / tb
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    (
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
    )
}

/// Throughput ratios measured in pairs (see [`paired_ratio`]); the ratio the README quotes.
/// Runs unless a filter is given that does not contain `paired`.
fn paired(_c: &mut Criterion) {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !f.contains("paired")) {
        return;
    }
    let runtime = runtime_with(RuntimeConfig::default());
    let upper = load(&runtime, &udf("text"))
        .function("uppercase")
        .expect("text#uppercase");
    let ctx = CallContext::adhoc();
    let parts = batches(&records(RECORDS), 1024);
    let native = || parts.iter().map(native_columnar).sum::<usize>();
    let wasm = || transform_all(&upper, &ctx, &parts);
    let report = |name: &str, (median, low, high): (f64, f64, f64)| {
        println!(
            "paired/{name}: {median:.3}× (lowest round {low:.3}×, highest {high:.3}×, {PAIRED_ROUNDS} rounds)"
        )
    };
    report(
        "wasm_batch_1024_vs_native_columnar",
        paired_ratio(native, wasm),
    );
    // The same component on a runtime without the CPU deadline (`host --udf-timeout off`):
    // what the epoch checks in every loop and function entry cost.
    let trusted = runtime_with(RuntimeConfig {
        interruptible: false,
        ..RuntimeConfig::default()
    });
    let trusted_upper = load(&trusted, &udf("text"))
        .function("uppercase")
        .expect("text#uppercase");
    let trusted_wasm = || transform_all(&trusted_upper, &ctx, &parts);
    report(
        "wasm_batch_1024_no_deadline_vs_native_columnar",
        paired_ratio(native, trusted_wasm),
    );
    report(
        "wasm_batch_1024_no_deadline_vs_with_deadline",
        paired_ratio(wasm, trusted_wasm),
    );
    if let Some(other) = std::env::var_os("SLUICE_BENCH_OTHER_TEXT") {
        let other = load(&runtime, std::path::Path::new(&other));
        let other_upper = other.function("uppercase").expect("other text#uppercase");
        let other = || transform_all(&other_upper, &ctx, &parts);
        report("wasm_batch_1024_vs_other_1024", paired_ratio(other, wasm));
    }
}

criterion_group!(benches, boundary, encoding, paired);
criterion_main!(benches);
