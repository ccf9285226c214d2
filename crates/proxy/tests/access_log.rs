//! The access-log writer in its own process (it is process-wide): lines reach the sink from the writer
//! thread in the order they were logged, and a stalled sink makes lines drop (and be counted) instead of
//! blocking the caller.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ironmesh_proxy::access_log;
use prometheus_client::metrics::counter::Counter;

/// A sink that can be stalled: `write` waits while `stalled` is true, as a full pipe would.
#[derive(Clone, Default)]
struct Sink {
    state: Arc<(Mutex<Written>, Condvar)>,
}

/// What reached the sink, and whether it is stalled.
#[derive(Default)]
struct Written {
    bytes: Vec<u8>,
    stalled: bool,
}

impl Sink {
    fn set_stalled(&self, stalled: bool) {
        let (lock, changed) = &*self.state;
        lock.lock().unwrap().stalled = stalled;
        changed.notify_all();
    }

    fn text(&self) -> String {
        String::from_utf8(self.state.0.lock().unwrap().bytes.clone()).unwrap()
    }
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let (lock, changed) = &*self.state;
        let mut state = changed
            .wait_while(lock.lock().unwrap(), |state| state.stalled)
            .unwrap();
        state.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn request_line(index: u64) {
    access_log::record("http request", |line| {
        line.str("reporter", "source")
            .bytes("method", b"GET")
            .bytes("path", b"/status/200")
            .number("code", 200)
            .number("index", index);
    });
}

/// Waits (up to 10 s) until the sink's text satisfies `done`.
fn wait_for(sink: &Sink, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..1000 {
        let text = sink.text();
        if done(&text) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sink.text()
}

#[test]
fn lines_are_written_in_order_and_dropped_when_the_sink_stalls() {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let sink = Sink::default();
    let dropped = Counter::default();
    access_log::install(Box::new(sink.clone()), false, dropped.clone()).unwrap();
    assert!(
        access_log::install(Box::new(sink.clone()), false, Counter::default()).is_err(),
        "a second writer must be refused"
    );

    // Written by the writer thread, without a flush, in order, in tracing-subscriber's text shape.
    for index in 0..100 {
        request_line(index);
    }
    let text = wait_for(&sink, |text| text.lines().count() == 100);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 100, "{text}");
    for (index, line) in lines.iter().enumerate() {
        let (stamp, rest) = line.split_once("Z  INFO access: ").expect(line);
        assert_eq!(stamp.len(), "2026-12-02T05:18:20.123456".len(), "{line}");
        assert_eq!(
            rest,
            format!(
                "http request reporter=\"source\" method=GET path=/status/200 code=200 index={index}"
            )
        );
    }
    assert_eq!(dropped.get(), 0);

    // A stalled sink: the caller keeps going, lines beyond the pending limit are counted as dropped.
    sink.set_stalled(true);
    request_line(100);
    // Let the writer take that line and block in the sink; what follows waits in the buffer.
    std::thread::sleep(access_log::LINGER * 5);
    let line_bytes = 90;
    let lines = 2 * access_log::MAX_PENDING / line_bytes;
    for index in 0..lines as u64 {
        request_line(101 + index);
    }
    assert!(
        dropped.get() > 0,
        "nothing was dropped while the sink stalled"
    );
    let kept = lines as u64 - dropped.get();
    sink.set_stalled(false);
    access_log::flush();
    let text = wait_for(&sink, |text| text.lines().count() as u64 == 101 + kept);
    assert_eq!(text.lines().count() as u64, 101 + kept);
    // The kept lines are the first ones logged: nothing reordered, the newest dropped.
    let last = text.lines().last().unwrap();
    assert!(last.ends_with(&format!(" index={}", 100 + kept)), "{last}");
}
