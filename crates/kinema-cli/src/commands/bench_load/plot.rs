//! The SVG plot: throughput (succeeded jobs/hour per time bucket) and per-job
//! latency over the run, one colour per run.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use super::record::Outcome;
use super::report::RunReport;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

pub fn write_svg(runs: &[RunReport], path: &Path) -> anyhow::Result<()> {
    let mut svg = String::new();
    draw(runs, &mut svg).map_err(|e| anyhow!("drawing the plot: {e}"))?;
    std::fs::write(path, svg).map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

fn draw(runs: &[RunReport], out: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(out, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(380);
    let x_max = runs.iter().map(|r| r.elapsed_s).fold(1e-3, f64::max) * 1.02;

    let series: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|r| {
            let w = r.timeline.bucket_s;
            r.timeline
                .buckets
                .iter()
                .map(|b| (b.start_s + w / 2.0, b.jobs_per_hour))
                .collect()
        })
        .collect();
    let y_max = series.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption("Throughput", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("succeeded jobs / hour")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (i, (run, points)) in runs.iter().zip(&series).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(format!(
                "{} ({:.0} jobs/h)",
                run.label, run.throughput.jobs_per_hour
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let latencies: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|r| {
            r.jobs
                .iter()
                .filter(|j| j.outcome == Outcome::Succeeded)
                .filter_map(|j| Some((j.ended_seen_s?, j.end_to_end_ms? / 1e3)))
                .collect()
        })
        .collect();
    let y_max = latencies.iter().flatten().map(|p| p.1).fold(1e-3, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("End-to-end latency per job", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("job ended at (s since start)")
        .y_desc("submit -> end (s)")
        .draw()?;
    for (i, (run, points)) in runs.iter().zip(&latencies).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 2, colour.mix(0.7).filled())),
            )?
            .label(run.label.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 3, colour.filled()));
        // The median per bucket, over the points.
        let w = run.timeline.bucket_s;
        let medians = run
            .timeline
            .buckets
            .iter()
            .filter_map(|b| b.end_to_end_p50_ms.map(|m| (b.start_s + w / 2.0, m / 1e3)));
        chart.draw_series(LineSeries::new(medians, colour.stroke_width(2)))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
