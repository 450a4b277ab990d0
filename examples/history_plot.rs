//! Draws the history benchmark's series (`bench/history.sh`) as one PNG of three panels: ingest
//! wall time, peak RSS and state size per simulated day, each day as a dot and the median of 5
//! consecutive days as a line.
//!
//! `history_plot SERIES.tsv OUT.png` (the TSV `bench/history.sh` writes). Labels use DejaVu Sans
//! from the system (`/usr/share/fonts/truetype/dejavu`, Debian's `fonts-dejavu-core`), or the
//! font named by `HISTORY_PLOT_FONT`.

use std::collections::HashMap;

use anyhow::{bail, Context};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

const W: u32 = 1200;
const H: u32 = 1050;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [series, out] = args.as_slice() else {
        bail!("usage: history_plot SERIES.tsv OUT.png");
    };
    let font_path = std::env::var("HISTORY_PLOT_FONT")
        .unwrap_or_else(|_| "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into());
    let font: &'static [u8] = Vec::leak(
        std::fs::read(&font_path).with_context(|| format!("cannot read the font {font_path}"))?,
    );
    register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{font_path} is not a font"))?;

    let text = std::fs::read_to_string(series).with_context(|| format!("cannot read {series}"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .context("an empty series file")?
        .split('\t')
        .collect();
    let col: HashMap<&str, usize> = header.iter().enumerate().map(|(i, h)| (*h, i)).collect();
    let rows: Vec<Vec<f64>> = lines
        .map(|l| {
            l.split('\t')
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    if rows.is_empty() {
        bail!("{series} holds no day");
    }
    let get = |name: &str| -> anyhow::Result<Vec<(f64, f64)>> {
        let i = *col.get(name).with_context(|| format!("no column {name}"))?;
        Ok(rows.iter().map(|r| (r[0], r[i])).collect())
    };
    let days = rows.len() as f64;

    let mut rgb = vec![0u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((3, 1));
        let specs = [
            (
                "ingest wall time per day (s)",
                "ingest_s",
                "ingest_s_median5",
            ),
            (
                "peak RSS of the day's ingest (MiB)",
                "rss_mib",
                "rss_mib_median5",
            ),
            (
                "state directory after the day (MiB)",
                "state_mib",
                "state_mib_median5",
            ),
        ];
        for (area, (title, raw, smooth)) in panels.iter().zip(specs) {
            let raw = get(raw)?;
            let smooth = get(smooth)?;
            let top = raw
                .iter()
                .map(|p| p.1)
                .filter(|v| v.is_finite())
                .fold(0.0, f64::max)
                * 1.15;
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..days + 1.0, 0.0..top.max(1e-9))?;
            chart
                .configure_mesh()
                .x_desc("simulated day (one run per day, [retention] 30d)")
                .x_labels(13)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_labels(6)
                .label_style(("sans-serif", 15))
                .axis_desc_style(("sans-serif", 15))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()?;
            // The windows the targets compare.
            for (from, to) in [(11.0, 20.0), (41.0, 50.0), (111.0, 120.0)] {
                let (from, to) = (from * days / 120.0, to * days / 120.0);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(from - 0.5, 0.0), (to + 0.5, top)],
                    RGBColor(255, 243, 205).filled(),
                )))?;
            }
            chart
                .draw_series(
                    raw.iter()
                        .filter(|p| p.1.is_finite())
                        .map(|&p| Circle::new(p, 2, RGBColor(150, 170, 200).filled())),
                )?
                .label("each day")
                .legend(|(x, y)| Circle::new((x + 10, y), 3, RGBColor(150, 170, 200).filled()));
            chart
                .draw_series(LineSeries::new(
                    smooth.iter().copied().filter(|p| p.1.is_finite()),
                    RGBColor(20, 70, 160).stroke_width(2),
                ))?
                .label("median of 5 days")
                .legend(|(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], RGBColor(20, 70, 160).stroke_width(2))
                });
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(200, 200, 200))
                .draw()?;
        }
        root.present()?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, W, H);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(&rgb)?;
    }
    std::fs::write(out, png_bytes).with_context(|| format!("cannot write {out}"))?;
    Ok(())
}
