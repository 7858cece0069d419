//! `bench/results.png`: one labelled horizontal bar per ratio figure (unit `x`), green
//! when its target is met, red when missed, grey without a target. Text is drawn with
//! DejaVu Sans from Debian's `fonts-dejavu-core` (installed by setup).

use std::{fs, path::Path};

use anyhow::{Context as _, anyhow};
use plotters::{
    prelude::*,
    style::{FontStyle, register_font},
};

use super::Measurement;

const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT: &str = "sans-serif";

/// Where things go on the chart, in pixels.
struct Layout {
    width: u32,
    /// Height of one bar's row.
    row: u32,
    /// Height of the title and the machine line above the first row.
    header: u32,
    /// Where the bars start: the labels are left of it.
    label_width: i32,
    margin: i32,
}

const LAYOUT: Layout = Layout {
    width: 1400,
    row: 44,
    header: 90,
    label_width: 560,
    margin: 20,
};

pub fn draw(path: &Path, title: String, measurements: &[Measurement]) -> anyhow::Result<()> {
    let bytes = fs::read(FONT_FILE)
        .with_context(|| format!("reading {FONT_FILE} (apt-get install fonts-dejavu-core)"))?;
    // plotters keeps registered fonts for the whole process.
    register_font(FONT, FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| anyhow!("{FONT_FILE} is not a usable font"))?;
    let bars: Vec<&Measurement> = measurements.iter().filter(|m| m.unit == "x").collect();
    let rows = u32::try_from(bars.len())?.max(1);
    let height = LAYOUT.header + rows * LAYOUT.row + 30;
    let root = BitMapBackend::new(path, (LAYOUT.width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    root.draw(&Text::new(
        "xdplb benchmark ratios (x)".to_owned(),
        (LAYOUT.margin, 14),
        (FONT, 28).into_font().color(&BLACK),
    ))
    .map_err(plot_error)?;
    root.draw(&Text::new(
        title,
        (LAYOUT.margin, 52),
        (FONT, 16).into_font().color(&RGBColor(80, 80, 80)),
    ))
    .map_err(plot_error)?;
    let largest = bars
        .iter()
        .map(|m| m.value)
        .filter(|v| v.is_finite())
        .fold(1.0_f64, f64::max);
    let span = f64::from(LAYOUT.width) - f64::from(LAYOUT.label_width) - 200.0;
    for (index, m) in bars.iter().enumerate() {
        let top = i32::try_from(LAYOUT.header + u32::try_from(index)? * LAYOUT.row)?;
        let color = match &m.target {
            Some(target) if target.met => RGBColor(46, 160, 67),
            Some(_) => RGBColor(207, 34, 46),
            None => RGBColor(140, 140, 140),
        };
        let label = format!("{}: {}", m.group, m.name);
        root.draw(&Text::new(
            label,
            (LAYOUT.margin, top + 10),
            (FONT, 16).into_font().color(&BLACK),
        ))
        .map_err(plot_error)?;
        let value = if m.value.is_finite() { m.value } else { 0.0 };
        // Truncation to whole pixels is intended.
        let length = ((value / largest) * span).max(2.0) as i32;
        root.draw(&Rectangle::new(
            [
                (LAYOUT.label_width, top + 6),
                (
                    LAYOUT.label_width + length,
                    top + i32::try_from(LAYOUT.row)? - 8,
                ),
            ],
            color.filled(),
        ))
        .map_err(plot_error)?;
        let target = m
            .target
            .as_ref()
            .map(|t| format!("  (target {})", t.text))
            .unwrap_or_default();
        root.draw(&Text::new(
            format!("{:.2}x{target}", m.value),
            (LAYOUT.label_width + length + 8, top + 10),
            (FONT, 16).into_font().color(&BLACK),
        ))
        .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow!("drawing the chart: {error:?}")
}
