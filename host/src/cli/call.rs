//! `host call UDF.wasm#function`: run one function on records from stdin or a file.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sluice_host::batch::{Batch, Column};
use sluice_host::udf::{CallContext, Role, UdfFunction, UdfRuntime, UpdateInput};

use super::records::{self, Format, Record};

/// Arguments of `host call`.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// `PATH/TO/COMPONENT.wasm#function`.
    pub target: String,
    /// Read records from this file instead of stdin.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// How records are written on input and output.
    #[arg(long, value_enum, default_value = "lines")]
    pub format: Format,
    /// Records per call (the host calls a guest once per partition).
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub partition_size: usize,
    /// Updaters: old state per key, as KEY<TAB>STATE lines.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Event time of records that carry none, in ms since the epoch [default: now].
    #[arg(long, value_name = "MS")]
    pub event_time: Option<i64>,
}

pub fn run(args: &CallArgs, runtime: &UdfRuntime) -> anyhow::Result<()> {
    let Some((path, function)) = args.target.rsplit_once('#') else {
        bail!(
            "`{}` names no function; write PATH/TO/COMPONENT.wasm#function",
            args.target
        );
    };
    if args.partition_size == 0 {
        bail!("--partition-size must be at least 1");
    }
    let component = runtime
        .load_file(Path::new(path))
        .map_err(super::check::with_hint)?;
    let function = component.function(function)?;
    let mut input = Vec::new();
    match &args.input {
        Some(file) => {
            input =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut input)
                .context("reading stdin")?;
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let records = records::parse(&input, args.format, args.event_time.unwrap_or(now))?;
    let mut stdout = std::io::stdout().lock();
    match component.role() {
        Role::Transform => transform(&function, &records, args, &mut stdout),
        Role::Reducer => reduce(&function, &records, args, &mut stdout),
        Role::Updater => update(&function, &records, args, &mut stdout),
        Role::Sink => sink(&function, &records, args),
    }
}

fn context(partition: usize) -> CallContext {
    CallContext {
        partition: partition as u32,
        ..CallContext::adhoc()
    }
}

fn transform(
    function: &UdfFunction,
    records: &[Record],
    args: &CallArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    for (p, chunk) in records.chunks(args.partition_size).enumerate() {
        let output = function.transform(&context(p), &records::to_batch(chunk)?)?;
        for record in output.records() {
            records::print(out, record, args.format)?;
        }
    }
    Ok(())
}

/// A key and its values, in input order.
type Group<'a> = (Vec<u8>, Vec<&'a [u8]>);

/// Group records by key, in order of first appearance.
fn group(records: &[Record]) -> anyhow::Result<Vec<Group<'_>>> {
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut groups: Vec<Group<'_>> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let Some(key) = &r.key else {
            bail!(
                "input record {}: this function groups by key; give KEY<TAB>VALUE lines with --format kv",
                i + 1
            );
        };
        let g = *index.entry(key).or_insert_with(|| {
            groups.push((key.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(&r.value);
    }
    Ok(groups)
}

/// Cut groups into partitions of about `size` values each.
fn partitions<T>(groups: &[(Vec<u8>, Vec<T>)], size: usize) -> Vec<&[(Vec<u8>, Vec<T>)]> {
    let mut out = Vec::new();
    let (mut start, mut count) = (0, 0);
    for (i, (_, values)) in groups.iter().enumerate() {
        count += values.len().max(1);
        if count >= size {
            out.push(&groups[start..=i]);
            (start, count) = (i + 1, 0);
        }
    }
    if start < groups.len() {
        out.push(&groups[start..]);
    }
    out
}

fn values_and_ends(groups: &[Group<'_>]) -> (Column, Vec<u32>) {
    let mut values = Column::new();
    let mut ends = Vec::with_capacity(groups.len());
    for (_, vs) in groups {
        for v in vs {
            values.push(v);
        }
        ends.push(values.len() as u32);
    }
    (values, ends)
}

fn reduce(
    function: &UdfFunction,
    records: &[Record],
    args: &CallArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let groups = group(records)?;
    for (p, part) in partitions(&groups, args.partition_size)
        .into_iter()
        .enumerate()
    {
        let (values, ends) = values_and_ends(part);
        let reduced = function.reduce(&context(p), &values, &ends)?;
        for ((key, _), value) in part.iter().zip(reduced.iter()) {
            let record = sluice_host::batch::RecordRef {
                key: Some(key),
                value,
                event_time: 0,
            };
            records::print(out, record, args.format)?;
        }
    }
    Ok(())
}

fn update(
    function: &UdfFunction,
    records: &[Record],
    args: &CallArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut old: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    if let Some(file) = &args.state {
        let text =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        for r in records::parse(&text, Format::Kv, 0)
            .with_context(|| format!("in the state file {}", file.display()))?
        {
            old.insert(r.key.unwrap_or_default(), r.value);
        }
    }
    let mut groups = group(records)?;
    // Keys with old state but no new values get a call too, as in Spark.
    for key in old.keys() {
        if !groups.iter().any(|(k, _)| k == key) {
            groups.push((key.clone(), Vec::new()));
        }
    }
    let batch_time = args.event_time.unwrap_or(0);
    for (p, part) in partitions(&groups, args.partition_size)
        .into_iter()
        .enumerate()
    {
        let (values, group_ends) = values_and_ends(part);
        let mut states = Column::new();
        let mut has_state = Vec::new();
        for (key, _) in part {
            let state = old.get(key);
            states.push(state.map_or(&b""[..], Vec::as_slice));
            has_state.push(state.is_some());
        }
        let input = UpdateInput {
            keys: Column::from_items(part.iter().map(|(k, _)| k)),
            values,
            group_ends,
            states,
            has_state,
            timing_out: vec![false; part.len()],
            batch_time,
        };
        let output = function.update(&context(p), &input)?;
        for (g, (key, _)) in part.iter().enumerate() {
            out.write_all(if output.has_state[g] {
                b"state\t"
            } else {
                b"removed\t"
            })?;
            out.write_all(key)?;
            if output.has_state[g] {
                out.write_all(b"\t")?;
                out.write_all(output.states.get(g).unwrap_or_default())?;
            }
            out.write_all(b"\n")?;
        }
        for record in output.emitted.records() {
            out.write_all(b"emit\t")?;
            records::print(out, record, args.format)?;
        }
    }
    Ok(())
}

fn sink(function: &UdfFunction, records: &[Record], args: &CallArgs) -> anyhow::Result<()> {
    let mut partitions = 0;
    for (p, chunk) in records.chunks(args.partition_size).enumerate() {
        let batch: Batch = records::to_batch(chunk)?;
        function.sink(&context(p), &batch)?;
        partitions += 1;
    }
    eprintln!(
        "{}: consumed {} records in {partitions} partition(s)",
        function.spec(),
        records.len()
    );
    Ok(())
}
