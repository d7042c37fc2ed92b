//! The benchmark data of `WORKLOADS.md`, generated exactly as specified so that figures and
//! outputs compare across engines on identical input: clickstream events as headerless CSV lines
//! `event_time_ms,user_id,event_type,amount`, split into files `part-00000.csv …`.
//!
//! The project carries this generator (and small samples made with it) so that nothing needs
//! `../shared` at run time.

pub mod slow_compile;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Event time of event 0, ms since the Unix epoch.
pub const BASE_TIME_MS: i64 = 1_700_000_000_000;
/// Users are Zipf(s = 1) over this many ranks.
pub const USER_RANKS: usize = 10_000;

/// The splitmix64 stream the specification uses (all arithmetic mod 2^64).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A stream starting at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// What a user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// 70 % of events.
    View,
    /// 25 % of events.
    Click,
    /// 5 % of events; the only ones with an amount.
    Purchase,
}

impl EventType {
    /// The name written in the CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Click => "click",
            EventType::Purchase => "purchase",
        }
    }
}

/// One clickstream event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Event time, ms since the Unix epoch (up to 5 s earlier than its position for late events).
    pub event_time_ms: i64,
    /// The user, `(rank · 7919) mod 10 000`.
    pub user_id: u32,
    /// What happened.
    pub event_type: EventType,
    /// Purchase amount in cents (100 … 50 000); 0 for other events.
    pub amount_cents: i64,
}

impl Event {
    /// Append the CSV line (with its newline) to `out`.
    pub fn write_csv(&self, out: &mut Vec<u8>) {
        let amount = if self.event_type == EventType::Purchase {
            format!("{}.{:02}", self.amount_cents / 100, self.amount_cents % 100)
        } else {
            "0".to_string()
        };
        // Writing to a Vec cannot fail.
        let _ = writeln!(
            out,
            "{},{},{},{}",
            self.event_time_ms,
            self.user_id,
            self.event_type.as_str(),
            amount
        );
    }
}

/// The events of the specification, in order.
#[derive(Debug, Clone)]
pub struct Clickstream {
    rng: SplitMix64,
    /// Cumulative Zipf weights: `cumulative[r - 1] = w_1 + … + w_r`, `w_r = ⌊10^9 / r⌋`.
    cumulative: Vec<u64>,
    ms_per_event: i64,
    index: u64,
}

impl Clickstream {
    /// The stream for `seed`, with `ms_per_event` of event time per event (default 1).
    pub fn new(seed: u64, ms_per_event: i64) -> Self {
        let mut total = 0u64;
        let cumulative = (1..=USER_RANKS as u64)
            .map(|r| {
                total += 1_000_000_000 / r;
                total
            })
            .collect();
        Self {
            rng: SplitMix64::new(seed),
            cumulative,
            ms_per_event,
            index: 0,
        }
    }
}

impl Iterator for Clickstream {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let i = self.index;
        self.index += 1;
        let a = self.rng.next_u64();
        let t = (a & 0xFFFF) % 100;
        let event_type = match t {
            0..70 => EventType::View,
            70..95 => EventType::Click,
            _ => EventType::Purchase,
        };
        let late = ((a >> 16) & 0xFF) < 51;
        let jitter = if late {
            ((a >> 24) & 0xFFFF_FFFF) % 5001
        } else {
            0
        };
        let b = self.rng.next_u64();
        let total = *self.cumulative.last().unwrap_or(&1);
        let x = b % total;
        let rank = self.cumulative.partition_point(|&c| c <= x) as u64 + 1;
        let user_id = ((rank * 7919) % USER_RANKS as u64) as u32;
        let amount_cents = if event_type == EventType::Purchase {
            let c = self.rng.next_u64();
            100 + (c % 49_901) as i64
        } else {
            0
        };
        let event_time_ms = BASE_TIME_MS + i as i64 * self.ms_per_event - jitter as i64;
        Some(Event {
            event_time_ms,
            user_id,
            event_type,
            amount_cents,
        })
    }
}

/// Write `events` events of `seed` into `files` files `part-00000.csv …` in `dir`: file `i`
/// holds events `[i·⌊N/K⌋, (i+1)·⌊N/K⌋)`, the last one the remainder. Each file is written to a
/// temporary name and renamed, so a watcher never sees half a file. Returns the paths.
pub fn write_files(
    dir: &Path,
    events: u64,
    files: u64,
    seed: u64,
    ms_per_event: i64,
) -> std::io::Result<Vec<PathBuf>> {
    if files == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the number of files must be at least 1",
        ));
    }
    std::fs::create_dir_all(dir)?;
    let per_file = events / files;
    let mut stream = Clickstream::new(seed, ms_per_event);
    let mut paths = Vec::new();
    let mut buffer = Vec::new();
    for f in 0..files {
        let count = if f + 1 == files {
            events - per_file * (files - 1)
        } else {
            per_file
        };
        buffer.clear();
        for event in stream.by_ref().take(count as usize) {
            event.write_csv(&mut buffer);
        }
        let path = dir.join(format!("part-{f:05}.csv"));
        let tmp = dir.join(format!(".part-{f:05}.csv.tmp"));
        std::fs::write(&tmp, &buffer)?;
        std::fs::rename(&tmp, &path)?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first lines for seed 42, computed by an independent Python implementation of the
    /// specification (see the commit that added this test).
    const FIRST_LINES: &str = include_str!("seed42-first20.csv");

    #[test]
    fn matches_an_independent_implementation() {
        let mut out = Vec::new();
        for event in Clickstream::new(42, 1).take(20) {
            event.write_csv(&mut out);
        }
        assert_eq!(String::from_utf8(out).unwrap(), FIRST_LINES);
    }

    #[test]
    fn proportions_follow_the_specification() {
        let events: Vec<Event> = Clickstream::new(42, 1).take(100_000).collect();
        let share =
            |t| events.iter().filter(|e| e.event_type == t).count() as f64 / events.len() as f64;
        assert!((share(EventType::View) - 0.70).abs() < 0.01);
        assert!((share(EventType::Click) - 0.25).abs() < 0.01);
        assert!((share(EventType::Purchase) - 0.05).abs() < 0.005);
        let late = events
            .iter()
            .enumerate()
            .filter(|(i, e)| e.event_time_ms < BASE_TIME_MS + *i as i64)
            .count();
        assert!(
            (late as f64 / events.len() as f64 - 0.2).abs() < 0.01,
            "{late} late"
        );
        assert!(events.iter().all(|e| (0..10_000).contains(&e.user_id)));
        assert!(
            events
                .iter()
                .filter(|e| e.event_type == EventType::Purchase)
                .all(|e| (100..=50_000).contains(&e.amount_cents))
        );
    }

    #[test]
    fn files_split_as_specified() {
        let dir = std::env::temp_dir().join(format!("sluice-gen-test-{}", std::process::id()));
        let paths = write_files(&dir, 103, 4, 42, 1).unwrap();
        let counts: Vec<usize> = paths
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
            .collect();
        assert_eq!(counts, [25, 25, 25, 28]);
        assert_eq!(paths[3].file_name().unwrap(), "part-00003.csv");
        let all: String = paths
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let mut whole = Vec::new();
        for event in Clickstream::new(42, 1).take(103) {
            event.write_csv(&mut whole);
        }
        assert_eq!(all.as_bytes(), whole.as_slice());
        assert!(write_files(&dir, 10, 0, 42, 1).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
