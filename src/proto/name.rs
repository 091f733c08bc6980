//! Domain names in wire form.
//!
//! A [`Name`] holds the uncompressed wire encoding (length-prefixed labels,
//! ending with the root label). Lookups use the lower-cased form; the zone
//! keeps names as written so answers can show the case of the zone file.

use std::fmt;

/// Longest name on the wire, root label included (RFC 1035 §3.1).
pub(crate) const MAX_NAME_LEN: usize = 255;
/// Longest label (RFC 1035 §2.3.4).
pub(crate) const MAX_LABEL_LEN: usize = 63;

/// A fully qualified domain name in uncompressed wire form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Box<[u8]>);

/// Why a textual or wire name is not a valid name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    #[error("empty label in name '{0}'")]
    EmptyLabel(String),
    #[error("label longer than 63 bytes in name '{0}'")]
    LabelTooLong(String),
    #[error("name '{0}' is longer than 255 bytes")]
    NameTooLong(String),
    #[error("bad escape in name '{0}'")]
    BadEscape(String),
    #[error("relative name '{0}' with no origin")]
    NoOrigin(String),
}

impl Name {
    /// The root name `.`.
    pub(crate) fn root() -> Name {
        Name(Box::new([0]))
    }

    /// Wraps wire bytes that are known to be a valid uncompressed name.
    pub(crate) fn from_wire_unchecked(wire: &[u8]) -> Name {
        Name(wire.into())
    }

    /// Parses presentation format (`www.example.com.`, `\065`, `\.`). A name
    /// without a trailing dot is relative to `origin`; `@` is the origin.
    pub fn parse(text: &str, origin: Option<&Name>) -> Result<Name, NameError> {
        let bad = || text.to_string();
        if text == "@" {
            return origin.cloned().ok_or_else(|| NameError::NoOrigin(bad()));
        }
        if text == "." {
            return Ok(Name::root());
        }
        let bytes = text.as_bytes();
        let mut wire = Vec::with_capacity(bytes.len() + 2);
        let mut label = Vec::with_capacity(MAX_LABEL_LEN);
        let mut i = 0;
        let mut absolute = false;
        while i < bytes.len() {
            let c = bytes[i];
            match c {
                b'.' => {
                    if label.is_empty() {
                        return Err(NameError::EmptyLabel(bad()));
                    }
                    push_label(&mut wire, &label, text)?;
                    label.clear();
                    if i == bytes.len() - 1 {
                        absolute = true;
                    }
                    i += 1;
                }
                b'\\' => {
                    let (v, used) = decode_escape(&bytes[i + 1..])
                        .ok_or_else(|| NameError::BadEscape(bad()))?;
                    label.push(v);
                    i += 1 + used;
                }
                _ => {
                    label.push(c);
                    i += 1;
                }
            }
        }
        if !label.is_empty() {
            push_label(&mut wire, &label, text)?;
        }
        if absolute {
            wire.push(0);
        } else {
            let origin = origin.ok_or_else(|| NameError::NoOrigin(bad()))?;
            wire.extend_from_slice(&origin.0);
        }
        if wire.len() > MAX_NAME_LEN {
            return Err(NameError::NameTooLong(bad()));
        }
        Ok(Name(wire.into_boxed_slice()))
    }

    /// The wire bytes.
    pub fn wire(&self) -> &[u8] {
        &self.0
    }

    /// A lower-cased copy (ASCII only, as DNS compares names).
    pub(crate) fn to_lower(&self) -> Name {
        let mut w = self.0.clone();
        lower_in_place(&mut w);
        Name(w)
    }

    /// Number of labels, the root not counted.
    pub(crate) fn label_count(&self) -> usize {
        label_count(&self.0)
    }

    /// True when `self` is `other` or lies below it (case-insensitive).
    pub(crate) fn is_subdomain_of(&self, other: &Name) -> bool {
        is_subdomain(&self.0, &other.0)
    }

    /// The name with its first label removed, or `None` for the root.
    #[cfg(test)]
    pub(crate) fn parent(&self) -> Option<Name> {
        if self.0[0] == 0 {
            None
        } else {
            Some(Name(self.0[1 + self.0[0] as usize..].into()))
        }
    }
}

/// Decodes the escape after a backslash: `\DDD` (decimal byte) or `\X`.
/// Returns the byte and how many bytes of `rest` it used.
pub(crate) fn decode_escape(rest: &[u8]) -> Option<(u8, usize)> {
    if rest.len() >= 3 && rest[..3].iter().all(u8::is_ascii_digit) {
        let v =
            (rest[0] - b'0') as u32 * 100 + (rest[1] - b'0') as u32 * 10 + (rest[2] - b'0') as u32;
        u8::try_from(v).ok().map(|b| (b, 3))
    } else {
        rest.first().map(|&c| (c, 1))
    }
}

fn push_label(wire: &mut Vec<u8>, label: &[u8], text: &str) -> Result<(), NameError> {
    if label.len() > MAX_LABEL_LEN {
        return Err(NameError::LabelTooLong(text.to_string()));
    }
    #[allow(clippy::cast_possible_truncation)] // at most 63, checked above
    let len = label.len() as u8;
    wire.push(len);
    wire.extend_from_slice(label);
    Ok(())
}

/// Lower-cases ASCII letters of a wire name in place (length bytes are < 64,
/// so they never fall in `A..=Z`).
pub(crate) fn lower_in_place(wire: &mut [u8]) {
    let mut i = 0;
    while i < wire.len() {
        let len = wire[i] as usize;
        if len == 0 {
            break;
        }
        wire[i + 1..i + 1 + len].make_ascii_lowercase();
        i += 1 + len;
    }
}

/// Labels in a wire name, the root not counted.
pub(crate) fn label_count(wire: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < wire.len() && wire[i] != 0 {
        n += 1;
        i += 1 + wire[i] as usize;
    }
    n
}

/// Offsets of each suffix of a wire name, longest first; the root is not
/// included.
pub(crate) fn suffix_offsets(wire: &[u8], out: &mut [u8; 128]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < wire.len() && wire[i] != 0 {
        #[allow(clippy::cast_possible_truncation)] // a wire name is at most 255 bytes
        let at = i as u8;
        out[n] = at;
        n += 1;
        i += 1 + wire[i] as usize;
    }
    n
}

/// True when wire name `a` equals or lies below wire name `b`, ignoring case.
pub(crate) fn is_subdomain(a: &[u8], b: &[u8]) -> bool {
    if b.len() > a.len() {
        return false;
    }
    let mut i = 0;
    loop {
        if a.len() - i == b.len() {
            return a[i..].eq_ignore_ascii_case(b);
        }
        if a.len() - i < b.len() || a[i] == 0 {
            return false;
        }
        i += 1 + a[i] as usize;
    }
}

/// Writes a wire name in presentation format.
pub(crate) fn fmt_wire(wire: &[u8], f: &mut impl fmt::Write) -> fmt::Result {
    if wire.first() == Some(&0) || wire.is_empty() {
        return f.write_char('.');
    }
    let mut i = 0;
    while i < wire.len() && wire[i] != 0 {
        let len = wire[i] as usize;
        for &c in &wire[i + 1..i + 1 + len] {
            match c {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                    f.write_char('\\')?;
                    f.write_char(c as char)?;
                }
                0x21..=0x7e => f.write_char(c as char)?,
                _ => write!(f, "\\{:03}", c)?,
            }
        }
        f.write_char('.')?;
        i += 1 + len;
    }
    Ok(())
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_wire(&self.0, f)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let o = Name::parse("example.com.", None).unwrap();
        assert_eq!(o.wire(), b"\x07example\x03com\x00");
        let n = Name::parse("WWW", Some(&o)).unwrap();
        assert_eq!(n.to_string(), "WWW.example.com.");
        assert_eq!(Name::parse("@", Some(&o)).unwrap(), o);
        assert_eq!(Name::parse("a\\.b.", None).unwrap().wire(), b"\x03a.b\x00");
        assert_eq!(Name::parse("\\065.", None).unwrap().wire(), b"\x01A\x00");
        assert_eq!(Name::parse(".", None).unwrap(), Name::root());
        assert!(Name::parse("a..b.", None).is_err());
        assert!(Name::parse("rel", None).is_err());
        assert!(Name::parse(&format!("{}.", "a".repeat(64)), None).is_err());
    }

    #[test]
    fn subdomain_and_parent() {
        let o = Name::parse("example.com.", None).unwrap();
        let n = Name::parse("A.Example.COM.", None).unwrap();
        assert!(n.is_subdomain_of(&o));
        assert!(o.is_subdomain_of(&o));
        assert!(!o.is_subdomain_of(&n));
        assert!(
            !Name::parse("xexample.com.", None)
                .unwrap()
                .is_subdomain_of(&o)
        );
        assert_eq!(n.parent().unwrap().to_lower(), o);
        assert_eq!(n.label_count(), 3);
    }
}
