//! Maps document paths (`services.vdh-api.rules[1].environment`) to the
//! line where they appear in YAML text, so validation errors can say
//! `file:line`; and checks the structure serde cannot see: duplicate keys
//! (serde keeps the last one silently) and nesting depth.

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

/// Deepest nesting of mappings and sequences accepted in a state document
/// (the shipped one uses 6).
pub(crate) const MAX_DEPTH: usize = 32;

/// A structural problem: (1-based line, path, message).
pub(crate) type StructureError = (usize, String, String);

/// One open collection while checking: a mapping (its keys with their
/// lines, and whether the next scalar is a key) or a sequence.
enum Open {
    Map {
        path: String,
        keys: HashMap<String, usize>,
        want_key: bool,
    },
    Seq {
        path: String,
        index: usize,
    },
}

/// The state of [`structure_error`]'s walk over the events.
#[derive(Default)]
struct Checker {
    stack: Vec<Open>,
    /// The path of the last key read (where its value goes).
    last_key: String,
}

impl Checker {
    /// Where the next value goes (and, after it, that the map wants a key).
    fn next_path(&mut self) -> String {
        match self.stack.last_mut() {
            None => String::new(),
            Some(Open::Map { path, want_key, .. }) => {
                *want_key = true;
                path.clone()
            }
            Some(Open::Seq { path, index }) => {
                *index += 1;
                format!("{path}[{}]", *index - 1)
            }
        }
    }

    /// A scalar: a key (checked for a repeat) or a value.
    fn scalar(&mut self, v: &str, line: usize) -> Option<StructureError> {
        match self.stack.last_mut() {
            Some(Open::Map {
                path,
                keys,
                want_key,
            }) if *want_key => {
                let at = child(path, v);
                if let Some(first) = keys.insert(v.to_string(), line) {
                    let msg = format!("duplicate key '{v}' (first at line {first})");
                    return Some((line, at, msg));
                }
                *want_key = false;
                self.last_key = at;
            }
            _ => {
                self.next_path();
            }
        }
        None
    }

    /// A mapping or sequence starts: refused past [`MAX_DEPTH`].
    fn open(&mut self, map: bool, line: usize) -> Option<StructureError> {
        let path = match self.stack.last() {
            Some(Open::Map {
                want_key: false, ..
            }) => std::mem::take(&mut self.last_key),
            _ => self.next_path(),
        };
        if let Some(Open::Map { want_key, .. }) = self.stack.last_mut() {
            *want_key = true;
        }
        if self.stack.len() >= MAX_DEPTH {
            let msg = format!("nested deeper than {MAX_DEPTH} levels");
            return Some((line, path, msg));
        }
        self.stack.push(if map {
            Open::Map {
                path,
                keys: HashMap::new(),
                want_key: true,
            }
        } else {
            Open::Seq { path, index: 0 }
        });
        None
    }
}

/// Finds the first duplicate mapping key (naming both lines) or nesting
/// deeper than [`MAX_DEPTH`]. Linear in the text; stops at the first
/// problem or at the first YAML syntax error (serde reports those).
pub(crate) fn structure_error(text: &str) -> Option<StructureError> {
    let mut c = Checker::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(x) => x,
            // The scanner's own limit (hit before ours by flow
            // collections): reported here, since serde_norway takes time
            // quadratic in the text to report it (40 s for 100k `[`).
            Err(e) if e.info().contains("recursion limit") => {
                let msg = format!("nested deeper than {MAX_DEPTH} levels");
                return Some((e.marker().line(), String::new(), msg));
            }
            Err(_) => return None,
        };
        let line = span.start.line();
        let found = match event {
            Event::Scalar(v, ..) => c.scalar(&v, line),
            Event::MappingStart(..) => c.open(true, line),
            Event::SequenceStart(..) => c.open(false, line),
            Event::MappingEnd | Event::SequenceEnd => {
                c.stack.pop();
                None
            }
            Event::Alias(..) => {
                c.next_path();
                None
            }
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Every path in the document with its 1-based line. Returns what it could
/// read when the text is not valid YAML, and nothing below [`MAX_DEPTH`]
/// (so a hostile document costs linear time).
pub(crate) fn yaml_lines(text: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        if stack.len() > MAX_DEPTH {
            break;
        }
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
    fn duplicate_keys_and_deep_nesting_are_found() {
        let dup = "services:\n  a:\n    x: 1\n  b: {}\n  a:\n    x: 2\n";
        let (line, path, msg) = structure_error(dup).unwrap();
        assert_eq!((line, path.as_str()), (5, "services.a"));
        assert!(msg.contains("first at line 2"), "{msg}");
        let flow = "environments: {prod: {}, prod: {}}\n";
        assert_eq!(structure_error(flow).unwrap().1, "environments.prod");
        let in_list = "r:\n  - {k: 1, k: 2}\n";
        assert_eq!(structure_error(in_list).unwrap().1, "r[0].k");
        // The same key in sibling mappings is fine.
        assert_eq!(
            structure_error("a: {x: 1}\nb: {x: 1}\nc: [{x: 1}, {x: 2}]\n"),
            None
        );
        let deep = format!("x: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let t = std::time::Instant::now();
        let (_, _, msg) = structure_error(&deep).unwrap();
        assert!(msg.contains("deeper than"), "{msg}");
        assert!(yaml_lines(&deep).len() <= MAX_DEPTH + 2);
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        let shipped =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/state.yaml"))
                .unwrap();
        assert_eq!(structure_error(&shipped), None);
    }

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
