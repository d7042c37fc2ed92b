//! Reading a file the host is given (a manifest, static data, a component) or wrote itself
//! (checkpoint metadata) without letting it hang or exhaust the host: only regular files, of a
//! bounded size, counted on the bytes read.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A file that could not be read within the bounds.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A directory, device, FIFO or socket: only regular files are read (a FIFO would block
    /// forever, a device may never end).
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is, e.g. "a character device".
        kind: &'static str,
    },
    /// Larger than the cap.
    #[error("{} holds {size} bytes, more than the {max} bytes allowed", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (or how much was read before stopping).
        size: u64,
        /// The cap.
        max: u64,
    },
    /// It could not be opened or read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why (not a `source`: the message already says it).
        error: std::io::Error,
    },
}

fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Read a whole file of at most `max` bytes. Its type is checked before it is opened (a FIFO or
/// a device is never opened), and again on the opened file, which is opened non-blocking so
/// that a file swapped for a FIFO in between cannot block; at most `max + 1` bytes are read, so
/// a file that grows meanwhile is still refused.
pub fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |error| FileError::Io {
        path: path.to_path_buf(),
        error,
    };
    let check = |meta: &std::fs::Metadata| {
        if !meta.is_file() {
            return Err(FileError::NotRegular {
                path: path.to_path_buf(),
                kind: kind_of(meta.file_type()),
            });
        }
        if meta.len() > max {
            return Err(FileError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
                max,
            });
        }
        Ok(())
    };
    check(&std::fs::metadata(path).map_err(io)?)?;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    check(&file.metadata().map_err(io)?)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.tsv");
        std::fs::write(&file, b"a\tb\n").unwrap();
        assert_eq!(read_regular_file(&file, 4).unwrap(), b"a\tb\n");
        assert!(matches!(
            read_regular_file(&file, 3),
            Err(FileError::TooLarge {
                size: 4,
                max: 3,
                ..
            })
        ));
        assert!(matches!(
            read_regular_file(dir.path(), 100),
            Err(FileError::NotRegular {
                kind: "a directory",
                ..
            })
        ));
        assert!(matches!(
            read_regular_file(Path::new("/dev/zero"), 100),
            Err(FileError::NotRegular {
                kind: "a character device",
                ..
            })
        ));
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_regular_file(&fifo, 100).unwrap_err();
        assert!(
            matches!(err, FileError::NotRegular { kind, .. } if kind.contains("FIFO")),
            "{err}"
        );
        assert!(matches!(
            read_regular_file(&dir.path().join("missing"), 100),
            Err(FileError::Io { .. })
        ));
    }
}
