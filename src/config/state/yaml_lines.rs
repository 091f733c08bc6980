//! Maps document paths (`services.vdh-api.rules[1].environment`) to the
//! line where they appear in YAML text, so validation errors can say
//! `file:line`.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

enum Frame {
    Map { key: Option<String>, path: String },
    Seq { index: usize, path: String },
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Every path in the document with its 1-based line. Returns what it could
/// read when the text is not valid YAML.
pub(crate) fn yaml_lines(text: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        let line = span.start.line();
        // The path a new value at this point gets.
        let value_path = |stack: &mut Vec<Frame>| -> Option<String> {
            match stack.last_mut() {
                None => Some(String::new()),
                Some(Frame::Map { key, path }) => key.take().map(|k| child(path, &k)),
                Some(Frame::Seq { index, path }) => {
                    let p = format!("{path}[{index}]");
                    *index += 1;
                    Some(p)
                }
            }
        };
        match event {
            Event::Scalar(v, ..) => {
                let is_key = matches!(stack.last(), Some(Frame::Map { key: None, .. }));
                if is_key {
                    if let Some(Frame::Map { key, path }) = stack.last_mut() {
                        out.entry(child(path, &v)).or_insert(line);
                        *key = Some(v.to_string());
                    }
                } else if let Some(p) = value_path(&mut stack) {
                    out.entry(p).or_insert(line);
                }
            }
            Event::MappingStart(..) => {
                let p = value_path(&mut stack).unwrap_or_default();
                out.entry(p.clone()).or_insert(line);
                stack.push(Frame::Map { key: None, path: p });
            }
            Event::SequenceStart(..) => {
                let p = value_path(&mut stack).unwrap_or_default();
                out.entry(p.clone()).or_insert(line);
                stack.push(Frame::Seq { index: 0, path: p });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            _ => {}
        }
    }
    out
}

/// The line of `path`, or of its nearest ancestor that appears in the text.
pub(crate) fn line_of(lines: &HashMap<String, usize>, path: &str) -> Option<usize> {
    let mut p = path.to_string();
    loop {
        if let Some(&l) = lines.get(&p) {
            return Some(l);
        }
        let cut = p.rfind(['.', '['])?;
        p.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_paths() {
        let text = "a:\n  b: 1\n  list:\n    - x: 2\n    - x: 3\n      y: [4, 5]\n";
        let l = yaml_lines(text);
        assert_eq!(l["a.b"], 2);
        assert_eq!(l["a.list[0].x"], 4);
        assert_eq!(l["a.list[1].y"], 6);
        assert_eq!(line_of(&l, "a.list[1].y[1]"), Some(6));
        assert_eq!(line_of(&l, "a.list[1].missing"), Some(5));
    }
}
