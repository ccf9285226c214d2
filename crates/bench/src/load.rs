//! The load generator: open loop at a fixed rate with coordinated-omission correction, or closed loop
//! for maximum throughput. HTTP/1.1 keep-alive over `connections` hyper connections; latencies go
//! into an HdrHistogram (µs).
//!
//! Open loop: request i is due at `start + i / rate`; connection k owns the requests with
//! `i % connections == k`. When a connection is still busy at a request's due time, the latency is
//! counted from the due time (the queueing the system caused, as wrk2 does); when it was idle, from the
//! moment the request was actually sent, so the tokio timer's 1 ms granularity is not charged to the
//! system under test.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{BenchError, Result};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub target: SocketAddr,
    pub path: String,
    /// Requests per second over all connections; `None` is closed loop (as fast as possible).
    pub rate: Option<u32>,
    pub connections: u32,
    pub warmup: Duration,
    pub duration: Duration,
    /// Keep every measured request's timing (for `--timeline`: where in the run the slow ones fall).
    pub timeline: bool,
}

/// One measured request: when it began and how long it took, from the start of the measured window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timed {
    pub connection: u32,
    /// When the clock started (the send, or the due time when the connection was still busy).
    pub begin_us: u64,
    pub latency_us: u64,
}

/// Latency percentiles and counts of one load run (latencies in milliseconds).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LoadSummary {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub achieved_rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LoadSummary {
    fn from_histogram(histogram: &Histogram<u64>, errors: u64, seconds: f64) -> LoadSummary {
        let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        LoadSummary {
            requests: histogram.len(),
            errors,
            seconds,
            achieved_rps: histogram.len() as f64 / seconds.max(1e-9),
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: histogram.max() as f64 / 1000.0,
        }
    }
}

struct ConnectionResult {
    histogram: Histogram<u64>,
    errors: u64,
    timeline: Vec<Timed>,
}

/// Runs the plan and returns the merged summary. Bounded: stops at `warmup + duration`.
pub async fn run(plan: &LoadPlan) -> Result<LoadSummary> {
    run_with_timeline(plan).await.map(|(summary, _)| summary)
}

/// [`run`], also returning every measured request in the order they began when `plan.timeline` is set.
pub async fn run_with_timeline(plan: &LoadPlan) -> Result<(LoadSummary, Vec<Timed>)> {
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let mut tasks = Vec::new();
    for index in 0..plan.connections {
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            drive_connection(plan, index, start, measure_from, end).await
        }));
    }
    let mut merged = new_histogram();
    let mut errors = 0;
    let mut timeline = Vec::new();
    for task in tasks {
        let result = task.await.map_err(|error| BenchError::Parse {
            tool: "load generator".into(),
            detail: error.to_string(),
        })??;
        merged
            .add(&result.histogram)
            .map_err(|error| BenchError::Parse {
                tool: "hdrhistogram".into(),
                detail: error.to_string(),
            })?;
        errors += result.errors;
        timeline.extend(result.timeline);
    }
    timeline.sort_by_key(|timed| timed.begin_us);
    Ok((
        LoadSummary::from_histogram(&merged, errors, plan.duration.as_secs_f64()),
        timeline,
    ))
}

/// The timeline as CSV (`connection,begin_us,latency_us`), one measured request per line.
pub fn timeline_csv(timeline: &[Timed]) -> String {
    let mut text = String::from("connection,begin_us,latency_us\n");
    for timed in timeline {
        text.push_str(&format!(
            "{},{},{}\n",
            timed.connection, timed.begin_us, timed.latency_us
        ));
    }
    text
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(target: SocketAddr) -> Result<Sender> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|error| BenchError::Command {
            command: format!("connect {target}"),
            detail: error.to_string(),
        })?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| BenchError::Command {
            command: format!("HTTP handshake {target}"),
            detail: error.to_string(),
        })?;
    tokio::spawn(connection);
    Ok(sender)
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A 2xx response, body read to the end.
    Answered,
    /// A complete response with another status; the connection stays usable.
    Refused,
    /// No complete response: the connection is replaced.
    Broken,
}

async fn drive_connection(
    plan: LoadPlan,
    index: u32,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> Result<ConnectionResult> {
    let mut histogram = new_histogram();
    let mut errors = 0;
    let mut timeline = Vec::new();
    let mut sender = connect(plan.target).await?;
    let interval = plan
        .rate
        .map(|rate| Duration::from_secs_f64(plan.connections as f64 / rate as f64));
    // Stagger connections evenly inside one interval so they do not fire in bursts.
    let offset = plan
        .rate
        .map(|rate| Duration::from_secs_f64(index as f64 / rate as f64))
        .unwrap_or_default();
    let mut due = start + offset;
    let host = plan.target.to_string();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let begin = match interval {
            Some(_) if due > now => {
                tokio::time::sleep_until(due).await;
                Instant::now()
            }
            // Late: the connection was busy past the due time, so the wait counts as latency.
            Some(_) => due,
            None => now,
        };
        let request = Request::get(plan.path.as_str())
            .header(hyper::header::HOST, host.as_str())
            .body(Empty::<Bytes>::new())
            .expect("static request parts are valid");
        let outcome = match sender.send_request(request).await {
            // A response other than 2xx is an error, not a latency sample: a sidecar's 503 is fast.
            Ok(response) => {
                let answered = response.status().is_success();
                match response.into_body().collect().await {
                    Ok(_) if answered => Outcome::Answered,
                    Ok(_) => Outcome::Refused,
                    Err(_) => Outcome::Broken,
                }
            }
            Err(_) => Outcome::Broken,
        };
        let finished = Instant::now();
        // At a fixed rate the window holds the requests *due* in it: a wake-up that oversleeps past
        // `measure_from` must not pull a warm-up request into the count (it did under load).
        let counted_from = if interval.is_some() { due } else { begin };
        if counted_from >= measure_from && finished <= end {
            match outcome {
                Outcome::Answered => {
                    let micros =
                        finished.saturating_duration_since(begin).as_micros().max(1) as u64;
                    let _ = histogram.record(micros.min(60_000_000));
                    if plan.timeline {
                        timeline.push(Timed {
                            connection: index,
                            begin_us: begin.saturating_duration_since(measure_from).as_micros()
                                as u64,
                            latency_us: micros,
                        });
                    }
                }
                Outcome::Refused | Outcome::Broken => errors += 1,
            }
        }
        if outcome == Outcome::Broken {
            // A broken connection is replaced, as a keep-alive client pool would.
            sender = connect(plan.target).await?;
        }
        if let Some(interval) = interval {
            due += interval;
        }
    }
    Ok(ConnectionResult {
        histogram,
        errors,
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_reported_in_milliseconds() {
        let mut histogram = new_histogram();
        for micros in 1..=1000u64 {
            histogram.record(micros * 10).unwrap();
        }
        let summary = LoadSummary::from_histogram(&histogram, 2, 2.0);
        assert_eq!(summary.requests, 1000);
        assert_eq!(summary.errors, 2);
        assert!((summary.achieved_rps - 500.0).abs() < 1e-9);
        assert!((summary.p50_ms - 5.0).abs() < 0.01, "{summary:?}");
        assert!((summary.p99_ms - 9.9).abs() < 0.02, "{summary:?}");
    }

    #[tokio::test]
    async fn responses_other_than_2xx_are_errors_not_latency_samples() {
        // A sidecar refusing plaintext under STRICT answers 503 quickly; those must not pass as latency.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_request| async {
                        let mut response =
                            hyper::Response::new(http_body_util::Full::new(Bytes::from_static(
                                b"upstream connect error or disconnect/reset before headers",
                            )));
                        *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let plan = LoadPlan {
            target,
            path: "/".into(),
            rate: Some(200),
            connections: 2,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(500),
            timeline: false,
        };
        let summary = run(&plan).await.unwrap();
        assert_eq!(summary.requests, 0, "{summary:?}");
        assert!(summary.errors >= 90, "{summary:?}");
    }

    #[tokio::test]
    async fn open_loop_holds_the_rate_against_a_loopback_upstream() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        drop(listener);
        tokio::spawn(crate::upstream::serve(target));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let plan = LoadPlan {
            target,
            path: "/bytes/1024".into(),
            rate: Some(200),
            connections: 4,
            warmup: Duration::from_millis(100),
            duration: Duration::from_secs(1),
            timeline: true,
        };
        let (summary, timeline) = run_with_timeline(&plan).await.unwrap();
        assert_eq!(summary.errors, 0);
        // 200 rps for 1 s: allow for the requests cut at the window edges.
        assert!((190..=202).contains(&summary.requests), "{summary:?}");
        assert!(summary.p50_ms > 0.0 && summary.p50_ms <= summary.p99_ms);
        // One line per measured request, in the order they began, every connection present.
        assert_eq!(timeline.len() as u64, summary.requests);
        assert!(timeline.windows(2).all(|w| w[0].begin_us <= w[1].begin_us));
        assert!((0..4).all(|k| timeline.iter().any(|t| t.connection == k)));
        let csv = timeline_csv(&timeline);
        assert_eq!(csv.lines().count(), timeline.len() + 1);
        assert!(csv.starts_with("connection,begin_us,latency_us\n"));
    }
}
