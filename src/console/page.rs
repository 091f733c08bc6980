//! The console's page frame and the few HTML helpers the pages share. Every
//! value that comes from state, etcd or a request goes through [`esc`].

use std::fmt::Write as _;

/// HTML-escapes text for element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The pages, in the order of the navigation bar: (path, title).
pub(crate) const PAGES: [(&str, &str); 5] = [
    ("/", "Overview"),
    ("/cohorts", "Cohorts"),
    ("/clients", "Census"),
    ("/history", "History"),
    ("/explain", "Explain"),
];

/// A whole page: head, navigation (the current page marked), `body`.
pub(crate) fn frame(current: &str, edge: &str, body: &str) -> String {
    let title = PAGES
        .iter()
        .find(|(p, _)| *p == current)
        .map_or("vdh-edge", |(_, t)| t);
    let mut nav = String::new();
    for (path, name) in PAGES {
        let here = if path == current {
            " aria-current=page"
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{path}\"{here}>{name}</a>");
    }
    format!(
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width,initial-scale=1\">\
<title>{title} · vdh-edge</title><link rel=icon href=\"data:,\"><link rel=stylesheet href=/console.css></head>\
<body><header><span class=brand>vdh-edge</span><nav>{nav}</nav>\
<span class=edge>edge {}</span></header><main>{body}</main>\
<footer>Read-only: every change is a <code>vdh-edge</code> command, with its plan, audit and approvals.</footer>\
</body></html>\n",
        esc(edge)
    )
}

/// A table in a scrolling box (phones): `head` cells and rows of cells
/// (already HTML).
pub(crate) fn table(class: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<div class=scroll><table class=\"{class}\"><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        // The labels let a phone show each row as a card.
        for (c, h) in r.iter().zip(head) {
            let _ = write!(out, "<td data-label=\"{h}\">{c}</td>");
        }
        out.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan={} class=none>none</td></tr>",
            head.len()
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

/// A status badge: `ok`, `warn` or `bad`.
pub(crate) fn badge(kind: &str, text: &str) -> String {
    format!("<span class=\"badge {kind}\">{}</span>", esc(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }
}
