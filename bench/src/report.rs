//! Output: the side-by-side table with ratios, the targets, the JSON record
//! and the SVG plots.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::harness::Target;
use crate::workloads::{Curve, Row};

/// One target of the issue, evaluated at the largest size measured.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub name: String,
    pub want: String,
    pub measured_at: Option<u64>,
    pub real: Option<f64>,
    pub bare: Option<f64>,
    pub ratio: Option<f64>,
    pub met: Option<bool>,
}

fn find<'a>(rows: &'a [Row], workload: &str, size: u64, target: Target) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.workload == workload && r.size == size && r.target == target)
}

fn largest_pair(rows: &[Row], workload: &str) -> Option<u64> {
    rows.iter()
        .filter(|r| r.workload == workload && r.target == Target::Real)
        .filter(|r| find(rows, workload, r.size, Target::Bare).is_some())
        .map(|r| r.size)
        .max()
}

fn ratio_check(
    rows: &[Row],
    name: &str,
    workload: &str,
    target_size: u64,
    metric: &str,
    higher_is_better: bool,
    bound: f64,
) -> TargetCheck {
    let size = largest_pair(rows, workload);
    let real = size.and_then(|s| find(rows, workload, s, Target::Real)?.metric(metric));
    let bare = size.and_then(|s| find(rows, workload, s, Target::Bare)?.metric(metric));
    let ratio = match (real, bare) {
        (Some(r), Some(b)) if b > 0.0 => Some(r / b),
        _ => None,
    };
    let reached_size = size == Some(target_size);
    // Judged only at the target size (smaller runs, e.g. --smoke, say so).
    let met = ratio.filter(|_| reached_size).map(|q| {
        if higher_is_better {
            q >= bound
        } else {
            q <= bound
        }
    });
    TargetCheck {
        name: name.to_owned(),
        want: format!(
            "{metric} real/bare {} {bound} at size {target_size}",
            if higher_is_better { ">=" } else { "<=" }
        ),
        measured_at: size,
        real,
        bare,
        ratio,
        met,
    }
}

pub fn targets(rows: &[Row]) -> Vec<TargetCheck> {
    let mut checks = vec![
        ratio_check(
            rows,
            "W1 throughput",
            "W1",
            20_000,
            "transitions_per_s",
            true,
            0.8,
        ),
        ratio_check(
            rows,
            "W1 delivery p99",
            "W1",
            20_000,
            "delivery_p99",
            false,
            1.25,
        ),
        ratio_check(rows, "W2 p100", "W2", 20_000, "p100", false, 1.25),
        ratio_check(
            rows,
            "W3 RSS per stream",
            "W3-mux",
            100_000,
            "bytes_per_stream",
            false,
            1.25,
        ),
        ratio_check(rows, "W4 RPS", "W4", 64, "rps", true, 0.5),
    ];
    // W3 must also have held every stream at that size.
    if let Some(c) = checks.get_mut(3)
        && let Some(size) = c.measured_at.filter(|s| *s == 100_000)
    {
        let all_ok = [Target::Real, Target::Bare]
            .iter()
            .all(|t| find(rows, "W3-mux", size, *t).is_some_and(|r| r.ok));
        c.met = c.met.map(|m| m && all_ok);
    }
    let conn_size = rows
        .iter()
        .filter(|r| r.workload == "W3-conn" && r.target == Target::Real)
        .map(|r| r.size)
        .max();
    let conn_row = conn_size.and_then(|s| find(rows, "W3-conn", s, Target::Real));
    let real = conn_row.and_then(|r| r.metric("bytes_per_connection"));
    let bare = conn_size
        .and_then(|s| find(rows, "W3-conn", s, Target::Bare))
        .and_then(|r| r.metric("bytes_per_connection"));
    checks.push(TargetCheck {
        name: "W3 RSS per connection".into(),
        want: "bytes_per_connection (real) <= 20480 at 20000 connections (>= 19000 accepted: fd limit)"
            .into(),
        measured_at: conn_size,
        real,
        bare,
        ratio: match (real, bare) {
            (Some(r), Some(b)) if b > 0.0 => Some(r / b),
            _ => None,
        },
        met: real
            .filter(|_| conn_size.is_some_and(|s| s >= 19_000))
            .map(|v| v <= 20_480.0 && conn_row.is_some_and(|r| r.ok)),
    });
    // PostgreSQL: the replicas' changes per second against the same
    // statements run a transaction per change from one connection.
    for r in rows.iter().filter(|r| {
        r.workload == "W1"
            && r.target == Target::Real
            && r.metric("floor_changes_per_s_single").is_some()
    }) {
        let real = r.metric("transitions_per_s");
        let floor = r.metric("floor_changes_per_s_single");
        let ratio = match (real, floor) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        checks.push(TargetCheck {
            name: format!(
                "PG W1 changes/s, {} replicas, J={}",
                r.metric("replicas").unwrap_or(1.0),
                r.size
            ),
            want: "transitions_per_s (real) >= the storage floor's a-transaction-per-change rate"
                .into(),
            measured_at: Some(r.size),
            real,
            bare: floor,
            ratio,
            met: ratio.map(|q| q >= 1.0).filter(|_| r.ok),
        });
    }
    checks
}

fn fmt_value(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// One operation's server CPU against its durable floor: what the bare
/// server spends on the same operation plus what its storage costs done
/// the cheapest correct way (`storage-floor`).
#[derive(Debug, Clone, Serialize)]
pub struct FloorLine {
    pub operation: String,
    /// µs of server CPU per operation.
    pub real_us: f64,
    pub bare_us: Option<f64>,
    pub storage_floor_us: Option<f64>,
    pub durable_floor_us: Option<f64>,
    pub real_over_bare: Option<f64>,
    pub real_over_floor: Option<f64>,
    /// What handing the operation to a writer thread and back costs: the
    /// bare server with the hand-off less the bare server, in the same run
    /// (`--targets bare,hand-off,real`). Never part of the floor: it is set
    /// beside it, with real ÷ (durable floor + hand-off).
    pub hand_off_us: Option<f64>,
    pub real_over_floor_with_hand_off: Option<f64>,
    /// PostgreSQL's own CPU per operation under the real servers and under
    /// the floor (None on SQLite).
    pub db_real_us: Option<f64>,
    pub db_floor_us: Option<f64>,
    /// The target: real ÷ durable floor ≤ 1.3 (SQLite only).
    pub met: Option<bool>,
}

/// The target for real ÷ durable floor (server CPU per operation).
pub const FLOOR_TARGET: f64 = 1.3;

/// One row per workload, size and target of `runs` (in the order they
/// first ran), each figure the median of that row's runs: on a shared host
/// one run moves by 10–25 %, a median of several much less. A figure only
/// some runs have is the median of those; a row is ok only if every run
/// was.
pub fn medians(runs: &[Row]) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for run in runs {
        let same =
            |r: &&Row| r.workload == run.workload && r.size == run.size && r.target == run.target;
        if out.iter().any(|r| same(&r)) {
            continue;
        }
        let group: Vec<&Row> = runs.iter().filter(same).collect();
        let mut row = Row {
            workload: run.workload,
            size: run.size,
            target: run.target,
            metrics: Vec::new(),
            ok: group.iter().all(|r| r.ok),
            notes: Vec::new(),
        };
        for metric in &run.metrics {
            let mut values: Vec<f64> = group.iter().filter_map(|r| r.metric(metric.name)).collect();
            values.sort_by(f64::total_cmp);
            let mid = values.len() / 2;
            let median = if values.len().is_multiple_of(2) {
                (values[mid - 1] + values[mid]) / 2.0
            } else {
                values[mid]
            };
            row.put(metric.name, metric.unit, median);
        }
        for note in group.iter().flat_map(|r| &r.notes) {
            if !row.notes.contains(note) {
                row.notes.push(note.clone());
            }
        }
        row.notes
            .push(format!("figures: medians of {} runs", group.len()));
        out.push(row);
    }
    out
}

/// Every operation with a CPU figure on a real row, against its floor.
pub fn durable_floor(rows: &[Row]) -> Vec<FloorLine> {
    // (workload, real/bare CPU metric, storage floor metric, name, whether
    // the operation is a change the server hands to its writer)
    const OPS: [(&str, &str, &str, &str, bool); 5] = [
        (
            "W1",
            "cpu_per_transition",
            "floor_transition_us",
            "W1 transition (1 call + 2 deliveries)",
            true,
        ),
        (
            "W1",
            "open_cpu_per_stream",
            "floor_open_us",
            "WatchJob open (snapshot included)",
            false,
        ),
        (
            "W1",
            "create_cpu_per_job",
            "floor_create_us",
            "CreateJob (W1 set-up)",
            true,
        ),
        (
            "W4",
            "server_cpu_per_call",
            "floor_call_us",
            "W4 MarkComplete",
            true,
        ),
        (
            "W4",
            "create_cpu_per_job",
            "floor_create_us",
            "CreateJob (W4 set-up)",
            true,
        ),
    ];
    let mut lines = Vec::new();
    for (workload, cpu, floor, name, hands_off) in OPS {
        for real in rows
            .iter()
            .filter(|r| r.workload == workload && r.target == Target::Real && r.ok)
        {
            let Some(real_us) = real.metric(cpu) else {
                continue;
            };
            // Zero means nothing measurable for the whole phase (a tiny
            // run, or a CPU figure read in 10 ms ticks): unknown, not free.
            let bare_us = find(rows, workload, real.size, Target::Bare)
                .and_then(|b| b.metric(cpu))
                .filter(|b| *b > 0.0);
            let storage_floor_us = real.metric(floor);
            let durable_floor_us = match (bare_us, storage_floor_us) {
                (Some(b), Some(f)) => Some(b + f),
                _ => None,
            };
            let ratio = |d: Option<f64>| d.filter(|d| *d > 0.0).map(|d| real_us / d);
            let real_over_floor = ratio(durable_floor_us);
            let hand_off_us = find(rows, workload, real.size, Target::HandOff)
                .filter(|h| h.ok && hands_off)
                .and_then(|h| h.metric(cpu))
                .zip(bare_us)
                .map(|(h, b)| h - b);
            let with_hand_off = durable_floor_us.zip(hand_off_us).map(|(f, h)| f + h);
            let size = match workload {
                "W1" => format!(", J={}", real.size),
                _ => String::new(),
            };
            let db = |m: &str| crate::workloads::db_metric(m).and_then(|n| real.metric(n));
            let (db_real_us, db_floor_us) = (db(cpu), db(floor));
            // The CPU target is SQLite's: on PostgreSQL much of the work
            // is the database's, reported beside it, and the target is
            // throughput (see `targets`).
            let postgres = db_real_us.is_some() || db_floor_us.is_some();
            lines.push(FloorLine {
                operation: format!("{name}{size}"),
                real_us,
                bare_us,
                storage_floor_us,
                durable_floor_us,
                real_over_bare: ratio(bare_us),
                real_over_floor,
                hand_off_us,
                real_over_floor_with_hand_off: ratio(with_hand_off),
                db_real_us,
                db_floor_us,
                met: real_over_floor
                    .filter(|_| !postgres)
                    .map(|r| r <= FLOOR_TARGET),
            });
        }
    }
    lines
}

/// The durable-floor table: µs of server CPU per operation.
pub fn floor_table(lines: &[FloorLine]) -> String {
    let mut out = String::new();
    if lines.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\nServer CPU per operation against the durable floor (bare + storage floor), µs; target real/floor <= {FLOOR_TARGET}x"
    );
    let _ = writeln!(
        out,
        "  {:<48} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}  target",
        "operation", "real", "bare", "storage", "floor", "real/bare", "real/floor"
    );
    let opt = |v: Option<f64>| v.map(fmt_value).unwrap_or_else(|| "-".into());
    let times = |v: Option<f64>| v.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into());
    let hand_off = lines.iter().any(|l| l.hand_off_us.is_some());
    for l in lines.iter() {
        let _ = writeln!(
            out,
            "  {:<48} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}  {}",
            l.operation,
            fmt_value(l.real_us),
            opt(l.bare_us),
            opt(l.storage_floor_us),
            opt(l.durable_floor_us),
            times(l.real_over_bare),
            times(l.real_over_floor),
            match l.met {
                Some(true) => "MET",
                Some(false) => "NOT MET",
                None => "-",
            }
        );
    }
    if hand_off {
        let _ = writeln!(
            out,
            "\nBeside the floor: the hand-off to a writer thread and back (bare server with --hand-off less bare), µs"
        );
        let _ = writeln!(
            out,
            "  {:<48} {:>8} {:>8} {:>16}",
            "operation", "real", "hand-off", "real/(floor+h)"
        );
        for l in lines.iter().filter(|l| l.hand_off_us.is_some()) {
            let _ = writeln!(
                out,
                "  {:<48} {:>8} {:>8} {:>16}",
                l.operation,
                fmt_value(l.real_us),
                opt(l.hand_off_us),
                times(l.real_over_floor_with_hand_off)
            );
        }
    }
    if lines
        .iter()
        .any(|l| l.db_real_us.is_some() || l.db_floor_us.is_some())
    {
        let _ = writeln!(
            out,
            "\nPostgreSQL's own CPU per operation (all its processes), µs: the real servers' against the floor's"
        );
        let _ = writeln!(out, "  {:<48} {:>8} {:>8}", "operation", "real", "floor");
        for l in lines
            .iter()
            .filter(|l| l.db_real_us.is_some() || l.db_floor_us.is_some())
        {
            let _ = writeln!(
                out,
                "  {:<48} {:>8} {:>8}",
                l.operation,
                opt(l.db_real_us),
                opt(l.db_floor_us)
            );
        }
    }
    out
}

/// The side-by-side table: each figure for real, bare and their ratio.
pub fn table(rows: &[Row], checks: &[TargetCheck]) -> String {
    let mut out = String::new();
    let mut groups: Vec<(&str, u64)> = Vec::new();
    for r in rows {
        if !groups.contains(&(r.workload, r.size)) {
            groups.push((r.workload, r.size));
        }
    }
    for (workload, size) in groups {
        let real = find(rows, workload, size, Target::Real);
        let bare = find(rows, workload, size, Target::Bare);
        let hand_off = find(rows, workload, size, Target::HandOff);
        let size_name = match workload {
            "W1" => "J",
            "W2" => "W",
            "W4" => "in-flight",
            _ => "N",
        };
        let status = |r: Option<&Row>| match r {
            Some(r) if r.ok => "ok",
            Some(_) => "FAILED",
            None => "-",
        };
        let _ = writeln!(
            out,
            "\n{workload} {size_name}={size}   (real: {}, bare: {}{})",
            status(real),
            status(bare),
            hand_off
                .map(|h| format!(", hand-off: {}", status(Some(h))))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>12} {:>12} {:>10}",
            "figure", "real", "bare", "real/bare"
        );
        let base = real.or(bare);
        for m in base.map(|r| r.metrics.as_slice()).unwrap_or_default() {
            let rv = real.and_then(|r| r.metric(m.name));
            let bv = bare.and_then(|r| r.metric(m.name));
            let ratio = match (rv, bv) {
                (Some(a), Some(b)) if b != 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            let name = if m.unit.is_empty() {
                m.name.to_owned()
            } else {
                format!("{} ({})", m.name, m.unit)
            };
            let _ = writeln!(
                out,
                "  {:<24} {:>12} {:>12} {:>10}",
                name,
                rv.map(fmt_value).unwrap_or_else(|| "-".into()),
                bv.map(fmt_value).unwrap_or_else(|| "-".into()),
                ratio
            );
        }
        for r in [real, bare, hand_off].into_iter().flatten() {
            for n in &r.notes {
                let _ = writeln!(out, "  note ({}): {n}", r.target.name());
            }
        }
    }
    let _ = writeln!(out, "\nTargets");
    for c in checks {
        let verdict = match c.met {
            Some(true) => "MET",
            Some(false) => "NOT MET",
            None => "not at size",
        };
        let _ = writeln!(
            out,
            "  {:<22} {:<13} ratio {:>8}  at {:>7}  want {}",
            c.name,
            verdict,
            c.ratio
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "-".into()),
            c.measured_at
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            c.want
        );
    }
    out
}

type Series = (String, Vec<(f64, f64)>);

fn series(rows: &[Row], workload: &str, metric: &str, target: Target) -> Series {
    let mut points: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.workload == workload && r.target == target && r.ok)
        .filter_map(|r| Some((r.size as f64, r.metric(metric)?.max(0.001))))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    (format!("{metric} {}", target.name()), points)
}

fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 1.0..10.0;
    }
    (lo / 1.5).max(1e-3)..(hi * 1.5).max(lo * 2.0)
}

const COLORS: [RGBColor; 6] = [
    RGBColor(200, 30, 30),
    RGBColor(30, 90, 200),
    RGBColor(230, 130, 20),
    RGBColor(30, 160, 90),
    RGBColor(140, 50, 170),
    RGBColor(90, 90, 90),
];

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    all: &[Series],
    log_y: bool,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("plot: {e:?}");
    let xs = log_range(all.iter().flat_map(|s| s.1.iter().map(|p| p.0)));
    let ys = log_range(all.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_labels(8)
                .y_labels(10)
                .x_desc(x_desc)
                .y_desc(y_desc)
                .draw()
                .map_err(err)?;
            for (i, (name, points)) in all.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(err)?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                    .map_err(err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.85))
                .draw()
                .map_err(err)?;
        }};
    }
    if log_y {
        body!(
            builder
                .build_cartesian_2d(xs.log_scale(), ys.log_scale())
                .map_err(err)?
        );
    } else {
        let lin_x = 0.0..xs.end;
        let lin_y = 0.0..ys.end;
        body!(builder.build_cartesian_2d(lin_x, lin_y).map_err(err)?);
    }
    Ok(())
}

/// Delivery latency per workload: W1 (p50, p99 vs J) and W2 (p50, p99,
/// p100 vs W), real against bare.
pub fn plot_latency(rows: &[Row], path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (1300, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| format!("plot: {e:?}"))?;
    let panels = root.split_evenly((1, 2));
    let mut w1 = Vec::new();
    let mut w2 = Vec::new();
    for t in [Target::Real, Target::Bare] {
        w1.push(series(rows, "W1", "delivery_p50", t));
        w1.push(series(rows, "W1", "delivery_p99", t));
        w2.push(series(rows, "W2", "p50", t));
        w2.push(series(rows, "W2", "p100", t));
    }
    draw_panel(
        &panels[0],
        "W1 pairs: delivery latency (RPC start to receipt)",
        "jobs J (2J streams)",
        "ms",
        &w1,
        true,
    )?;
    draw_panel(
        &panels[1],
        "W2 hot job: delivery latency over W watchers",
        "watchers W",
        "ms",
        &w2,
        true,
    )?;
    root.present().map_err(|e| format!("plot: {e:?}"))
}

/// Server RSS against open idle streams (W3), real against bare.
pub fn plot_rss(curves: &[Curve], path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (1300, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| format!("plot: {e:?}"))?;
    let panels = root.split_evenly((1, 2));
    let pick = |prefix: &str| -> Vec<Series> {
        curves
            .iter()
            .filter(|c| c.name.starts_with(prefix))
            .map(|c| (c.name.clone(), c.points.clone()))
            .collect()
    };
    draw_panel(
        &panels[0],
        "W3 idle streams, many per HTTP/2 connection",
        "open streams",
        "server RSS (MiB)",
        &pick("W3-mux"),
        false,
    )?;
    draw_panel(
        &panels[1],
        "W3 idle streams, one per connection",
        "open connections",
        "server RSS (MiB)",
        &pick("W3-conn"),
        false,
    )?;
    root.present().map_err(|e| format!("plot: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: Target, cpu: f64, ok: bool) -> Row {
        let mut row = Row::new("W4", 64, target);
        row.put("server_cpu_per_call", "us", cpu);
        row.ok = ok;
        row
    }

    /// Each workload, size and target becomes one row of medians, in the
    /// order they first ran, ok only if every run was.
    #[test]
    fn repeated_runs_are_reported_as_medians() {
        let runs = [
            run(Target::Bare, 12.0, true),
            run(Target::Real, 40.0, true),
            run(Target::Bare, 11.0, true),
            run(Target::Real, 31.0, true),
            run(Target::Bare, 30.0, true),
            run(Target::Real, 33.0, false),
        ];
        let rows = medians(&runs);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].target, Target::Bare);
        assert_eq!(rows[0].metric("server_cpu_per_call"), Some(12.0));
        assert!(rows[0].ok);
        assert_eq!(rows[1].metric("server_cpu_per_call"), Some(33.0));
        assert!(!rows[1].ok);
        // An even count takes the middle two's mean.
        let rows = medians(&runs[..4]);
        assert_eq!(rows[0].metric("server_cpu_per_call"), Some(11.5));
        assert_eq!(rows[1].metric("server_cpu_per_call"), Some(35.5));
    }

    /// The hand-off stands beside the floor for changes only: bare with
    /// the hand-off less bare, and real ÷ (floor + hand-off); the floor and
    /// its verdict do not move.
    #[test]
    fn the_hand_off_is_set_beside_the_floor_of_changes() {
        let mut real = run(Target::Real, 30.0, true);
        real.put("floor_call_us", "us", 12.0);
        real.put("create_cpu_per_job", "us", 26.0);
        real.put("floor_create_us", "us", 10.0);
        let mut bare = run(Target::Bare, 11.0, true);
        bare.put("create_cpu_per_job", "us", 12.0);
        let mut hand_off = run(Target::HandOff, 14.0, true);
        hand_off.put("create_cpu_per_job", "us", 16.0);
        let lines = durable_floor(&[bare.clone(), hand_off, real.clone()]);
        let call = &lines[0];
        assert_eq!(call.durable_floor_us, Some(23.0));
        assert_eq!(call.hand_off_us, Some(3.0));
        assert_eq!(call.real_over_floor_with_hand_off, Some(30.0 / 26.0));
        assert_eq!(
            call.met,
            Some(false),
            "30 / 23 is over 1.3 whatever the hand-off"
        );
        assert_eq!(lines[1].hand_off_us, Some(4.0));
        // Without a hand-off run there is nothing beside the floor.
        let lines = durable_floor(&[bare, real]);
        assert_eq!(lines[0].hand_off_us, None);
        assert_eq!(lines[0].real_over_floor_with_hand_off, None);
        assert!(!floor_table(&lines).contains("hand-off"));
    }
}
