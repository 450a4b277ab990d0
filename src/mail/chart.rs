//! The usage chart of an org-day as a PNG (plotters, with an embedded font so it draws the
//! same on every machine): on top the running total through the local day against the
//! allotment line, the threshold crossings marked; below it the units of each hour. Hour
//! labels are local clock hours; both axes name their units.

use std::sync::Once;

use anyhow::anyhow;
use plotters::coord::combinators::BindKeyPoints;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::format::thousands;
use crate::report::{Chart, CHART_H, CHART_W};

/// DejaVu Sans, cut down to ASCII (assets/fonts/LICENSE).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "creditd-sans";

fn register_font() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut failed = false;
    ONCE.call_once(|| {
        failed = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err();
    });
    if failed {
        return Err(anyhow!("chart: the embedded font does not load"));
    }
    Ok(())
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("chart: {e}")
}

/// A figure short enough for an axis: `12,500`, `1.2M`.
fn short(n: u64) -> String {
    if n >= 10_000_000 {
        format!("{:.0}M", n as f64 / 1e6)
    } else if n >= 1_000_000 {
        format!("{:.1}M", n as f64 / 1e6)
    } else {
        thousands(n)
    }
}

const BLUE: RGBColor = RGBColor(9, 105, 218);
const RED: RGBColor = RGBColor(207, 34, 46);
const AMBER: RGBColor = RGBColor(191, 135, 0);
const GREY: RGBColor = RGBColor(87, 96, 106);
const LIGHT: RGBColor = RGBColor(234, 238, 242);

/// Draws `c` as a `CHART_W`×`CHART_H` PNG.
pub fn chart_png(c: &Chart) -> anyhow::Result<Vec<u8>> {
    register_font()?;
    let (w, h) = (CHART_W, CHART_H);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (upper, lower) = root.split_vertically(h * 64 / 100);
        let label = |size: u32| (FAMILY, size).into_font().color(&GREY);

        // The running total, one point per five minutes.
        let slots = c.per_5min.len().max(1);
        let mut running = Vec::with_capacity(slots + 1);
        let mut sum = 0u64;
        running.push((0i64, 0u64));
        for (i, u) in c.per_5min.iter().enumerate() {
            sum = sum.saturating_add(*u);
            running.push((i as i64 + 1, sum));
        }
        let top = sum.max(c.allotted).max(1);
        let ymax = top.saturating_add(top / 8).max(1);
        let hours = c.hour_labels.len().max(1);
        // Every third hour, within the day (a 23.5-hour day ends between two ticks).
        let ticks: Vec<i64> = (0..=hours)
            .step_by(3)
            .map(|hr| (hr * 12) as i64)
            .filter(|t| *t <= slots as i64)
            .collect();
        let hour_of = |slot: i64| -> String {
            let hr = (slot / 12) as usize;
            c.hour_labels
                .get(hr)
                .cloned()
                .unwrap_or_else(|| c.hour_labels.first().cloned().unwrap_or_default())
        };
        let mut chart = ChartBuilder::on(&upper)
            .margin_top(8)
            .margin_right(14)
            .margin_left(4)
            .x_label_area_size(18)
            .y_label_area_size(58)
            .caption(
                format!("Running total of {} through the local day", c.unit),
                label(15),
            )
            .build_cartesian_2d(
                (0i64..(slots as i64)).with_key_points(ticks.clone()),
                0u64..ymax,
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(LIGHT)
            .bold_line_style(LIGHT)
            .axis_style(GREY)
            .label_style(label(13))
            .x_label_formatter(&|x| hour_of(*x))
            .y_label_formatter(&|y| short(*y))
            .y_labels(5)
            .draw()
            .map_err(err)?;
        if c.allotted > 0 {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0, c.allotted), (slots as i64, c.allotted)],
                    6,
                    4,
                    RED.stroke_width(2),
                ))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("allotment {}", thousands(c.allotted)),
                    (2, c.allotted.saturating_add(ymax / 10)),
                    (FAMILY, 13).into_font().color(&RED),
                )))
                .map_err(err)?;
        }
        chart
            .draw_series(LineSeries::new(running.clone(), BLUE.stroke_width(2)))
            .map_err(err)?;
        for (name, slot) in &c.crossings {
            let x = (*slot as i64 + 1).min(slots as i64);
            let y = running.get(x as usize).map_or(0, |p| p.1).min(ymax);
            let color = if name.starts_with("over") { RED } else { AMBER };
            chart
                .draw_series(std::iter::once(Circle::new((x, y), 4, color.filled())))
                .map_err(err)?;
            // The label sits above and left of the mark, clear of the rising line.
            let dx = -(slots as i64) / 14;
            chart
                .draw_series(std::iter::once(Text::new(
                    name.clone(),
                    ((x + dx).max(1), y.saturating_add(ymax / 7).min(ymax)),
                    (FAMILY, 13).into_font().color(&color),
                )))
                .map_err(err)?;
        }

        // The hourly bars.
        let hmax = c.hourly.iter().copied().max().unwrap_or(0).max(1);
        // On the same axis as the running total (five-minute slots), so the panels line up
        // and the last hour of a 23.5-hour day is drawn as long as it is.
        let mut bars = ChartBuilder::on(&lower)
            .margin_right(14)
            .margin_left(4)
            .margin_bottom(4)
            .x_label_area_size(30)
            .y_label_area_size(58)
            .caption(format!("{} per hour", c.unit), label(14))
            .build_cartesian_2d(
                (0i64..(slots as i64)).with_key_points(ticks),
                0u64..hmax.saturating_add(hmax / 10).max(1),
            )
            .map_err(err)?;
        bars.configure_mesh()
            .disable_x_mesh()
            .light_line_style(LIGHT)
            .bold_line_style(LIGHT)
            .axis_style(GREY)
            .label_style(label(13))
            .x_label_formatter(&|x| hour_of(*x))
            .y_label_formatter(&|y| short(*y))
            .y_labels(4)
            .x_desc(format!("local time, {}", c.zone))
            .draw()
            .map_err(err)?;
        bars.draw_series(c.hourly.iter().enumerate().map(|(i, u)| {
            let (from, to) = (i as i64 * 12, ((i as i64 + 1) * 12).min(slots as i64));
            Rectangle::new([(from, 0), (to, *u)], BLUE.mix(0.55).filled())
        }))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&rgb)?;
    }
    Ok(png_bytes)
}
