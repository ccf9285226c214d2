//! PNG plot of latency percentiles per configuration: one panel per connection count, percentiles on the
//! x axis, milliseconds on a log y axis, one line per configuration.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{BenchError, Result};
use crate::runner::{CONNECTIONS, ConfigResult};

const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];
const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

fn register_font() -> std::result::Result<(), String> {
    static REGISTERED: std::sync::OnceLock<std::result::Result<(), String>> =
        std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = FONT_CANDIDATES
                .iter()
                .find(|path| Path::new(path).is_file())
                .ok_or_else(|| {
                    "no TTF font found (apt-get install fonts-dejavu-core)".to_string()
                })?;
            let bytes = std::fs::read(path).map_err(|error| format!("{path}: {error}"))?;
            // Leaked once per process: plotters keeps registered fonts for the program's lifetime.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a usable font"))
        })
        .clone()
}

/// Draws the latency chart of `configs` to `path`.
pub fn latency_chart(configs: &[ConfigResult], path: &Path) -> Result<()> {
    let plot_error = |detail: String| BenchError::Plot {
        path: path.to_path_buf(),
        detail,
    };
    register_font().map_err(plot_error)?;
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|error| plot_error(error.to_string()))?;
    let panels = root.split_evenly((1, CONNECTIONS.len()));
    let max_ms = configs
        .iter()
        .flat_map(|config| config.latency.iter())
        .map(|run| run.summary.p999_ms)
        .fold(0.1f64, f64::max)
        * 1.5;
    for (panel, connections) in panels.iter().zip(CONNECTIONS) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("latency at 1,000 rps, {connections} connections"),
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.2f64..3.2f64, (0.01f64..max_ms).log_scale())
            .map_err(|error| plot_error(error.to_string()))?;
        chart
            .configure_mesh()
            .x_labels(4)
            .x_label_formatter(&|x| {
                let index = x.round() as usize;
                if (x - x.round()).abs() < 0.01 {
                    PERCENTILES.get(index).copied().unwrap_or("").to_string()
                } else {
                    String::new()
                }
            })
            .y_desc("ms (log)")
            .draw()
            .map_err(|error| plot_error(error.to_string()))?;
        for (index, config) in configs.iter().enumerate() {
            let Some(run) = config
                .latency
                .iter()
                .find(|run| run.connections == connections)
            else {
                continue;
            };
            let s = &run.summary;
            let points: Vec<(f64, f64)> = [s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms]
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64, v.max(0.011)))
                .collect();
            let color = Palette99::pick(index).to_rgba();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|error| plot_error(error.to_string()))?
                .label(config.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|point| Circle::new(point, 3, color.filled())),
                )
                .map_err(|error| plot_error(error.to_string()))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|error| plot_error(error.to_string()))?;
    }
    root.present()
        .map_err(|error| plot_error(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadSummary;
    use crate::measure::LatencyRun;

    #[test]
    fn chart_is_a_png_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.png");
        let config = ConfigResult {
            name: "direct".into(),
            latency: CONNECTIONS
                .iter()
                .map(|&connections| LatencyRun {
                    connections,
                    rate: 1000,
                    summary: LoadSummary {
                        p50_ms: 0.1,
                        p90_ms: 0.2,
                        p99_ms: 0.4,
                        p999_ms: 1.0,
                        ..Default::default()
                    },
                    proxies: Vec::new(),
                    runs: 1,
                })
                .collect(),
            ..Default::default()
        };
        latency_chart(&[config], &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
