//! Container logs with a size cap, as the kubelet rotates them (`containerLogMaxSize` 10 MiB,
//! `containerLogMaxFiles` 5: the current file and four rotated ones, `<c>.log.1` the newest), so one
//! chatty container cannot fill the disk. The container writes into a pipe; one thread per container
//! copies it into the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Kubelet's `containerLogMaxSize` default.
pub const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
/// Kubelet's `containerLogMaxFiles` default (the current file included).
pub const MAX_LOG_FILES: usize = 5;

/// An append-only log file that rotates when it would grow past `max_bytes`.
pub struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    max_files: usize,
    file: File,
    size: u64,
}

fn rotated(path: &Path, index: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl RotatingLog {
    /// Opens (appending to) `path`.
    pub fn open(path: &Path, max_bytes: u64, max_files: usize) -> io::Result<RotatingLog> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            max_bytes,
            max_files: max_files.max(1),
            file,
            size,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(rotated(&self.path, self.max_files - 1));
        for index in (1..self.max_files - 1).rev() {
            let _ = std::fs::rename(rotated(&self.path, index), rotated(&self.path, index + 1));
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let written = self.file.write(buf)?;
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A pipe for a container's stdout and stderr, and the thread copying it into the rotating log at
/// `path`. Returns the write end (give it to the container); the thread ends when every writer closed.
pub(crate) fn pipe_into(path: &Path) -> io::Result<OwnedFd> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let mut log = RotatingLog::open(path, MAX_LOG_BYTES, MAX_LOG_FILES)?;
    std::thread::Builder::new()
        .name("container-log".into())
        .spawn(move || {
            let mut reader = File::from(read);
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) => return,
                    Ok(n) => {
                        // A full disk loses log lines, never blocks the container on a full pipe.
                        let _ = log.write_all(&buffer[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        })?;
    Ok(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_cap_and_keeps_only_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut log = RotatingLog::open(&path, 100, 3).unwrap();
        for i in 0..10 {
            log.write_all(format!("{i:0>49}\n").as_bytes()).unwrap();
        }
        // 50-byte lines, 100-byte cap: two lines per file; the 10 lines make 5 files, of which 3 stay.
        let current = std::fs::read_to_string(&path).unwrap();
        assert_eq!(current.lines().count(), 2);
        assert!(current.ends_with(&format!("{:0>49}\n", 9)));
        let newest_rotated = std::fs::read_to_string(rotated(&path, 1)).unwrap();
        assert!(newest_rotated.starts_with(&format!("{:0>49}\n", 6)));
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists(), "only max_files files are kept");
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 300, "{total} bytes on disk");
    }

    #[test]
    fn a_pipe_reaches_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let write = pipe_into(&path).unwrap();
        let mut writer = File::from(write);
        writer.write_all(b"hello\n").unwrap();
        drop(writer);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_to_string(&path).unwrap_or_default() != "hello\n" {
            assert!(std::time::Instant::now() < deadline, "log not written");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
