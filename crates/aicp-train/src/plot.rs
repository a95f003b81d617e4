//! The training report's picture: loss and validation accuracy per epoch, and the test split's
//! confusion matrix, as one PNG.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::trainer::EpochStats;

const FONT: &str = "sans-serif";

/// plotters draws text only with fonts it was given; ours is embedded so nothing depends on the
/// fonts a machine has.
fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_err()
        {
            tracing::warn!("the embedded font could not be loaded; plot text will be missing");
        }
    });
}

/// Draws the report as PNG bytes. `confusion[t][p]` counts test samples of true class `t`
/// predicted as `p`.
pub fn report_png(
    title: &str,
    history: &[EpochStats],
    confusion: &[Vec<usize>],
    labels: &[String],
) -> anyhow::Result<Vec<u8>> {
    // The bitmap backend encodes only to files; a temporary one keeps the caller's writes atomic.
    let file = tempfile::Builder::new().suffix(".png").tempfile()?;
    draw_report(file.path(), title, history, confusion, labels)?;
    Ok(std::fs::read(file.path())?)
}

fn draw_report(
    path: &Path,
    title: &str,
    history: &[EpochStats],
    confusion: &[Vec<usize>],
    labels: &[String],
) -> anyhow::Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (1280, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root.titled(title, (FONT, 22)).map_err(plot_error)?;
    let (curves, matrix) = root.split_horizontally(640);
    let (loss_area, accuracy_area) = curves.split_vertically(290);
    let epochs = history.len().max(1) as f64;

    let max_loss = history
        .iter()
        .map(|s| s.train_loss)
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.1;
    draw_curve(
        &loss_area,
        "training loss",
        epochs,
        0.0..max_loss,
        history.iter().map(|s| (s.epoch as f64, s.train_loss)),
        &RED,
    )?;
    let min_accuracy = history
        .iter()
        .map(|s| s.validation_accuracy)
        .fold(1.0, f64::min)
        .min(0.9);
    draw_curve(
        &accuracy_area,
        "validation accuracy",
        epochs,
        (min_accuracy - 0.02).max(0.0)..1.0,
        history
            .iter()
            .map(|s| (s.epoch as f64, s.validation_accuracy)),
        &BLUE,
    )?;
    draw_confusion(&matrix, confusion, labels)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn draw_curve<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    epochs: f64,
    y_range: std::ops::Range<f64>,
    points: impl Iterator<Item = (f64, f64)> + Clone,
    color: &RGBColor,
) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5..epochs + 0.5, y_range)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epochs as usize + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 13))
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
        .map_err(plot_error)?;
    chart
        .draw_series(points.map(|p| Circle::new(p, 4, color.filled())))
        .map_err(plot_error)?;
    Ok(())
}

fn draw_confusion<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    confusion: &[Vec<usize>],
    labels: &[String],
) -> anyhow::Result<()> {
    let n = confusion.len();
    let max = confusion
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "test confusion matrix (rows: true, columns: predicted)",
            (FONT, 16),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(85)
        .build_cartesian_2d(0.0..n as f64, n as f64..0.0)
        .map_err(plot_error)?;
    let label_at = |v: &f64| {
        let i = v.floor() as usize;
        if (v - v.floor() - 0.5).abs() < 1e-6 {
            labels.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(2 * n + 1)
        .y_labels(2 * n + 1)
        .x_label_formatter(&label_at)
        .y_label_formatter(&label_at)
        .label_style((FONT, 12))
        .draw()
        .map_err(plot_error)?;
    for (t, row) in confusion.iter().enumerate() {
        for (p, &count) in row.iter().enumerate() {
            let shade = (count as f64 / max).sqrt();
            let fill = RGBColor(
                (255.0 * (1.0 - 0.8 * shade)) as u8,
                (255.0 * (1.0 - 0.6 * shade)) as u8,
                255,
            );
            let (x, y) = (p as f64, t as f64);
            chart
                .draw_series([Rectangle::new([(x, y), (x + 1.0, y + 1.0)], fill.filled())])
                .map_err(plot_error)?;
            if count > 0 {
                let color = if shade > 0.6 { WHITE } else { BLACK };
                let style = TextStyle::from((FONT, 13).into_font()).color(&color).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ),
                );
                chart
                    .draw_series([Text::new(count.to_string(), (x + 0.5, y + 0.5), style)])
                    .map_err(plot_error)?;
            }
        }
    }
    Ok(())
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw the training report: {e}")
}
