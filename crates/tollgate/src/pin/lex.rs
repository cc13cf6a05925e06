//! A light SQL lexer over the bytes a client sends, just precise enough for pin detection:
//! words, string literals, dollar quotes, comments, `;`.
//!
//! Query text is bytes in the client's `client_encoding` ("Character Set Support"), and the
//! server converts it to the server encoding before its own lexer runs. In most encodings
//! every byte of a multibyte character has its high bit set, so an ASCII byte is always that
//! ASCII character. In SJIS, BIG5, GBK, UHC, GB18030 and JOHAB the second byte of a character
//! may be ASCII (表 is `0x95 0x5C` in SJIS: a "backslash" the server never sees), so there
//! the lexer steps over whole characters, with the lengths PostgreSQL's `pg_*_mblen` use.

/// How the bytes of one client's SQL are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// The client's `client_encoding`, as far as character boundaries go.
    pub encoding: Encoding,
    /// `standard_conforming_strings`: when off, backslash escapes in `'...'` as in `E'...'`.
    pub standard_conforming_strings: bool,
}

impl Default for Dialect {
    /// UTF-8 with standard-conforming strings: the server defaults.
    fn default() -> Self {
        Dialect {
            encoding: Encoding::AsciiSafe,
            standard_conforming_strings: true,
        }
    }
}

impl Dialect {
    /// The dialect from the values the server last reported to the client (ParameterStatus
    /// `client_encoding` and `standard_conforming_strings`); unknown values read as defaults.
    pub fn from_reported(
        client_encoding: Option<&str>,
        standard_conforming_strings: Option<&str>,
    ) -> Self {
        Dialect {
            encoding: client_encoding.map_or(Encoding::AsciiSafe, Encoding::from_name),
            standard_conforming_strings: !standard_conforming_strings
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("off")),
        }
    }
}

/// Client encodings by how their characters are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF8, LATIN1..10, WIN125x, EUC_*, KOI8*, ISO_8859_*, MULE_INTERNAL, SQL_ASCII...: no
    /// ASCII byte is ever part of a multibyte character, so bytes can be read one by one.
    AsciiSafe,
    /// SJIS and SHIFT_JIS_2004: 0xA1..=0xDF is one byte (half-width katakana); any other high
    /// byte starts a two-byte character whose second byte may be ASCII.
    Sjis,
    /// BIG5, GBK, UHC: a high byte starts a two-byte character.
    TwoByte,
    /// GB18030: a high byte starts four bytes when the next is a digit, two otherwise.
    Gb18030,
    /// JOHAB (as EUC): 0x8F starts three bytes, any other high byte two.
    Johab,
}

impl Encoding {
    /// The encoding for a `client_encoding` name or alias, compared as PostgreSQL does
    /// (`clean_encoding_name`: case and punctuation ignored).
    pub fn from_name(name: &str) -> Encoding {
        // Cleaned on the stack: the relay asks once per statement. Every name matched below
        // is at most 12 characters, so a longer cleaned name is none of them.
        let mut buf = [0u8; 16];
        let mut len = 0;
        for b in name.bytes().filter(u8::is_ascii_alphanumeric) {
            let Some(slot) = buf.get_mut(len) else {
                return Encoding::AsciiSafe;
            };
            *slot = b.to_ascii_lowercase();
            len += 1;
        }
        let clean = buf.get(..len).unwrap_or_default();
        match clean {
            b"sjis" | b"shiftjis" | b"mskanji" | b"win932" | b"windows932" | b"shiftjis2004" => {
                Encoding::Sjis
            }
            b"big5" | b"win950" | b"windows950" | b"gbk" | b"win936" | b"windows936" | b"cp936"
            | b"uhc" | b"win949" | b"windows949" => Encoding::TwoByte,
            b"gb18030" => Encoding::Gb18030,
            b"johab" => Encoding::Johab,
            _ => Encoding::AsciiSafe,
        }
    }

    /// Length of the character starting at `b[i]` (at least 1; may run past the end of a
    /// truncated text, which callers treat as the end).
    pub(crate) fn char_len(self, b: &[u8], i: usize) -> usize {
        let Some(&c) = b.get(i) else { return 1 };
        if c < 0x80 {
            return 1;
        }
        match self {
            Encoding::AsciiSafe => 1,
            Encoding::Sjis if (0xa1..=0xdf).contains(&c) => 1,
            Encoding::Sjis | Encoding::TwoByte => 2,
            Encoding::Gb18030 if b.get(i + 1).is_some_and(u8::is_ascii_digit) => 4,
            Encoding::Gb18030 => 2,
            Encoding::Johab if c == 0x8f => 3,
            Encoding::Johab => 2,
        }
    }
}

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// A keyword or identifier, ASCII-lower-cased (quoted identifiers keep their case).
    Word(Vec<u8>),
    /// A string constant (`'..'`, `E'..'`, `$tag$..$tag$`): the byte range of its body in the
    /// text (escapes not decoded), and whether that body has no backslash (so its bytes are
    /// its value, give or take doubled quotes).
    Str {
        start: usize,
        end: usize,
        plain: bool,
    },
    /// A positional parameter (`$1`): a value the text does not show.
    Param,
    /// A number.
    Number,
    /// Any other single byte (operators, parentheses, commas, dots).
    Punct(u8),
    /// End of a statement.
    Semicolon,
}

/// Bytes that may start an identifier (PostgreSQL's `ident_start`).
fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

/// Bytes that may continue an identifier (`ident_cont`).
pub(crate) fn ident_cont(c: u8) -> bool {
    ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// Splits `b` into tokens as `d` says the server will read it.
pub(crate) fn lex(b: &[u8], d: Dialect) -> Vec<Token> {
    let enc = d.encoding;
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let next = b.get(i + 1).copied();
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            // Comment delimiters and newlines are below 0x30, which no second byte of any
            // encoding is, so comments can be skipped byte by byte.
            b'-' if next == Some(b'-') => {
                while b.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
            }
            b'/' if next == Some(b'*') => i = skip_block_comment(b, i),
            b'\'' => {
                let escapes = !d.standard_conforming_strings;
                let (tok, end) = string(b, i + 1, escapes, enc);
                out.push(tok);
                i = end;
            }
            b'"' => {
                let (word, end) = quoted_ident(b, i + 1, enc);
                out.push(Token::Word(word));
                i = end;
            }
            b'$' => {
                let (tok, end) = dollar(b, i, enc);
                out.push(tok);
                i = end;
            }
            b';' => {
                out.push(Token::Semicolon);
                i += 1;
            }
            c if ident_start(c) => {
                if next == Some(b'\'') {
                    match c {
                        // E'..': backslash escapes whatever standard_conforming_strings says.
                        b'e' | b'E' => {
                            let (tok, end) = string(b, i + 2, true, enc);
                            out.push(tok);
                            i = end;
                            continue;
                        }
                        // B'..' and X'..': bit strings, no escapes and no doubled quotes.
                        b'b' | b'B' | b'x' | b'X' => {
                            let start = i + 2;
                            let end = b
                                .get(start..)
                                .and_then(|r| r.iter().position(|&c| c == b'\''))
                                .map_or(b.len(), |p| start + p);
                            out.push(Token::Str {
                                start,
                                end,
                                plain: true,
                            });
                            i = end + 1;
                            continue;
                        }
                        _ => {}
                    }
                }
                let start = i;
                while let Some(&c) = b.get(i) {
                    if !ident_cont(c) {
                        break;
                    }
                    i += enc.char_len(b, i);
                }
                let end = i.min(b.len());
                let word = b.get(start..end).unwrap_or_default().to_ascii_lowercase();
                out.push(Token::Word(word));
            }
            c if c.is_ascii_digit() => {
                while b
                    .get(i)
                    .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_')
                {
                    i += 1;
                }
                out.push(Token::Number);
            }
            c => {
                out.push(Token::Punct(c));
                i += 1;
            }
        }
    }
    out
}

/// Index just past a (nested) `/* */` comment starting at `i`.
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b.get(i) == Some(&b'/') && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b.get(i) == Some(&b'*') && b.get(i + 1) == Some(&b'/') {
            depth = depth.saturating_sub(1);
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// A quoted string whose body starts at `i`: the token and the index just past its closing
/// quote. Doubled quotes stay inside; with `escapes`, a backslash takes the next character.
fn string(b: &[u8], mut i: usize, escapes: bool, enc: Encoding) -> (Token, usize) {
    let start = i;
    let mut plain = true;
    while let Some(&c) = b.get(i) {
        if c == b'\\' {
            plain = false;
            i += 1;
            if escapes {
                i += enc.char_len(b, i);
            }
        } else if c == b'\'' {
            if b.get(i + 1) == Some(&b'\'') {
                i += 2;
            } else {
                let tok = Token::Str {
                    start,
                    end: i,
                    plain,
                };
                return (tok, i + 1);
            }
        } else {
            i += enc.char_len(b, i);
        }
    }
    let end = b.len();
    (
        Token::Str {
            start: start.min(end),
            end,
            plain,
        },
        end,
    )
}

/// A `"quoted identifier"` whose body starts at `i`: its name (case kept, `""` as `"`) and the
/// index just past the closing quote.
fn quoted_ident(b: &[u8], mut i: usize, enc: Encoding) -> (Vec<u8>, usize) {
    let mut name = Vec::new();
    while let Some(&c) = b.get(i) {
        if c == b'"' {
            if b.get(i + 1) == Some(&b'"') {
                name.push(b'"');
                i += 2;
            } else {
                return (name, i + 1);
            }
        } else {
            let n = enc.char_len(b, i);
            name.extend_from_slice(b.get(i..(i + n).min(b.len())).unwrap_or_default());
            i += n;
        }
    }
    (name, b.len())
}

/// At a `$`: a dollar-quoted string (`$$..$$`, `$tag$..$tag$`, the tag's characters as in
/// an identifier, non-ASCII letters included) or a positional parameter.
fn dollar(b: &[u8], i: usize, enc: Encoding) -> (Token, usize) {
    let mut j = i + 1;
    if b.get(j).is_some_and(u8::is_ascii_digit) {
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        return (Token::Param, j);
    }
    if b.get(j).is_some_and(|&c| ident_start(c)) {
        while let Some(&c) = b.get(j) {
            if !(ident_cont(c) && c != b'$') {
                break;
            }
            j += enc.char_len(b, j);
        }
    }
    if b.get(j) != Some(&b'$') {
        // A lone `$` (or `$tag` with no closing `$`): not a string.
        return (Token::Punct(b'$'), i + 1);
    }
    let Some(tag) = b.get(i..=j) else {
        return (Token::Punct(b'$'), b.len());
    };
    let start = j + 1;
    let close = b
        .get(start..)
        .and_then(|r| r.windows(tag.len()).position(|w| w == tag))
        .map(|p| start + p);
    let end = close.unwrap_or(b.len());
    let plain = !b.get(start..end).is_some_and(|body| body.contains(&b'\\'));
    // A dollar-quoted body is taken literally: backslashes in it are plain characters, but
    // `plain` only promises "no backslash", so say so.
    let tok = Token::Str {
        start: start.min(end),
        end,
        plain,
    };
    (tok, close.map_or(b.len(), |c| c + tag.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &[u8], d: Dialect) -> Vec<String> {
        lex(sql, d)
            .into_iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(String::from_utf8_lossy(&w).into_owned()),
                Token::Semicolon => Some(";".into()),
                _ => None,
            })
            .collect()
    }

    fn sjis() -> Dialect {
        Dialect {
            encoding: Encoding::Sjis,
            ..Dialect::default()
        }
    }

    #[test]
    fn encoding_names_and_aliases_are_recognised_as_postgresql_does() {
        for (name, enc) in [
            ("SJIS", Encoding::Sjis),
            ("Shift_JIS", Encoding::Sjis),
            ("SHIFT_JIS_2004", Encoding::Sjis),
            ("win932", Encoding::Sjis),
            ("BIG5", Encoding::TwoByte),
            ("GBK", Encoding::TwoByte),
            ("UHC", Encoding::TwoByte),
            ("GB18030", Encoding::Gb18030),
            ("JOHAB", Encoding::Johab),
            ("UTF8", Encoding::AsciiSafe),
            ("LATIN1", Encoding::AsciiSafe),
            ("EUC_JP", Encoding::AsciiSafe),
            ("WIN1252", Encoding::AsciiSafe),
            ("Shift_JIS_2004", Encoding::Sjis),
            ("shift-jis-2004-but-longer", Encoding::AsciiSafe),
            ("", Encoding::AsciiSafe),
        ] {
            assert_eq!(Encoding::from_name(name), enc, "{name}");
        }
        let d = Dialect::from_reported(Some("SJIS"), Some("off"));
        assert_eq!(d.encoding, Encoding::Sjis);
        assert!(!d.standard_conforming_strings);
        assert_eq!(Dialect::from_reported(None, None), Dialect::default());
    }

    #[test]
    fn character_lengths_follow_postgresql_mblen() {
        assert_eq!(Encoding::Sjis.char_len(b"\x95\x5c", 0), 2);
        assert_eq!(Encoding::Sjis.char_len(b"\xb1", 0), 1);
        assert_eq!(Encoding::TwoByte.char_len(b"\xa5\x5c", 0), 2);
        assert_eq!(Encoding::Gb18030.char_len(b"\x81\x30\x81\x30", 0), 4);
        assert_eq!(Encoding::Gb18030.char_len(b"\x81\x40", 0), 2);
        assert_eq!(Encoding::Johab.char_len(b"\x8f\xa1\xa1", 0), 3);
        assert_eq!(Encoding::AsciiSafe.char_len(b"\xc3\xa9", 0), 1);
        assert_eq!(Encoding::Sjis.char_len(b"a", 0), 1);
    }

    #[test]
    fn sjis_second_byte_backslash_does_not_escape_a_quote() {
        // E'表'; LISTEN x  -- 表 is 0x95 0x5C in SJIS.
        let sql = b"SELECT E'\x95\x5c'; LISTEN x";
        assert_eq!(words(sql, sjis()), ["select", ";", "listen", "x"]);
        // Read byte by byte the 0x5C escapes the quote and LISTEN disappears into a string.
        assert_eq!(words(sql, Dialect::default()), ["select"]);
    }

    #[test]
    fn sjis_characters_stay_inside_identifiers_and_dollar_tags() {
        assert_eq!(
            lex(b"select \x95\x5cx", sjis()),
            [
                Token::Word(b"select".to_vec()),
                Token::Word(b"\x95\x5cx".to_vec())
            ]
        );
        let sql = b"SELECT $\x95\x5c$ it's $\x95\x5c$; LISTEN x";
        assert_eq!(words(sql, sjis()), ["select", ";", "listen", "x"]);
    }

    #[test]
    fn non_ascii_dollar_tags_quote() {
        let sql = "SELECT $é$ it's ; LISTEN y $é$; LISTEN x".as_bytes();
        assert_eq!(
            words(sql, Dialect::default()),
            ["select", ";", "listen", "x"]
        );
    }

    #[test]
    fn backslashes_escape_only_when_the_dialect_says() {
        let sql = br"SELECT 'a\'; LISTEN x; --'";
        let on = Dialect::default();
        let off = Dialect {
            standard_conforming_strings: false,
            ..on
        };
        assert_eq!(words(sql, on), ["select", ";", "listen", "x", ";"]);
        assert_eq!(words(sql, off), ["select"]);
        // Bit strings never take escapes.
        assert_eq!(
            words(br"SELECT X'\'; LISTEN x", off),
            ["select", ";", "listen", "x"]
        );
    }

    #[test]
    fn parameters_and_strings_carry_their_spans() {
        let sql = b"set_config('a', 'pg_temp', $1)";
        let toks = lex(sql, Dialect::default());
        assert!(toks.contains(&Token::Param));
        assert!(toks.contains(&Token::Str {
            start: 17,
            end: 24,
            plain: true
        }));
    }
}
