//! `progress.png`: losses, pseudo Dice with its EMA, learning rate and epoch time over the epochs,
//! redrawn after every epoch (plotters, with an embedded font so no system fonts are needed).

use crate::EpochLog;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER_FONT: Once = Once::new();

type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
) -> Result<(), String> {
    let points = series.iter().flat_map(|(_, p, _)| p.iter()).filter(|(_, y)| y.is_finite());
    let (mut lo, mut hi) = points.fold((f64::MAX, f64::MIN), |(lo, hi), &(_, y)| (lo.min(y), hi.max(y)));
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let epochs = series.iter().map(|(_, p, _)| p.len()).max().unwrap_or(1).max(2) as f64;
    let margin = 0.05 * (hi - lo);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..epochs - 1.0, (lo - margin)..(hi + margin))
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc("epoch").label_style(("sans-serif", 12)).draw().map_err(|e| e.to_string())?;
    for (name, points, color) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.iter().copied().filter(|(_, y)| y.is_finite()), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// Draws the training curves of `logs` to `path` (PNG), atomically.
pub fn plot_progress(path: &Path, logs: &[EpochLog]) -> nntools_io::Result<()> {
    REGISTER_FONT.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
    let curve = |f: &dyn Fn(&EpochLog) -> f64| logs.iter().map(|l| (l.epoch as f64, f(l))).collect::<Vec<_>>();
    let draw = |tmp: &Path| -> Result<(), String> {
        let root = BitMapBackend::new(tmp, (900, 1100)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((4, 1));
        panel(
            &areas[0],
            "loss",
            &[("train", curve(&|l| l.train_loss), BLUE), ("validation", curve(&|l| l.val_loss), RED)],
        )?;
        panel(
            &areas[1],
            "pseudo Dice (foreground mean)",
            &[
                ("pseudo Dice", curve(&EpochLog::mean_pseudo_dice), GREEN),
                ("EMA", curve(&|l| l.ema_pseudo_dice), BLACK),
            ],
        )?;
        panel(&areas[2], "learning rate", &[("lr", curve(&|l| l.lr), MAGENTA)])?;
        panel(&areas[3], "epoch time (s)", &[("seconds", curve(&|l| l.epoch_time_s), CYAN)])?;
        root.present().map_err(|e| e.to_string())
    };
    nntools_io::write_atomically(path, |tmp| draw(tmp).map_err(|p| nntools_io::Error::runtime(path, p)))
}
