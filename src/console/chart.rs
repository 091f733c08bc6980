//! A small SVG line chart, written on the server: lines of counts over
//! time on the left axis, an optional share (0–100 %) as a dashed line on
//! the right axis. Each point is a circle with its time and value in data
//! attributes and a tooltip, so the numbers can be read off the page.
//!
//! Written by hand: a chart crate (`plotters`) brings fonts and a drawing
//! backend for what is here a hundred lines of text.

use std::fmt::Write as _;

use super::page::esc;

/// One line: its name and (Unix seconds, value) points, in time order.
pub(crate) struct Line {
    pub(crate) name: String,
    pub(crate) points: Vec<(u64, f64)>,
}

/// Line colours (colour-blind safe, Okabe–Ito); the legend's classes
/// `c0`..`c7` and `share` in `console.css` use the same.
const COLOURS: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#999999",
];
const SHARE_COLOUR: &str = "#c0392b";

// Small enough that the text stays readable when a phone scales it down.
const W: f64 = 480.0;
const H: f64 = 220.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 30.0;

/// A round axis maximum at or above `max`.
fn nice_max(max: f64) -> f64 {
    // At least 4, so the four grid steps are whole numbers.
    if max <= 4.0 {
        return 4.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&m| m >= max)
        .unwrap_or(10.0 * p)
}

/// `HH:MM` UTC of a Unix time (with the day when points span days).
fn label(t: u64, with_day: bool) -> String {
    let (d, s) = (t / 86_400, t % 86_400);
    let mut hm = format!("{:02}:{:02}", s / 3600, s % 3600 / 60);
    if s % 60 != 0 {
        hm.push_str(&format!(":{:02}", s % 60));
    }
    if with_day {
        let (_, month, day) = crate::util::civil_date(i64::try_from(d).unwrap_or(0));
        format!("{month:02}-{day:02} {hm}")
    } else {
        hm
    }
}

/// The chart; `share` is the dashed right-axis line (percent).
#[allow(clippy::cast_precision_loss)] // times and counts far below 2^52
pub(crate) fn render(id: &str, lines: &[Line], share: Option<&Line>, step_s: u64) -> String {
    let times: Vec<u64> = lines
        .iter()
        .chain(share)
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .collect();
    let (t0, t1) = (
        times.iter().copied().min().unwrap_or(0),
        times.iter().copied().max().unwrap_or(0),
    );
    let span = (t1 - t0).max(step_s).max(1) as f64;
    let ymax = nice_max(
        lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |t: u64| LEFT + (t - t0) as f64 / span * pw;
    let y = |v: f64, max: f64| TOP + ph - v / max * ph;
    let n: usize = lines.iter().chain(share).map(|l| l.points.len()).sum();
    if n == 0 {
        return format!(
            "<svg id=\"{id}\" class=\"chart\" viewBox=\"0 0 {W} 40\" role=\"img\" data-points=\"0\" aria-label=\"{id}: no points\"><text class=\"axis\" x=\"{LEFT}\" y=\"24\">No client reported this in the points kept.</text></svg>"
        );
    }
    let mut out = format!(
        "<svg id=\"{id}\" class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" data-points=\"{n}\" aria-label=\"{}\">",
        esc(&format!("{id}: {n} points"))
    );
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let yy = y(v, ymax);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/><text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>",
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0
        );
        if share.is_some() {
            let _ = write!(
                out,
                "<text class=\"axis\" x=\"{}\" y=\"{:.1}\">{}%</text>",
                W - RIGHT + 6.0,
                yy + 4.0,
                25 * i
            );
        }
    }
    let with_day = t1 - t0 >= 86_400;
    for (t, anchor) in [(t0, "start"), (t1, "end")] {
        let _ = write!(
            out,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{} UTC</text>",
            x(t),
            H - 8.0,
            label(t, with_day)
        );
    }
    let all = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (l, COLOURS[i % COLOURS.len()], ymax, ""))
        .chain(share.map(|l| (l, SHARE_COLOUR, 100.0, " stroke-dasharray=\"6 4\"")));
    for (l, colour, max, dash) in all {
        let path: Vec<String> = l
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v, max)))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            path.join(" ")
        );
        for &(t, v) in &l.points {
            let _ = write!(
                out,
                "<circle class=\"pt\" data-series=\"{}\" data-t=\"{t}\" data-v=\"{v}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{}: {v} at {} UTC</title></circle>",
                esc(&l.name),
                x(t),
                y(v, max),
                esc(&l.name),
                label(t, true)
            );
        }
    }
    out.push_str("</svg><p class=legend>");
    // The legend carries each line's last value.
    let last = |l: &Line| {
        l.points
            .last()
            .map_or(String::new(), |p| format!("{}", p.1))
    };
    for (i, l) in lines.iter().enumerate() {
        let _ = write!(
            out,
            "<span><i class=\"c{}\"></i>{} <b>{}</b></span>",
            i % COLOURS.len(),
            esc(&l.name),
            last(l)
        );
    }
    if let Some(l) = share {
        let _ = write!(
            out,
            "<span><i class=\"share\"></i>{} <b>{}%</b> (right axis)</span>",
            esc(&l.name),
            last(l)
        );
    }
    out.push_str("</p>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round_and_times_are_utc() {
        assert_eq!(nice_max(0.0), 4.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(130.0), 200.0);
        assert_eq!(nice_max(2400.0), 2500.0);
        assert_eq!(label(0, true), "01-01 00:00");
        assert_eq!(
            label(1_798_761_600 + 3600 * 5 + 60 * 7, true),
            "01-01 05:07"
        );
    }

    #[test]
    fn every_point_is_drawn_with_its_value() {
        let lines = [Line {
            name: "0.9.0".into(),
            points: vec![(3600, 300.0), (7200, 100.0)],
        }];
        let share = Line {
            name: "OLD share".into(),
            points: vec![(3600, 75.0), (7200, 25.0)],
        };
        let svg = render("c", &lines, Some(&share), 3600);
        assert!(svg.contains("data-points=\"4\""), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("data-t=\"7200\" data-v=\"25\""));
    }
}
