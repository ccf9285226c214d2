//! Child processes of the harness: started inside a namespace and pinned to a CPU, killed (whole
//! process group) on drop, and measured from `/proc` (CPU ticks and VmRSS summed over the process tree,
//! context switches per thread).
#![allow(unsafe_code, reason = "process-group kill and sysconf go through libc")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};

/// A running child; its process group is killed with SIGKILL when dropped.
#[derive(Debug)]
pub struct Running {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
    child: Child,
}

/// How to start one process inside a namespace.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub name: &'a str,
    /// Network namespace (`ip netns` name); empty runs the process in the harness's own namespace
    /// (the CPU burner of the contention rows, which opens no socket).
    pub namespace: &'a str,
    /// CPU list for `taskset -c` (the 2-core plan: generator and upstream on 0, proxies on 1).
    pub cpus: &'a str,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log_dir: &'a Path,
}

impl Launch<'_> {
    /// Starts the process; `ip netns exec` and `taskset` both exec, so the pid is the program's own.
    pub fn spawn(&self) -> Result<Running> {
        let log = self.log_dir.join(format!("{}.log", self.name));
        let file = fs::File::create(&log).map_err(|error| BenchError::io(&log, error))?;
        let err_file = file
            .try_clone()
            .map_err(|error| BenchError::io(&log, error))?;
        let mut command = if self.namespace.is_empty() {
            Command::new("taskset")
        } else {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", self.namespace, "taskset"]);
            command
        };
        command
            .args(["-c", self.cpus])
            .args(&self.argv)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|error| BenchError::Command {
            command: self.argv.join(" "),
            detail: error.to_string(),
        })?;
        Ok(Running {
            name: self.name.to_string(),
            pid: child.id(),
            log,
            child,
        })
    }
}

impl Running {
    /// Waits until this process's namespace has a TCP listener on `port`, or the process exits.
    pub fn wait_listening(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Command {
                    command: self.name.clone(),
                    detail: format!(
                        "exited with {status} before listening; log {}",
                        self.log.display()
                    ),
                });
            }
            if listens_on(self.pid, port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(BenchError::NotListening {
            what: self.name.clone(),
            address: format!(":{port}"),
            seconds: timeout.as_secs(),
            log: self.log.clone(),
        })
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU and memory of this process and all its descendants right now.
    pub fn usage(&self) -> Usage {
        tree_usage(self.pid)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals our own child's process group only.
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// CPU time and resident memory of a process tree at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
}

/// Sums utime+stime (fields 14 and 15 of `/proc/<pid>/stat`) and VmRSS over `root` and its descendants.
pub fn tree_usage(root: u32) -> Usage {
    let ticks_per_second = clock_ticks_per_second();
    let mut usage = Usage::default();
    for pid in tree_pids(root) {
        if let Some((ticks, _)) = read_stat(pid) {
            usage.cpu_seconds += ticks as f64 / ticks_per_second;
        }
        usage.rss_kib += read_rss_kib(pid).unwrap_or(0);
    }
    usage
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// `root` and every process whose parent chain leads to it.
pub(crate) fn tree_pids(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
                && let Some((_, parent)) = read_stat(pid)
            {
                parents.push((pid, parent));
            }
        }
    }
    let mut tree = vec![root];
    let mut index = 0;
    while index < tree.len() {
        let current = tree[index];
        tree.extend(
            parents
                .iter()
                .filter(|(_, parent)| *parent == current)
                .map(|(pid, _)| *pid),
        );
        index += 1;
    }
    tree
}

/// (utime + stime in ticks, parent pid) from `/proc/<pid>/stat`.
fn read_stat(pid: u32) -> Option<(u64, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

pub(crate) fn parse_stat(text: &str) -> Option<(u64, u32)> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); ppid is field 4, utime 14, stime 15.
    let parent = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime, parent))
}

/// Context switches of the threads of `root` and its descendants, summed by thread name (the
/// `dataplane` workers, `control`, `access-log`, the main thread under the process's name).
///
/// A voluntary switch is a thread that blocked (on epoll, a futex, a sleep) and had to be woken
/// again: over a run it counts the wake-ups, each of which costs a halted vCPU's exit latency on a
/// virtual machine. An involuntary switch is a thread preempted while it still had work.
pub fn tree_switches(root: u32) -> Vec<ThreadSwitches> {
    let mut by_name: Vec<ThreadSwitches> = Vec::new();
    for pid in tree_pids(root) {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(status) = fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            let Some(thread) = parse_switches(&status) else {
                continue;
            };
            match by_name.iter_mut().find(|known| known.name == thread.name) {
                Some(known) => {
                    known.voluntary += thread.voluntary;
                    known.involuntary += thread.involuntary;
                }
                None => by_name.push(thread),
            }
        }
    }
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    by_name
}

/// Context switches of the threads of one name at one moment ([`tree_switches`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadSwitches {
    pub name: String,
    pub voluntary: u64,
    pub involuntary: u64,
}

/// `Name`, `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` of `/proc/<pid>/task/<tid>/status`.
pub(crate) fn parse_switches(status: &str) -> Option<ThreadSwitches> {
    Some(ThreadSwitches {
        name: proc_field(status, "Name")?.to_string(),
        voluntary: proc_number(status, "voluntary_ctxt_switches")?,
        involuntary: proc_number(status, "nonvoluntary_ctxt_switches")?,
    })
}

/// The value of `name:` in a `/proc` key-value file (`status`, `smaps_rollup`), trimmed.
pub(crate) fn proc_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The number that starts the value of `name:` (`4321` of `VmRSS:  4321 kB`).
pub(crate) fn proc_number(text: &str, name: &str) -> Option<u64> {
    proc_field(text, name)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read_rss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&text)
}

pub(crate) fn parse_vm_rss(status: &str) -> Option<u64> {
    proc_number(status, "VmRSS")
}

/// Whether the network namespace of `pid` has a TCP socket listening on `port` (IPv4 or IPv6).
fn listens_on(pid: u32, port: u16) -> bool {
    ["tcp", "tcp6"].iter().any(|table| {
        fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .map(|text| table_has_listener(&text, port))
            .unwrap_or(false)
    })
}

pub(crate) fn table_has_listener(table: &str, port: u16) -> bool {
    let wanted = format!("{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3
            && fields[3] == "0A"
            && fields[1]
                .rsplit(':')
                .next()
                .is_some_and(|local_port| local_port == wanted)
    })
}

/// Fails with a clear message when `tool` is not on PATH.
pub fn require_tool(tool: &str, package: &str) -> Result<()> {
    if which(tool).is_some() {
        Ok(())
    } else {
        Err(BenchError::MissingTool {
            tool: tool.to_string(),
            package: package.to_string(),
        })
    }
}

/// The full path of `tool` on PATH (also /usr/sbin, where Debian puts haproxy and nginx).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|dir| Path::new(dir).join(tool))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parens() {
        let text = "42 (my (odd) name) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat(text), Some((300, 7)));
    }

    #[test]
    fn context_switches_are_read_by_thread_name() {
        let status = "Name:\tdataplane\nUmask:\t0022\nState:\tS (sleeping)\n\
                      voluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n";
        assert_eq!(
            parse_switches(status),
            Some(ThreadSwitches {
                name: "dataplane".into(),
                voluntary: 1234,
                involuntary: 56,
            })
        );
        // A kernel without the counters (or a status cut short) gives nothing rather than zeros.
        assert_eq!(
            parse_switches("Name:\tx\nvoluntary_ctxt_switches:\t1\n"),
            None
        );
        assert_eq!(
            parse_switches("voluntary_ctxt_switches:\t1\nnonvoluntary_ctxt_switches:\t2\n"),
            None
        );
    }

    #[test]
    fn the_harness_own_threads_are_counted() {
        // This test's own process: it has a main thread that has blocked at least once by now.
        let switches = tree_switches(std::process::id());
        assert!(!switches.is_empty());
        assert!(switches.iter().map(|thread| thread.voluntary).sum::<u64>() > 0);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tx\nVmPeak:\t 9000 kB\nVmRSS:\t    4321 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(4321));
    }

    #[test]
    fn listener_lines_match_the_port_only_in_listen_state() {
        let table = "  sl  local_address rem_address   st\n   0: 0100007F:1F90 00000000:0000 0A 0\n   1: 0100007F:20FB 0200007F:1234 01 0\n";
        assert!(table_has_listener(table, 8080));
        assert!(!table_has_listener(table, 8443));
    }

    #[test]
    fn the_current_process_tree_reports_its_own_memory() {
        let usage = tree_usage(std::process::id());
        assert!(
            usage.rss_kib > 0,
            "VmRSS of this test process must be visible: {usage:?}"
        );
    }
}
