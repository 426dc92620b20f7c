//! The reliability diagram of `mgecl evaluate --plot`: accuracy against confidence (the top
//! probability) in 15 equal-width bins, the diagonal of perfect calibration, each bin's gap to
//! it, and the share of answers per bin.

use std::path::Path;

use image::ImageEncoder;
use mgecl::Error;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// DejaVu Sans (Bitstream Vera licence, `fonts/LICENSE`), so that labels render the same on
/// every machine without system fonts.
const FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
const BINS: usize = 15;

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::backend(format!("reliability diagram: {e}"))
}

/// Draws the diagram of `answers` (top probability, correct) to a PNG at `path` (written
/// atomically), titled `title`.
///
/// # Errors
/// [`Error::InvalidArgument`] for no answers; [`Error::Io`] when `path` cannot be written.
pub fn reliability_diagram(answers: &[(f64, bool)], title: &str, path: &Path) -> Result<(), Error> {
    if answers.is_empty() {
        return Err(Error::InvalidArgument("no answers to plot".into()));
    }
    // Per bin: count, summed confidence, correct answers.
    let mut bins = [(0usize, 0f64, 0usize); BINS];
    for &(p, ok) in answers {
        let b = ((p * BINS as f64) as usize).min(BINS - 1);
        bins[b].0 += 1;
        bins[b].1 += p;
        bins[b].2 += usize::from(ok);
    }
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let (w, h) = (720u32, 720u32);
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (top, bottom) = root.split_vertically(560);
        let mut chart = ChartBuilder::on(&top)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("confidence (top probability)")
            .y_desc("accuracy")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_error)?;
        let width = 1.0 / BINS as f64;
        let filled: Vec<(f64, f64, f64)> = bins
            .iter()
            .enumerate()
            .filter(|(_, b)| b.0 > 0)
            .map(|(i, b)| (i as f64 * width, b.2 as f64 / b.0 as f64, b.1 / b.0 as f64))
            .collect();
        chart
            .draw_series(filled.iter().map(|&(lo, acc, _)| {
                Rectangle::new([(lo, 0.0), (lo + width, acc)], BLUE.mix(0.55).filled())
            }))
            .map_err(plot_error)?
            .label("accuracy")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 14, y + 5)], BLUE.mix(0.55).filled())
            });
        chart
            .draw_series(filled.iter().map(|&(lo, acc, conf)| {
                Rectangle::new(
                    [(lo + 0.2 * width, acc), (lo + 0.8 * width, conf)],
                    RED.mix(0.45).filled(),
                )
            }))
            .map_err(plot_error)?
            .label("gap to mean confidence")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], RED.mix(0.45).filled()));
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                BLACK.stroke_width(1),
            ))
            .map_err(plot_error)?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK.mix(0.3))
            .background_style(WHITE.mix(0.9))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(plot_error)?;
        // Share of answers per bin (most answers sit in the last bins of a good model).
        let total = answers.len() as f64;
        let mut share = ChartBuilder::on(&bottom)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(plot_error)?;
        share
            .configure_mesh()
            .y_desc("share of answers")
            .y_labels(3)
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(plot_error)?;
        share
            .draw_series(
                bins.iter()
                    .enumerate()
                    .filter(|(_, b)| b.0 > 0)
                    .map(|(i, b)| {
                        let lo = i as f64 * width;
                        Rectangle::new(
                            [(lo, 0.0), (lo + width, b.0 as f64 / total)],
                            BLACK.mix(0.4).filled(),
                        )
                    }),
            )
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&pixels, w, h, image::ExtendedColorType::Rgb8)
        .map_err(plot_error)?;
    mgecl::internals::write_file(path, &png)
}
