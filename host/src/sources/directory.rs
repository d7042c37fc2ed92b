//! Spark's `textFileStream`: watch a directory and read each new file exactly once, whole, into
//! one batch.
//!
//! Files that may still be written are not read: names starting with `.` or `_` and names
//! ending in `.tmp` or `._COPYING_` are ignored (write under such a name and rename into place,
//! as Spark expects), and a file is only taken once it has been left alone for a while: its last
//! change is at least 500 ms old and two listings in a row saw the same size and modification
//! time, or its last change is over 2 s old.
//!
//! With a rate budget (`max_rate`, backpressure) a batch takes whole files only, oldest first,
//! as many as fit in the budget (counted in lines, each file read once to count them), and
//! always at least one: a file with more lines than the budget goes alone in a batch. The
//! files beyond the budget wait for the next batch.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Source, SourceInput, SourceStatus};

/// Whether a directory source reads the files already present when the job starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// Read them (default).
    #[default]
    Earliest,
    /// Skip them: only files that appear later are read.
    Latest,
}

/// How old a file's last change must be before it is taken, once two listings agree on it.
const QUIET: Duration = Duration::from_millis(500);
/// How old a file's last change must be to be taken on its first sighting.
const SETTLED: Duration = Duration::from_secs(2);

/// A watched directory.
pub struct DirectorySource {
    name: String,
    path: PathBuf,
    max_files: Option<usize>,
    /// Unread files and what they looked like at the last listing.
    sightings: HashMap<PathBuf, (u64, SystemTime)>,
    /// Unread files ready to be read, oldest first.
    ready: Vec<PathBuf>,
    /// Files read (or skipped by `start = "latest"`): never read again.
    done: HashSet<PathBuf>,
    listing_failed: bool,
    /// The most records a batch takes (see [`Source::set_budget`]).
    budget: Option<usize>,
    /// Lines of ready files counted for the budget, until they are taken.
    lines: HashMap<PathBuf, usize>,
}

impl DirectorySource {
    /// Watch `path`; with `Start::Latest` the files there now are never read.
    pub fn new(name: &str, path: &Path, start: Start, max_files: Option<usize>) -> Self {
        let mut source = Self {
            name: name.to_string(),
            path: path.to_path_buf(),
            max_files,
            sightings: HashMap::new(),
            ready: Vec::new(),
            done: HashSet::new(),
            listing_failed: false,
            budget: None,
            lines: HashMap::new(),
        };
        if start == Start::Latest {
            for (file, _) in source.list() {
                source.done.insert(file);
            }
        }
        source
    }

    /// Never read these again: a checkpoint says earlier batches read them.
    pub fn restore(&mut self, files: &[String]) {
        self.done.extend(files.iter().map(PathBuf::from));
    }

    /// Regular files with names that are not hidden or temporary, with size and mtime.
    fn list(&mut self) -> Vec<(PathBuf, (u64, SystemTime))> {
        let entries = match std::fs::read_dir(&self.path) {
            Ok(entries) => {
                self.listing_failed = false;
                entries
            }
            Err(e) => {
                if !self.listing_failed {
                    tracing::warn!(source = %self.name, "cannot list {}: {e}; will retry", self.path.display());
                    self.listing_failed = true;
                }
                return Vec::new();
            }
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                !(name.starts_with('.')
                    || name.starts_with('_')
                    || name.ends_with(".tmp")
                    || name.ends_with("._COPYING_"))
            })
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                meta.is_file().then(|| {
                    (
                        e.path(),
                        (
                            meta.len(),
                            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        ),
                    )
                })
            })
            .collect()
    }

    /// List the directory and move settled files to `ready`.
    fn poll(&mut self) {
        let now = SystemTime::now();
        let mut newly_ready = Vec::new();
        let listed = self.list();
        for (file, look) in listed {
            if self.done.contains(&file) || self.ready.contains(&file) {
                continue;
            }
            let age = now.duration_since(look.1).unwrap_or(Duration::ZERO);
            let settled =
                age >= SETTLED || (age >= QUIET && self.sightings.get(&file) == Some(&look));
            if settled {
                self.sightings.remove(&file);
                newly_ready.push((look.1, file));
            } else {
                self.sightings.insert(file, look);
            }
        }
        newly_ready.sort();
        self.ready.extend(newly_ready.into_iter().map(|(_, f)| f));
    }
}

impl Source for DirectorySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn take(&mut self, _max_records: Option<usize>) -> SourceInput {
        self.poll();
        let mut n = self.max_files.unwrap_or(usize::MAX).min(self.ready.len());
        if let Some(budget) = self.budget {
            let (mut records, mut fit) = (0usize, 0);
            for file in &self.ready[..n] {
                let lines = *self
                    .lines
                    .entry(file.clone())
                    .or_insert_with(|| count_lines(file));
                if fit > 0 && records.saturating_add(lines) > budget {
                    break;
                }
                records = records.saturating_add(lines);
                fit += 1;
            }
            n = fit;
        }
        let files: Vec<PathBuf> = self.ready.drain(..n).collect();
        for file in &files {
            self.lines.remove(file);
        }
        self.done.extend(files.iter().cloned());
        SourceInput::Files(files)
    }

    fn set_budget(&mut self, records: Option<usize>) {
        self.budget = records;
    }

    fn status(&mut self) -> SourceStatus {
        self.poll();
        SourceStatus {
            buffered: 0,
            backlog: !self.ready.is_empty(),
            exhausted: self.ready.is_empty() && self.sightings.is_empty(),
        }
    }

    fn stop(&mut self) {}
}

/// The lines of `file` (a last line without a newline counts); 0 when it cannot be read (the
/// batch reading it reports why).
fn count_lines(file: &Path) -> usize {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(file) else {
        return 0;
    };
    let mut chunk = vec![0u8; 64 << 10];
    let (mut lines, mut last) = (0usize, b'\n');
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                lines += memchr::memchr_iter(b'\n', &chunk[..n]).count();
                last = chunk[n - 1];
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    lines + usize::from(last != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(input: SourceInput) -> Vec<String> {
        match input {
            SourceInput::Files(f) => f
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect(),
            SourceInput::Records { .. } | SourceInput::Fetched { .. } => {
                panic!("records from a directory")
            }
        }
    }

    fn age(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn new_files_are_read_once_and_fresh_ones_wait_a_listing() {
        let dir = std::env::temp_dir().join(format!("sluice-dirsrc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("old.txt"), "x\n").unwrap();
        age(&dir.join("old.txt"));
        std::fs::write(dir.join(".hidden"), "x\n").unwrap();
        std::fs::write(dir.join("_SUCCESS"), "").unwrap();
        std::fs::write(dir.join("part.tmp"), "x\n").unwrap();

        let mut latest = DirectorySource::new("d", &dir, Start::Latest, None);
        assert!(files(latest.take(None)).is_empty());

        let mut src = DirectorySource::new("d", &dir, Start::Earliest, Some(1));
        assert_eq!(files(src.take(None)), ["old.txt"]);
        assert!(files(src.take(None)).is_empty());

        std::fs::write(dir.join("fresh.txt"), "y\n").unwrap();
        assert!(
            files(src.take(None)).is_empty(),
            "a file seen once may still be written"
        );
        assert!(!src.status().exhausted);
        std::thread::sleep(QUIET);
        assert_eq!(files(src.take(None)), ["fresh.txt"]);
        assert!(src.status().exhausted);
        assert!(files(latest.take(None)).is_empty(), "first sighting");
        assert_eq!(files(latest.take(None)), ["fresh.txt"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_budget_takes_whole_files_that_fit_and_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        for (name, lines) in [("a", 3), ("b", 3), ("c", 5), ("d", 1)] {
            let path = dir.path().join(name);
            let text: String = (0..lines).map(|i| format!("{i}\n")).collect();
            std::fs::write(&path, text.trim_end()).unwrap();
            age(&path);
            // Distinct ages so the oldest-first order is a, b, c, d.
            let when = SystemTime::now() - Duration::from_secs(200 - u64::from(name.as_bytes()[0]));
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        let mut src = DirectorySource::new("d", dir.path(), Start::Earliest, None);
        src.set_budget(Some(4));
        assert_eq!(files(src.take(None)), ["a"], "a and b make 6 > 4");
        assert_eq!(files(src.take(None)), ["b"]);
        assert_eq!(
            files(src.take(None)),
            ["c"],
            "over the budget alone: taken alone"
        );
        src.set_budget(None);
        assert_eq!(files(src.take(None)), ["d"]);
        assert_eq!(count_lines(&dir.path().join("a")), 3, "no final newline");
    }
}
