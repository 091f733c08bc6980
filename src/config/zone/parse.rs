//! RFC 1035 master-file parser.
//!
//! Reads zone text into [`ZoneRecord`]s whose RDATA is already in wire form,
//! and reports every bad entry with its line. Supports `$ORIGIN`, `$TTL`,
//! parentheses, quoted strings, escapes, TTL units (`1h30m`), the common
//! record types and the RFC 3597 generic form (`TYPE65280 \# 2 abcd`).
//! `$INCLUDE` is refused: a zone is one file, so a change to it is one event.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::proto::name::Name;
use crate::proto::types::*;

/// One resource record read from a zone file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ZoneRecord {
    pub(crate) owner: Name,
    pub(crate) rtype: u16,
    pub(crate) ttl: u32,
    /// Uncompressed wire RDATA.
    pub(crate) rdata: Vec<u8>,
    /// 1-based line where the entry starts.
    pub(crate) line: usize,
}

/// A parse error at a line of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}: {message}")]
pub(crate) struct LineError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// The TTL used for records that give none when the file has no `$TTL`
/// (Knot's scanner default; an earlier explicit TTL does not carry over).
pub(crate) const DEFAULT_TTL: u32 = 3600;

/// A token of an entry: a bare word, or a quoted string's content (its
/// escapes kept for the RDATA parser), borrowed from the zone text.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    quoted: bool,
}

/// One entry (logical line): where it starts and its tokens.
struct Entry<'t, 'a> {
    line: usize,
    /// The entry started with white space: the owner is the previous one.
    blank_owner: bool,
    tokens: &'t [Token<'a>],
}

/// Splits zone text into entries (logical lines) of tokens, one entry at a
/// time into a reused token list: a million-record zone costs no
/// allocation per token.
struct Lexer<'a> {
    text: &'a str,
    i: usize,
    line: usize,
    depth: usize,
    at_line_start: bool,
    ended: bool,
    /// A quoted string ran to the end of the text.
    unterminated: bool,
    errors: Vec<LineError>,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer {
            text,
            i: 0,
            line: 1,
            depth: 0,
            at_line_start: true,
            ended: false,
            unterminated: false,
            errors: Vec::new(),
        }
    }

    /// The next entry's line and whether its owner is blank, its tokens in
    /// `tokens`; `None` at the end.
    fn next(&mut self, tokens: &mut Vec<Token<'a>>) -> Option<(usize, bool)> {
        tokens.clear();
        let text = self.text;
        let b = text.as_bytes();
        // (line, blank owner) of the entry begun.
        let mut cur: Option<(usize, bool)> = None;
        while self.i < b.len() {
            let c = b[self.i];
            match c {
                b'\n' => {
                    self.line += 1;
                    self.i += 1;
                    if self.depth == 0 {
                        self.at_line_start = true;
                        if let Some(e) = cur.take()
                            && !tokens.is_empty()
                        {
                            return Some(e);
                        }
                    }
                }
                b' ' | b'\t' | b'\r' => {
                    if self.at_line_start && self.depth == 0 && cur.is_none() {
                        cur = Some((self.line, true));
                    }
                    self.at_line_start = false;
                    self.i += 1;
                }
                b';' => {
                    while self.i < b.len() && b[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                b'(' => {
                    self.depth += 1;
                    self.at_line_start = false;
                    cur.get_or_insert((self.line, false));
                    self.i += 1;
                }
                b')' => {
                    if self.depth == 0 {
                        self.errors.push(LineError {
                            line: self.line,
                            message: "unbalanced ')'".into(),
                        });
                    } else {
                        self.depth -= 1;
                    }
                    self.i += 1;
                }
                b'"' => {
                    let start_line = self.line;
                    let (s, closed) = quoted(text, &mut self.i, &mut self.line);
                    if !closed {
                        self.unterminated = true;
                        self.errors.push(LineError {
                            line: start_line,
                            message: "unterminated quoted string".into(),
                        });
                    }
                    self.at_line_start = false;
                    cur.get_or_insert((start_line, false));
                    tokens.push(Token {
                        text: s,
                        quoted: true,
                    });
                }
                _ => {
                    let start = self.i;
                    self.i = word_end(b, self.i);
                    self.at_line_start = false;
                    cur.get_or_insert((self.line, false));
                    tokens.push(Token {
                        text: &text[start..self.i],
                        quoted: false,
                    });
                }
            }
        }
        if self.depth != 0 && !self.ended {
            self.errors.push(LineError {
                line: self.line,
                message: "unbalanced '(' at end of file".into(),
            });
        }
        self.ended = true;
        cur.filter(|_| !tokens.is_empty())
    }
}

/// Reads a quoted string whose opening quote is at `*i`; leaves `*i` after
/// the closing quote and counts the lines it spans. Returns the text
/// between the quotes (escapes kept for the RDATA parser) and whether the
/// quote was closed.
fn quoted<'a>(text: &'a str, i: &mut usize, line: &mut usize) -> (&'a str, bool) {
    let b = text.as_bytes();
    *i += 1;
    let start = *i;
    while *i < b.len() {
        match b[*i] {
            b'"' => {
                *i += 1;
                return (&text[start..*i - 1], true);
            }
            b'\\' if *i + 1 < b.len() => {
                // The escaped character whole: it may be several bytes of
                // UTF-8 (a crash found by the fuzzer: `"\¡`).
                if b[*i + 1] == b'\n' {
                    *line += 1;
                }
                *i = (*i + 1 + utf8_len(b[*i + 1])).min(b.len());
            }
            b'\n' => {
                *line += 1;
                *i += 1;
            }
            c => *i = (*i + utf8_len(c)).min(b.len()),
        }
    }
    (&text[start..], false)
}

/// The end of a bare word starting at `i` (escaped characters included).
fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len()
        && !matches!(
            b[i],
            b' ' | b'\t' | b'\r' | b'\n' | b';' | b'(' | b')' | b'"'
        )
    {
        if b[i] == b'\\' && i + 1 < b.len() {
            i += 1;
        }
        i += 1;
    }
    i
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// Parses a TTL: seconds, or units `s m h d w` (`1h30m`), case-insensitive.
pub(crate) fn parse_ttl(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    if let Ok(v) = s.parse::<u32>() {
        return Some(v);
    }
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(num.unwrap_or(0).checked_mul(10)?.checked_add(d as u64)?);
        } else {
            let mult = match c.to_ascii_lowercase() {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                'w' => 604800,
                _ => return None,
            };
            total = total.checked_add(num.take()?.checked_mul(mult)?)?;
        }
    }
    if let Some(n) = num {
        total = total.checked_add(n)?;
    }
    u32::try_from(total).ok()
}

/// The outcome of parsing one zone file.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) records: Vec<ZoneRecord>,
    pub(crate) errors: Vec<LineError>,
}

/// Zone text below this size is parsed on one thread.
const PARALLEL_BYTES: usize = 1 << 20;

/// Parses zone text with the given origin. A large zone is cut into one
/// chunk per CPU at lines that start a record with its own owner, and the
/// chunks are parsed at once; each chunk starts from the `$ORIGIN` and
/// `$TTL` the directives before it set. The result is the one-thread
/// result exactly: when a chunk does not end where the next one assumed
/// (inside parentheses or a quoted string, or another `$ORIGIN`/`$TTL`
/// than assumed), the whole text is parsed again on one thread.
pub(crate) fn parse_zone(text: &str, origin: &Name) -> Parsed {
    // Asking for the CPU count reads the cgroup files under /proc (about
    // 50 µs on a 2-core VM): only a zone big enough to be cut asks.
    let cpus = if text.len() < PARALLEL_BYTES {
        1
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    };
    parse_in_chunks(text, origin, cpus)
}

/// [`parse_zone`] with `n` chunks at most.
fn parse_in_chunks(text: &str, origin: &Name, n: usize) -> Parsed {
    let starts = chunk_starts(text, n);
    if starts.len() < 2 {
        return parse_chunk(text, origin, Carried::new(origin)).into_parsed();
    }
    let assumed: Vec<Carried> = starts
        .iter()
        .map(|&at| carried_before(&text[..at], origin))
        .collect();
    let bounds: Vec<(usize, usize)> = starts
        .iter()
        .zip(starts.iter().skip(1).chain([&text.len()]))
        .map(|(&a, &b)| (a, b))
        .collect();
    let chunks: Vec<Chunk> = std::thread::scope(|scope| {
        let handles: Vec<_> = bounds
            .iter()
            .zip(&assumed)
            .map(|(&(a, b), carried)| {
                let carried = carried.clone();
                scope.spawn(move || parse_chunk(&text[a..b], origin, carried))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("zone chunk parser panicked"))
            .collect()
    });
    let seamless = chunks
        .windows(2)
        .zip(assumed.iter().skip(1))
        .all(|(pair, next)| pair[0].clean_end && pair[0].carried == *next);
    if !seamless {
        return parse_chunk(text, origin, Carried::new(origin)).into_parsed();
    }
    // Lines continue across chunks; the lexer's errors come first, as on
    // one thread.
    let mut out = Parsed::default();
    let mut parse_errors = Vec::new();
    let mut offset = 0;
    for mut c in chunks {
        for r in &mut c.records {
            r.line += offset;
        }
        for e in c.lex_errors.iter_mut().chain(c.parse_errors.iter_mut()) {
            e.line += offset;
        }
        out.records.append(&mut c.records);
        out.errors.append(&mut c.lex_errors);
        parse_errors.append(&mut c.parse_errors);
        offset += c.lines;
    }
    out.errors.append(&mut parse_errors);
    out
}

/// Where the chunks of `text` start for `n` threads: the first line, after
/// each `len / n` mark, that starts with an owner name (not blank, not a
/// directive, comment or parenthesis). Small texts are one chunk.
fn chunk_starts(text: &str, n: usize) -> Vec<usize> {
    let mut starts = vec![0];
    if text.len() < PARALLEL_BYTES || n < 2 {
        return starts;
    }
    let b = text.as_bytes();
    for k in 1..n {
        let mut at = text.len() * k / n;
        let found = loop {
            let Some(nl) = b[at..].iter().position(|&c| c == b'\n') else {
                break None;
            };
            at += nl + 1;
            if at < b.len()
                && !matches!(
                    b[at],
                    b' ' | b'\t' | b'\r' | b'\n' | b';' | b'$' | b'(' | b')' | b'"'
                )
            {
                break Some(at);
            }
        };
        match found {
            Some(at) if at > *starts.last().expect("first") => starts.push(at),
            _ => break,
        }
    }
    starts
}

/// The `$ORIGIN` and `$TTL` in force at the end of `text`, reading only
/// its lines that start with `$` (the chunk before checks the guess).
fn carried_before(text: &str, origin: &Name) -> Carried {
    let mut p = ZoneParser::new(origin);
    let mut tokens = Vec::new();
    let lines = std::iter::once(0)
        .chain(text.match_indices("\n$").map(|(i, _)| i + 1))
        .filter(|&i| text.as_bytes().get(i) == Some(&b'$'));
    for i in lines {
        let line = text[i..].split('\n').next().unwrap_or("");
        let mut lexer = Lexer::new(line);
        if let Some((_, false)) = lexer.next(&mut tokens) {
            p.directive(&Entry {
                line: 0,
                blank_owner: false,
                tokens: &tokens,
            });
        }
    }
    p.carried
}

/// What one entry leaves to the next chunk: the current `$ORIGIN` and
/// `$TTL`.
#[derive(Debug, Clone, PartialEq)]
struct Carried {
    origin: Name,
    default_ttl: Option<u32>,
}

impl Carried {
    fn new(origin: &Name) -> Self {
        Carried {
            origin: origin.clone(),
            default_ttl: None,
        }
    }
}

/// One chunk parsed, with lines counted from 1 at its start.
struct Chunk {
    records: Vec<ZoneRecord>,
    lex_errors: Vec<LineError>,
    parse_errors: Vec<LineError>,
    /// Its newlines.
    lines: usize,
    /// It ends outside parentheses and quoted strings.
    clean_end: bool,
    /// `$ORIGIN` and `$TTL` at its end.
    carried: Carried,
}

impl Chunk {
    fn into_parsed(mut self) -> Parsed {
        self.lex_errors.append(&mut self.parse_errors);
        Parsed {
            records: self.records,
            errors: self.lex_errors,
        }
    }
}

fn parse_chunk(text: &str, zone_origin: &Name, carried: Carried) -> Chunk {
    let mut lexer = Lexer::new(text);
    let mut p = ZoneParser::new(zone_origin);
    p.carried = carried;
    let mut tokens = Vec::new();
    while let Some((line, blank_owner)) = lexer.next(&mut tokens) {
        let e = Entry {
            line,
            blank_owner,
            tokens: &tokens,
        };
        let first = &e.tokens[0];
        if !e.blank_owner && !first.quoted && first.text.starts_with('$') {
            p.directive(&e);
        } else {
            p.record(&e);
        }
    }
    Chunk {
        records: p.out.records,
        lex_errors: lexer.errors,
        parse_errors: p.out.errors,
        lines: lexer.line - 1,
        clean_end: lexer.depth == 0 && !lexer.unterminated,
        carried: p.carried,
    }
}

/// What parsing carries from one entry to the next.
struct ZoneParser {
    /// The origin from the file name: `$ORIGIN` may not leave it.
    zone_origin: Name,
    /// The current `$ORIGIN` and `$TTL`.
    carried: Carried,
    /// The owner a line starting with white space repeats.
    last_owner: Option<Name>,
    out: Parsed,
}

/// The TTL, class and type that may come before the data, in any order.
#[derive(Default)]
struct RecordHead {
    ttl: Option<u32>,
    class: Option<u16>,
    /// `Some(0)` after an error already reported.
    rtype: Option<u16>,
}

impl ZoneParser {
    fn new(zone_origin: &Name) -> Self {
        ZoneParser {
            zone_origin: zone_origin.clone(),
            carried: Carried::new(zone_origin),
            last_owner: None,
            out: Parsed::default(),
        }
    }

    fn error(&mut self, line: usize, message: String) {
        self.out.errors.push(LineError { line, message });
    }

    /// `$ORIGIN`, `$TTL`; `$INCLUDE` and others are errors.
    fn directive(&mut self, e: &Entry<'_, '_>) {
        let line = e.line;
        let arg = e.tokens.get(1).map(|t| t.text);
        match e.tokens[0].text.to_ascii_uppercase().as_str() {
            "$ORIGIN" => match arg.map(|a| Name::parse(a, Some(&self.carried.origin))) {
                Some(Ok(n)) if !n.is_subdomain_of(&self.zone_origin) => {
                    let message = format!(
                        "$ORIGIN {n} disagrees with the zone origin {} (from the file name)",
                        self.zone_origin
                    );
                    self.error(line, message);
                }
                Some(Ok(n)) => self.carried.origin = n,
                Some(Err(x)) => self.error(line, format!("bad $ORIGIN: {x}")),
                None => self.error(line, "$ORIGIN needs a name".into()),
            },
            "$TTL" => match arg.and_then(parse_ttl) {
                Some(t) => self.carried.default_ttl = Some(t),
                None => self.error(line, "$TTL needs a TTL such as 3600 or 1h".into()),
            },
            "$INCLUDE" => self.error(
                line,
                "$INCLUDE is not supported: keep each zone in one file".into(),
            ),
            other => self.error(line, format!("unknown directive {other}")),
        }
    }

    /// The owner of an entry, and the index of the token after it.
    fn owner(&mut self, e: &Entry<'_, '_>) -> Option<(Name, usize)> {
        if e.blank_owner {
            let Some(o) = self.last_owner.clone() else {
                self.error(
                    e.line,
                    "record with no owner name and no previous owner".into(),
                );
                return None;
            };
            return Some((o, 0));
        }
        match Name::parse(e.tokens[0].text, Some(&self.carried.origin)) {
            Ok(n) => Some((n, 1)),
            Err(x) => {
                self.error(e.line, format!("bad owner name: {x}"));
                None
            }
        }
    }

    /// Reads TTL, class and type from `e.tokens[*idx..]` until the type.
    fn head(&mut self, e: &Entry<'_, '_>, idx: &mut usize) -> RecordHead {
        let mut h = RecordHead::default();
        while *idx < e.tokens.len() && h.rtype.is_none() {
            let t = &e.tokens[*idx].text;
            *idx += 1;
            if h.ttl.is_none() && t.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                if let Some(v) = parse_ttl(t) {
                    h.ttl = Some(v);
                } else {
                    self.error(e.line, format!("bad TTL '{t}'"));
                    h.rtype = Some(0);
                }
            } else if h.class.is_none()
                && class_from_str(t).is_some()
                && !t.to_ascii_uppercase().starts_with("TYPE")
            {
                h.class = class_from_str(t);
            } else if let Some(rt) = type_from_str(t) {
                h.rtype = Some(rt);
            } else {
                self.error(e.line, format!("unknown record type '{t}'"));
                h.rtype = Some(0);
            }
        }
        h
    }

    /// One resource record.
    fn record(&mut self, e: &Entry<'_, '_>) {
        let line = e.line;
        let Some((owner, mut idx)) = self.owner(e) else {
            return;
        };
        self.last_owner = Some(owner.clone());
        let head = self.head(e, &mut idx);
        let Some(rtype) = head.rtype else {
            self.error(line, "entry has no record type".into());
            return;
        };
        if rtype == 0 {
            return;
        }
        if head.class.is_some_and(|c| c != CLASS_IN) {
            self.error(line, "only class IN is supported".into());
            return;
        }
        if is_meta(rtype) {
            self.error(
                line,
                format!("{} cannot appear in a zone", type_name(rtype)),
            );
            return;
        }
        // Knot's rule: $TTL, else the built-in default (not the last explicit TTL).
        let ttl = head
            .ttl
            .unwrap_or_else(|| self.carried.default_ttl.unwrap_or(DEFAULT_TTL));
        match rdata_from_tokens(rtype, &e.tokens[idx..], &self.carried.origin) {
            Ok(rdata) => self.out.records.push(ZoneRecord {
                owner,
                rtype,
                ttl,
                rdata,
                line,
            }),
            Err(m) => self.error(line, format!("{} record: {m}", type_name(rtype))),
        }
    }
}

/// Why a record's data does not parse (reported as `TYPE record: ...` on
/// its line).
#[derive(Debug, thiserror::Error)]
enum RdataError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("bad IPv4 address '{0}'")]
    Ipv4(String),
    #[error("bad IPv6 address '{0}'")]
    Ipv6(String),
    #[error("bad serial '{0}'")]
    Serial(String),
    #[error("bad {what} '{text}'")]
    Ttl { what: &'static str, text: String },
    #[error("missing text")]
    NoText,
    #[error("bad tag '{0}'")]
    Tag(String),
    #[error(
        "presentation format of {0} is not supported; write it as \\# <length> <hex> (RFC 3597)"
    )]
    Unsupported(String),
    #[error("unexpected '{0}' after the record data")]
    Extra(String),
    #[error("\\# needs a length")]
    NoLength,
    #[error("\\# length {expected} does not match {actual} bytes of data")]
    Length { expected: usize, actual: usize },
    #[error("record data longer than 65535 bytes")]
    TooLong,
    #[error("odd number of hex digits")]
    OddHex,
    #[error("bad hex '{0}'")]
    Hex(String),
    #[error("missing hex data")]
    NoHex,
    #[error("{0}")]
    Name(#[from] crate::proto::name::NameError),
    #[error("'{0}' is not a number from 0 to 255")]
    NotU8(String),
    #[error("'{0}' is not a number from 0 to 65535")]
    NotU16(String),
    #[error("bad escape in '{0}'")]
    Escape(String),
    #[error("character string longer than 255 bytes")]
    CharString,
}

fn rdata_from_tokens(rtype: u16, toks: &[Token], origin: &Name) -> Result<Vec<u8>, RdataError> {
    if toks.first().is_some_and(|t| !t.quoted && t.text == "\\#") {
        return generic_rdata(&toks[1..]);
    }
    let mut w = Vec::new();
    let mut it = toks.iter();
    let mut next = |what: &'static str| -> Result<&Token, RdataError> {
        it.next().ok_or(RdataError::Missing(what))
    };
    match rtype {
        A => {
            let t = next("IPv4 address")?;
            let a: Ipv4Addr = t
                .text
                .parse()
                .map_err(|_| RdataError::Ipv4(t.text.to_string()))?;
            w.extend_from_slice(&a.octets());
        }
        AAAA => {
            let t = next("IPv6 address")?;
            let a: Ipv6Addr = t
                .text
                .parse()
                .map_err(|_| RdataError::Ipv6(t.text.to_string()))?;
            w.extend_from_slice(&a.octets());
        }
        NS | CNAME | PTR | DNAME => put_name(&mut w, next("target name")?, origin)?,
        MX => {
            put_u16(&mut w, next("preference")?)?;
            put_name(&mut w, next("exchange name")?, origin)?;
        }
        SOA => {
            put_name(&mut w, next("primary server name")?, origin)?;
            put_name(&mut w, next("mailbox name")?, origin)?;
            let serial = next("serial")?;
            let s: u32 = serial
                .text
                .parse()
                .map_err(|_| RdataError::Serial(serial.text.to_string()))?;
            w.extend_from_slice(&s.to_be_bytes());
            for what in ["refresh", "retry", "expire", "minimum"] {
                let t = next(what)?;
                let v = parse_ttl(t.text).ok_or_else(|| RdataError::Ttl {
                    what,
                    text: t.text.to_string(),
                })?;
                w.extend_from_slice(&v.to_be_bytes());
            }
        }
        TXT | SPF => {
            let mut any = false;
            for t in it.by_ref() {
                put_char_string(&mut w, t.text)?;
                any = true;
            }
            if !any {
                return Err(RdataError::NoText);
            }
        }
        HINFO => {
            put_char_string(&mut w, next("CPU")?.text)?;
            put_char_string(&mut w, next("OS")?.text)?;
        }
        SRV => {
            put_u16(&mut w, next("priority")?)?;
            put_u16(&mut w, next("weight")?)?;
            put_u16(&mut w, next("port")?)?;
            put_name(&mut w, next("target name")?, origin)?;
        }
        CAA => {
            put_u8(&mut w, next("flags")?)?;
            let tag = &next("tag")?.text;
            let len = u8::try_from(tag.len()).unwrap_or(u8::MAX);
            if len == 0 || len > 15 || !tag.bytes().all(|c| c.is_ascii_alphanumeric()) {
                return Err(RdataError::Tag(tag.to_string()));
            }
            w.push(len);
            w.extend_from_slice(tag.as_bytes());
            w.extend_from_slice(&unescape(next("value")?.text)?);
        }
        NAPTR => {
            put_u16(&mut w, next("order")?)?;
            put_u16(&mut w, next("preference")?)?;
            for what in ["flags", "services", "regexp"] {
                put_char_string(&mut w, next(what)?.text)?;
            }
            put_name(&mut w, next("replacement")?, origin)?;
        }
        SSHFP => {
            put_u8(&mut w, next("algorithm")?)?;
            put_u8(&mut w, next("fingerprint type")?)?;
            put_hex(&mut w, &mut it)?;
        }
        TLSA => {
            put_u8(&mut w, next("usage")?)?;
            put_u8(&mut w, next("selector")?)?;
            put_u8(&mut w, next("matching type")?)?;
            put_hex(&mut w, &mut it)?;
        }
        DS => {
            put_u16(&mut w, next("key tag")?)?;
            put_u8(&mut w, next("algorithm")?)?;
            put_u8(&mut w, next("digest type")?)?;
            put_hex(&mut w, &mut it)?;
        }
        _ => {
            return Err(RdataError::Unsupported(type_name(rtype)));
        }
    }
    if let Some(extra) = it.next() {
        return Err(RdataError::Extra(extra.text.to_string()));
    }
    Ok(w)
}

fn generic_rdata(toks: &[Token]) -> Result<Vec<u8>, RdataError> {
    let len: usize = toks
        .first()
        .and_then(|t| t.text.parse().ok())
        .ok_or(RdataError::NoLength)?;
    let hex: String = toks[1..].iter().map(|t| t.text).collect();
    let data = decode_hex(&hex)?;
    if data.len() != len {
        return Err(RdataError::Length {
            expected: len,
            actual: data.len(),
        });
    }
    if len > 65535 {
        return Err(RdataError::TooLong);
    }
    Ok(data)
}

fn decode_hex(s: &str) -> Result<Vec<u8>, RdataError> {
    if s.len() % 2 != 0 {
        return Err(RdataError::OddHex);
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| RdataError::Hex(s[i..i + 2].into()))
        })
        .collect()
}

fn put_hex<'a>(
    w: &mut Vec<u8>,
    it: &mut impl Iterator<Item = &'a Token<'a>>,
) -> Result<(), RdataError> {
    let hex: String = it.by_ref().map(|t| t.text).collect();
    if hex.is_empty() {
        return Err(RdataError::NoHex);
    }
    w.extend_from_slice(&decode_hex(&hex)?);
    Ok(())
}

fn put_name(w: &mut Vec<u8>, t: &Token, origin: &Name) -> Result<(), RdataError> {
    let n = Name::parse(t.text, Some(origin))?;
    w.extend_from_slice(n.wire());
    Ok(())
}

fn put_u8(w: &mut Vec<u8>, t: &Token) -> Result<(), RdataError> {
    w.push(
        t.text
            .parse::<u8>()
            .map_err(|_| RdataError::NotU8(t.text.to_string()))?,
    );
    Ok(())
}

fn put_u16(w: &mut Vec<u8>, t: &Token) -> Result<(), RdataError> {
    let v = t
        .text
        .parse::<u16>()
        .map_err(|_| RdataError::NotU16(t.text.to_string()))?;
    w.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Resolves `\X` and `\DDD` escapes into bytes.
fn unescape(s: &str) -> Result<Vec<u8>, RdataError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let (v, used) = crate::proto::name::decode_escape(&b[i + 1..])
                .ok_or_else(|| RdataError::Escape(s.to_string()))?;
            out.push(v);
            i += 1 + used;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn put_char_string(w: &mut Vec<u8>, s: &str) -> Result<(), RdataError> {
    let bytes = unescape(s)?;
    let len = u8::try_from(bytes.len()).map_err(|_| RdataError::CharString)?;
    w.push(len);
    w.extend_from_slice(&bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Name {
        Name::parse("example.com.", None).unwrap()
    }

    #[test]
    fn parses_common_entries() {
        let text = "$TTL 1h\n@ IN SOA ns1 hostmaster ( 1 2h 1h 1w\n  300 ) ; c\n  NS ns1\nns1 60 A 192.0.2.1\n\
                    txt TXT \"a b\" c\nmx MX 10 mail.example.net.\nx TYPE65280 \\# 2 abcd\n";
        let p = parse_zone(text, &origin());
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.records.len(), 6);
        let soa = &p.records[0];
        assert_eq!(soa.rtype, SOA);
        assert_eq!(soa.ttl, 3600);
        assert_eq!(&soa.rdata[soa.rdata.len() - 4..], &300u32.to_be_bytes());
        assert_eq!(p.records[1].owner, origin());
        assert_eq!(p.records[1].line, 4);
        assert_eq!(p.records[2].ttl, 60);
        assert_eq!(p.records[3].rdata, b"\x03a b\x01c");
        assert_eq!(p.records[5].rdata, vec![0xab, 0xcd]);
    }

    #[test]
    fn reports_every_bad_line() {
        let text = "@ SOA ns1 h 1 2 3 4 5\na A 300.1.1.1\nb BOGUS x\nc AAAA ::1 extra\n";
        let p = parse_zone(text, &origin());
        let lines: Vec<usize> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4], "{:?}", p.errors);
    }

    #[test]
    fn record_data_errors_say_what_is_wrong() {
        let cases = [
            ("a A 300.1.1.1", "A record: bad IPv4 address '300.1.1.1'"),
            (
                "a MX 70000 mx",
                "MX record: '70000' is not a number from 0 to 65535",
            ),
            ("a TXT", "TXT record: missing text"),
            (
                "a TYPE999 \\# 2 01",
                "TYPE999 record: \\# length 2 does not match 1 bytes of data",
            ),
            ("a SSHFP 1 1 abc", "SSHFP record: odd number of hex digits"),
            ("a CAA 0 is-sue x", "CAA record: bad tag 'is-sue'"),
        ];
        for (line, want) in cases {
            let p = parse_zone(line, &origin());
            let got: Vec<&str> = p.errors.iter().map(|e| e.message.as_str()).collect();
            assert_eq!(got, vec![want], "{line}");
        }
    }

    /// A zone past the parallel size: directives mid-file, multi-line
    /// records, quoted strings with newlines, blank owners and bad lines.
    fn big_zone(parens_at_seams: bool) -> String {
        let mut t = String::from("$TTL 300\n@ SOA ns h 1 1 1 1 1\n@ NS ns\n");
        let mut i = 0;
        while t.len() < 3 * PARALLEL_BYTES {
            i += 1;
            match i % 997 {
                0 => t.push_str(&format!("$ORIGIN s{i}.yingzi.com.\n")),
                1 => t.push_str(&format!("$TTL {i}\n")),
                2 => t.push_str(&format!("m{i} MX ( 10\n  mail{i} )\n")),
                3 => t.push_str(&format!("t{i} TXT \"two\nlines\" ; comment\n")),
                4 => t.push_str(&format!("bad{i} A 300.1.1.1\n")),
                5 => t.push_str(&format!("bad{i} 1x A 192.0.2.1\n")),
                _ => t.push_str(&format!(
                    "h{i} 60 IN A 192.0.2.{}\n  AAAA 2001:db8::{:x}\n",
                    i % 250,
                    i
                )),
            }
            if parens_at_seams && i % 50 == 0 {
                // Records whose continuation lines start with data: a
                // chunk may start inside them.
                t.push_str(&format!("p{i} SOA (\nns\nh\n1 1 1 1 1 )\n"));
            }
        }
        t
    }

    #[test]
    fn chunks_parse_as_one_thread_does() {
        for parens in [false, true] {
            let text = big_zone(parens);
            let one = parse_in_chunks(&text, &origin(), 1);
            assert!(one.records.len() > 50_000, "{}", one.records.len());
            assert!(one.errors.len() > 100, "{}", one.errors.len());
            for n in [2, 3, 7] {
                assert!(chunk_starts(&text, n).len() == n);
                let many = parse_in_chunks(&text, &origin(), n);
                assert_eq!(many.records, one.records, "{n} chunks");
                assert_eq!(many.errors, one.errors, "{n} chunks");
            }
        }
    }

    #[test]
    fn a_seam_inside_a_record_falls_back_to_one_thread() {
        // Continuation lines that look like owners everywhere: every cut
        // lands inside the parentheses.
        let mut text = String::from("@ SOA ns h 1 1 1 1 1\n@ NS ns\nx TXT (\n");
        while text.len() < 2 * PARALLEL_BYTES {
            text.push_str("abcdefgh\n");
        }
        text.push_str(")\n");
        let starts = chunk_starts(&text, 2);
        assert_eq!(starts.len(), 2);
        let many = parse_in_chunks(&text, &origin(), 2);
        let one = parse_in_chunks(&text, &origin(), 1);
        assert_eq!(many.records, one.records);
        assert_eq!(many.errors, one.errors);
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("1h30m"), Some(5400));
        assert_eq!(parse_ttl("1W"), Some(604800));
        assert_eq!(parse_ttl("x"), None);
    }
}
