//! Rendering results: a markdown table, CSV, JSON, and a Pareto plot (cold-start ratio
//! against idle memory) as a self-contained SVG.

use crate::PolicyResult;
use std::fmt::Write;

fn precision(result: &PolicyResult) -> String {
    result
        .prewarm_precision
        .map_or("-".to_owned(), |p| format!("{p:.3}"))
}

/// The results as a markdown table.
pub fn markdown(results: &[PolicyResult]) -> String {
    let mut out = String::from(
        "| policy | knob | memory GiB | cold-start ratio | p75 function cold rate | critical cold/request | added p50 ms | added p99 ms | idle GB·s | wasted GB·s | pre-warm precision | pre-warm recall | policy µs/event | evictions | cold: first / busy / evicted / expired |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.4} | {:.4} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.3} | {:.2} | {} | {} / {} / {} / {} |",
            r.policy,
            r.knob,
            r.memory_mib as f64 / 1024.0,
            r.cold_start_ratio,
            r.p75_function_cold_rate,
            r.critical_cold_per_request,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.idle_gb_s,
            r.wasted_gb_s,
            precision(r),
            r.prewarm_recall,
            r.policy_us_per_event,
            r.stats.evictions,
            r.stats.cold_causes.first,
            r.stats.cold_causes.concurrent,
            r.stats.cold_causes.evicted,
            r.stats.cold_causes.expired,
        );
    }
    out
}

/// The results as CSV.
pub fn csv(results: &[PolicyResult]) -> String {
    let mut out = String::from(
        "policy,knob,memory_mib,requests,invocations,cold_starts,cold_start_ratio,p75_function_cold_rate,critical_cold_per_request,latency_p50_ms,latency_p99_ms,idle_gb_s,wasted_gb_s,prewarm_precision,prewarm_recall,policy_us_per_event,evictions,overcommits,cold_first,cold_concurrent,cold_evicted,cold_expired,prewarms_route_started,prewarms_route_used,prewarms_path_started,prewarms_path_used,prewarms_unplanned_started,prewarms_unplanned_used,template_gb_s,forked_starts,templates_started,spare_starts\n",
    );
    for r in results {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.3},{:.3},{:.3},{:.3},{},{:.6},{:.3},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{},{},{}",
            r.policy,
            r.knob,
            r.memory_mib,
            r.requests,
            r.stats.invocations,
            r.stats.cold_starts,
            r.cold_start_ratio,
            r.p75_function_cold_rate,
            r.critical_cold_per_request,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.idle_gb_s,
            r.wasted_gb_s,
            r.prewarm_precision
                .map_or(String::new(), |p| format!("{p:.6}")),
            r.prewarm_recall,
            r.policy_us_per_event,
            r.stats.evictions,
            r.stats.overcommits,
            r.stats.cold_causes.first,
            r.stats.cold_causes.concurrent,
            r.stats.cold_causes.evicted,
            r.stats.cold_causes.expired,
            r.stats.prewarm_sources.route_started,
            r.stats.prewarm_sources.route_used,
            r.stats.prewarm_sources.path_started,
            r.stats.prewarm_sources.path_used,
            r.stats.prewarm_sources.unplanned_started,
            r.stats.prewarm_sources.unplanned_used,
            r.template_gb_s,
            r.stats.forked_starts,
            r.stats.templates_started,
            r.stats.spare_starts,
        );
    }
    out
}

const COLORS: [&str; 8] = [
    "#7f7f7f", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#d62728", "#2ca02c",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Pareto plot: x = idle memory (GB·s, log scale), y = cold-start ratio; one point per
/// result, the points of one policy joined in knob order, the lower-left frontier dashed.
pub fn pareto_svg(results: &[PolicyResult], title: &str) -> String {
    let (width, height) = (760.0, 480.0);
    let (left, right, top, bottom) = (70.0, 170.0, 40.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    // Zero idle memory (no keep-alive) cannot sit on a log axis: it is drawn on the left
    // edge, a decade below the smallest positive value.
    let smallest = results
        .iter()
        .map(|r| r.idle_gb_s)
        .filter(|&x| x > 0.0)
        .fold(f64::MAX, f64::min);
    let floor = if smallest == f64::MAX {
        1.0
    } else {
        smallest / 10.0
    };
    let xs: Vec<f64> = results
        .iter()
        .map(|r| r.idle_gb_s.max(floor).log10())
        .collect();
    let (x_min, x_max) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let (x_min, x_max) = if results.is_empty() {
        (0.0, 1.0)
    } else {
        (x_min.floor(), x_max.ceil().max(x_min.floor() + 1.0))
    };
    let y_max = results
        .iter()
        .map(|r| r.cold_start_ratio)
        .fold(0.0f64, f64::max)
        .max(0.01)
        * 1.05;
    let px = |x: f64| left + (x - x_min) / (x_max - x_min) * plot_w;
    let py = |y: f64| top + plot_h - y / y_max * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r#"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let mut decade = x_min;
    while decade <= x_max + 1e-9 {
        let x = px(decade);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            top + plot_h,
            top + plot_h + 16.0,
            format_decade(decade)
        );
        decade += 1.0;
    }
    for i in 0..=5 {
        let y = y_max * f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{y:.3}</text>"##,
            left + plot_w,
            left - 6.0,
            py(y) + 4.0,
            py = py(y)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">idle memory, GB·s (log; 0 drawn at the left edge)</text>"#,
        left + plot_w / 2.0,
        height - 12.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">cold-start ratio</text>"#,
        top + plot_h / 2.0
    );
    // Frontier: points not dominated by any other (lower or equal in both, lower in one).
    let mut frontier: Vec<(f64, f64)> = results
        .iter()
        .zip(&xs)
        .filter(|(r, _)| {
            !results.iter().any(|o| {
                o.idle_gb_s <= r.idle_gb_s
                    && o.cold_start_ratio <= r.cold_start_ratio
                    && (o.idle_gb_s < r.idle_gb_s || o.cold_start_ratio < r.cold_start_ratio)
            })
        })
        .map(|(r, &x)| (px(x), py(r.cold_start_ratio)))
        .collect();
    frontier.sort_by(|a, b| a.0.total_cmp(&b.0));
    if frontier.len() > 1 {
        let points: Vec<String> = frontier
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="black" stroke-dasharray="4 3"/>"#,
            points.join(" ")
        );
    }
    let mut names: Vec<&str> = Vec::new();
    for r in results {
        if !names.contains(&r.policy.as_str()) {
            names.push(&r.policy);
        }
    }
    for (n, name) in names.iter().enumerate() {
        let color = baton_core::policy::spec::PolicyName::ALL
            .iter()
            .position(|p| p.as_str() == *name)
            .map_or(COLORS[n % COLORS.len()], |i| COLORS[i]);
        let mut points: Vec<(f64, f64, &PolicyResult)> = results
            .iter()
            .zip(&xs)
            .filter(|(r, _)| r.policy == *name)
            .map(|(r, &x)| (px(x), py(r.cold_start_ratio), r))
            .collect();
        points.sort_by(|a, b| {
            a.2.memory_mib
                .cmp(&b.2.memory_mib)
                .then(a.2.knob.total_cmp(&b.2.knob))
        });
        if points.len() > 1 {
            let line: Vec<String> = points
                .iter()
                .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"#,
                line.join(" ")
            );
        }
        for (x, y, r) in &points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{color}"><title>{} knob {} memory {} GiB: cold {:.4}, idle {:.1} GB·s</title></circle>"#,
                escape(&r.policy),
                r.knob,
                r.memory_mib as f64 / 1024.0,
                r.cold_start_ratio,
                r.idle_gb_s
            );
        }
        let legend_y = top + 14.0 + n as f64 * 18.0;
        let _ = writeln!(
            svg,
            r#"<circle cx="{}" cy="{legend_y}" r="5" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            left + plot_w + 20.0,
            left + plot_w + 32.0,
            legend_y + 4.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_decade(exponent: f64) -> String {
    let value = 10f64.powf(exponent);
    if value >= 1.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}
