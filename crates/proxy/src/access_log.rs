//! The access log: one fixed-format line per HTTP request and per TCP connection, written off the
//! data-plane worker.
//!
//! tracing-subscriber's generic formatter cost about 26,000 instructions per proxied request for the two
//! sidecars' lines (field visitors, the timestamp, the style wrapper) and wrote each line to stdout on the
//! worker. Here a line is formatted in place, field by field, into one shared buffer (reused, so no
//! allocation per line), and a writer thread (`access-log`) writes the buffer out in batches: one `write`
//! per batch, at most every [`LINGER`] under load, none when idle. The worker never blocks on the log:
//! when the buffer already holds [`MAX_PENDING`] bytes (stdout stalled, the disk full) the line is
//! dropped and counted in `ironmesh_access_log_dropped_lines_total`, as Envoy drops access-log lines
//! rather than block its workers.
//!
//! The lines keep the shape tracing-subscriber gave them (`timestamp  INFO access: message key=value`,
//! or with `--log-json` the same JSON object), and they follow the log filter: `/logging?level=warn` on
//! the admin port turns them off. Where no writer is installed (the library in tests), a line goes
//! through `tracing` as before, so a test's subscriber sees it.

use std::fmt::Display;
use std::io::Write;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;

/// Bytes waiting for the writer beyond which new lines are dropped (about 1,000 request lines).
pub const MAX_PENDING: usize = 256 * 1024;
/// How long the writer lets lines gather after a write, so a busy proxy writes a batch, not each line.
pub const LINGER: Duration = Duration::from_millis(20);
/// A batch buffer grown past this by a burst is released once written, so an idle proxy keeps little.
const KEEP_CAPACITY: usize = 16 * 1024;

static WRITER: OnceLock<Writer> = OnceLock::new();

struct Writer {
    pending: Mutex<Pending>,
    /// Held while a batch is written, so a [`flush`] and the writer thread keep the lines in order.
    sink: Mutex<Box<dyn Write + Send>>,
    thread: Thread,
    json: bool,
    dropped: Counter,
}

struct Pending {
    lines: Vec<u8>,
    /// The second `stamp` was formatted for, and `YYYY-MM-DDTHH:MM:SS` of it.
    second: u64,
    stamp: [u8; 19],
}

/// Why the access-log writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("the access log writer is already installed in this process")]
    AlreadyInstalled,
    #[error("cannot start the access-log writer thread ({0}); check the process's thread limit")]
    Thread(std::io::Error),
}

/// Sends the process's access log to `sink` (stdout in a pod) from a writer thread, in text or JSON
/// lines. `dropped` counts lines dropped because the writer fell [`MAX_PENDING`] bytes behind.
pub fn install(
    sink: Box<dyn Write + Send>,
    json: bool,
    dropped: Counter,
) -> Result<(), AccessLogError> {
    if WRITER.get().is_some() {
        return Err(AccessLogError::AlreadyInstalled);
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || {
            // Wait until the writer is published; it holds this thread's handle.
            let _ = ready_rx.recv();
            if let Some(writer) = WRITER.get() {
                writer.run();
            }
        })
        .map_err(AccessLogError::Thread)?;
    let writer = Writer {
        pending: Mutex::new(Pending {
            lines: Vec::new(),
            second: u64::MAX,
            stamp: [0; 19],
        }),
        sink: Mutex::new(sink),
        thread: thread.thread().clone(),
        json,
        dropped,
    };
    let installed = WRITER.set(writer).is_ok();
    let _ = ready_tx.send(());
    if installed {
        Ok(())
    } else {
        Err(AccessLogError::AlreadyInstalled)
    }
}

/// Writes what is pending now, on the caller's thread (before the process exits).
pub fn flush() {
    if let Some(writer) = WRITER.get() {
        let mut batch = Vec::new();
        writer.write_batch(&mut batch);
    }
}

impl Writer {
    fn run(&self) {
        let mut batch = Vec::new();
        loop {
            if self.write_batch(&mut batch) {
                std::thread::sleep(LINGER);
            } else {
                // Woken by the first line appended to an empty buffer (or spuriously: look again).
                std::thread::park();
            }
        }
    }

    /// Swaps the pending lines out and writes them; false when there were none.
    fn write_batch(&self, batch: &mut Vec<u8>) -> bool {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.lines.is_empty() {
                return false;
            }
            std::mem::swap(&mut pending.lines, batch);
        }
        // A write error (stdout closed) loses this batch; there is nowhere to report it but the log.
        let _ = sink.write_all(batch).and_then(|()| sink.flush());
        batch.clear();
        if batch.capacity() > KEEP_CAPACITY {
            *batch = Vec::new();
        }
        true
    }
}

/// Whether access-log lines are wanted now (the log filter lets `access` at INFO through).
pub fn enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// Logs one access-log line: `message`, then the fields `fields` writes.
pub fn record(message: &str, fields: impl FnOnce(&mut Line<'_>)) {
    if !enabled() {
        return;
    }
    let Some(writer) = WRITER.get() else {
        // No writer in this process (tests): the same fields through tracing.
        let mut text = Vec::new();
        let mut line = Line {
            out: &mut text,
            json: false,
        };
        fields(&mut line);
        let text = String::from_utf8_lossy(text.strip_prefix(b" ").unwrap_or(&text));
        tracing::info!(target: "access", "{message} {text}");
        return;
    };
    let was_empty = {
        let mut pending = writer
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let start = pending.lines.len();
        if start >= MAX_PENDING {
            drop(pending);
            writer.dropped.inc();
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if pending.second != now.as_secs() {
            pending.second = now.as_secs();
            pending.stamp = civil_time(now.as_secs());
        }
        let Pending { lines, stamp, .. } = &mut *pending;
        let micros = now.subsec_micros();
        if writer.json {
            lines.extend_from_slice(b"{\"timestamp\":\"");
            lines.extend_from_slice(stamp);
            push_fraction(lines, micros);
            lines.extend_from_slice(b"Z\",\"level\":\"INFO\",\"fields\":{\"message\":");
            json_string(lines, message.as_bytes());
            fields(&mut Line {
                out: lines,
                json: true,
            });
            lines.extend_from_slice(b"},\"target\":\"access\"}\n");
        } else {
            lines.extend_from_slice(stamp);
            push_fraction(lines, micros);
            lines.extend_from_slice(b"Z  INFO access: ");
            lines.extend_from_slice(message.as_bytes());
            fields(&mut Line {
                out: lines,
                json: false,
            });
            lines.push(b'\n');
        }
        start == 0
    };
    if was_empty {
        // Cheap when the writer is awake (an atomic swap); a wake-up only when it parked.
        writer.thread.unpark();
    }
}

/// The fields of one line, written as `key=value` (text) or `,"key":value` (JSON).
pub struct Line<'a> {
    out: &'a mut Vec<u8>,
    json: bool,
}

impl Line<'_> {
    fn key(&mut self, key: &str) {
        if self.json {
            self.out.extend_from_slice(b",\"");
            self.out.extend_from_slice(key.as_bytes());
            self.out.extend_from_slice(b"\":");
        } else {
            self.out.push(b' ');
            self.out.extend_from_slice(key.as_bytes());
            self.out.push(b'=');
        }
    }

    /// A string field, quoted as tracing quotes `&str` fields: `reporter="source"`.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        if self.json {
            json_string(self.out, value.as_bytes());
        } else if value
            .bytes()
            .all(|byte| (b' '..0x7f).contains(&byte) && byte != b'"' && byte != b'\\')
        {
            // Printable ASCII without quotes or backslashes: `{:?}` would write it as it is.
            self.out.push(b'"');
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
        } else {
            // tracing writes `{:?}` of a `&str`: escape as it would.
            let _ = write!(self.out, "{value:?}");
        }
        self
    }

    /// A socket address, as `Display` writes it (IPv4 without the formatter).
    pub fn socket_address(&mut self, key: &str, value: std::net::SocketAddr) -> &mut Self {
        let std::net::SocketAddr::V4(v4) = value else {
            return self.display(key, value);
        };
        self.key(key);
        if self.json {
            self.out.push(b'"');
        }
        for (index, octet) in v4.ip().octets().into_iter().enumerate() {
            if index > 0 {
                self.out.push(b'.');
            }
            push_decimal(self.out, octet.into());
        }
        self.out.push(b':');
        push_decimal(self.out, v4.port().into());
        if self.json {
            self.out.push(b'"');
        }
        self
    }

    /// A field written with `Display` (`%value` in tracing): unquoted in text, a string in JSON.
    pub fn display(&mut self, key: &str, value: impl Display) -> &mut Self {
        self.key(key);
        if self.json {
            let start = self.out.len();
            let _ = write!(self.out, "{value}");
            let raw = self.out.split_off(start);
            json_string(self.out, &raw);
        } else {
            let _ = write!(self.out, "{value}");
        }
        self
    }

    /// A plain ASCII value that needs no escaping in text (method, path, principal): as `display`
    /// without the formatter.
    pub fn bytes(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.key(key);
        if self.json {
            json_string(self.out, value);
        } else {
            self.out.extend_from_slice(value);
        }
        self
    }

    pub fn number(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        push_decimal(self.out, value);
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }
}

fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `.uuuuuu`: microseconds, zero-padded to six digits.
fn push_fraction(out: &mut Vec<u8>, micros: u32) {
    let mut digits = [b'.', 0, 0, 0, 0, 0, 0];
    let mut value = micros;
    for digit in digits[1..].iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits);
}

/// A JSON string literal of `value` (UTF-8 expected; control characters, quotes and backslashes escaped).
fn json_string(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    for &byte in value {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..0x20 => {
                let _ = write!(out, "\\u{byte:04x}");
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time in seconds.
fn civil_time(unix_seconds: u64) -> [u8; 19] {
    let days = unix_seconds / 86_400;
    let of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let mut stamp = [0u8; 19];
    let mut put = |at: usize, value: u64, width: usize| {
        let mut value = value;
        for index in (at..at + width).rev() {
            stamp[index] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year as u64, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, of_day / 3600, 2);
    put(14, of_day % 3600 / 60, 2);
    put(17, of_day % 60, 2);
    stamp[4] = b'-';
    stamp[7] = b'-';
    stamp[10] = b'T';
    stamp[13] = b':';
    stamp[16] = b':';
    stamp
}

/// (year, month, day) of a count of days since 1970-01-01 (the proleptic Gregorian calendar, counted
/// in 400-year eras of 146,097 days).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u64;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u64;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time_matches_known_dates() {
        assert_eq!(&civil_time(0), b"1970-01-01T00:00:00");
        // 2000-02-29 (a leap day of a century year) 12:34:56 UTC.
        assert_eq!(&civil_time(951_827_696), b"2000-02-29T12:34:56");
        // 2026-12-02T05:18:20Z.
        assert_eq!(&civil_time(1_796_188_700), b"2026-12-02T05:18:20");
        // The last second of a non-leap century year's February and of a year.
        assert_eq!(&civil_time(4_107_542_399), b"2100-02-28T23:59:59");
        assert_eq!(&civil_time(1_798_761_599), b"2026-12-31T23:59:59");
    }

    #[test]
    fn fields_are_written_as_text_and_as_json() {
        let mut text = Vec::new();
        Line {
            out: &mut text,
            json: false,
        }
        .str("reporter", "source")
        .bytes("path", b"/a\"b")
        .number("code", 200)
        .bool("mtls", true)
        .display("upstream", "10.0.0.2:80")
        .socket_address("v4", "192.168.10.255:65535".parse().unwrap())
        .socket_address("v6", "[fd00::2]:80".parse().unwrap())
        .str("error", "said \"no\"\n");
        assert_eq!(
            String::from_utf8(text).unwrap(),
            " reporter=\"source\" path=/a\"b code=200 mtls=true upstream=10.0.0.2:80 \
             v4=192.168.10.255:65535 v6=[fd00::2]:80 error=\"said \\\"no\\\"\\n\""
        );
        let mut json = b"{\"message\":\"m\"".to_vec();
        Line {
            out: &mut json,
            json: true,
        }
        .str("reporter", "source")
        .bytes("path", b"/a\"b\\\n")
        .number("code", 0)
        .bool("mtls", false)
        .display("upstream", "10.0.0.2:80")
        .socket_address("v4", "10.0.0.2:80".parse().unwrap());
        json.push(b'}');
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["reporter"], "source");
        assert_eq!(value["path"], "/a\"b\\\n");
        assert_eq!(value["code"], 0);
        assert_eq!(value["mtls"], false);
        assert_eq!(value["upstream"], "10.0.0.2:80");
        assert_eq!(value["v4"], "10.0.0.2:80");
    }

    #[test]
    fn fractions_and_numbers_keep_their_digits() {
        let mut out = Vec::new();
        push_fraction(&mut out, 42);
        push_decimal(&mut out, 0);
        out.push(b' ');
        push_decimal(&mut out, u64::MAX);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            ".0000420 18446744073709551615"
        );
    }
}
