//! The two text formats Prometheus reads: OpenMetrics 1.0 (what the
//! registry encodes) and the classic text format 0.0.4, derived from it.
//! In the classic format a counter's HELP and TYPE name the `_total`
//! sample, an info metric is a gauge named `_info`, and there is no UNIT
//! or EOF line (promtool and Prometheus' classic parser then see the type
//! and help of every counter).

/// `Content-Type` of OpenMetrics text.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the classic text format.
pub(crate) const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// True when an `Accept` header asks for OpenMetrics.
pub(crate) fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut it = part.split(';').map(str::trim);
            let ty = it.next().unwrap_or("");
            let q_zero = it.any(|p| p.replace(' ', "") == "q=0");
            ty.eq_ignore_ascii_case("application/openmetrics-text") && !q_zero
        })
    })
}

/// The classic text format of an OpenMetrics body.
pub(crate) fn to_classic(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut renames: Vec<(String, String)> = Vec::new();
    // First pass: the families whose name changes (counters, infos).
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, ty) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            match ty {
                "counter" => renames.push((name.to_string(), format!("{name}_total"))),
                "info" => renames.push((name.to_string(), format!("{name}_info"))),
                _ => {}
            }
        }
    }
    let renamed = |name: &str| {
        renames
            .iter()
            .find(|(from, _)| from == name)
            .map_or(name.to_string(), |(_, to)| to.clone())
    };
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", renamed(name)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, ""));
            let ty = match ty {
                "info" => "gauge",
                "unknown" => "untyped",
                t => t,
            };
            out.push_str(&format!("# TYPE {} {ty}\n", renamed(name)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_infos_are_renamed_and_eof_dropped() {
        let om = "# HELP x_dns_queries Queries.\n# TYPE x_dns_queries counter\nx_dns_queries_total{a=\"1\"} 3\n# HELP x_build Build.\n# TYPE x_build info\nx_build_info{version=\"1\"} 1\n# HELP x_up Up.\n# TYPE x_up gauge\n# UNIT x_up seconds\nx_up 1\n# EOF\n";
        let c = to_classic(om);
        assert_eq!(
            c,
            "# HELP x_dns_queries_total Queries.\n# TYPE x_dns_queries_total counter\nx_dns_queries_total{a=\"1\"} 3\n# HELP x_build_info Build.\n# TYPE x_build_info gauge\nx_build_info{version=\"1\"} 1\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }

    #[test]
    fn accept_negotiation() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
        assert!(!wants_openmetrics(None));
    }
}
