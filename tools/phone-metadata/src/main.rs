//! Writes, on standard output, the phone-number metadata of the SQL-only edition
//! (`sql/sql_only/phone_metadata.sql`): every calling code's regions with the patterns the
//! `phonenumber` crate parses and validates by, taken from the crate itself, so that the SQL
//! `mysmshook.phone_info` (sql/sql_only/phone_info.sql) judges numbers as the extension's does.
//! `scripts/generate.sh` runs it; the suite fails when the file is out of date. With
//! `--examples` it writes instead, one per line, the example number of every kind of every
//! region, in E.164 form: the suite's vectors for comparing both editions' phone_info.
//!
//! The crate compiles its patterns with Rust's `regex` (whitespace ignored) and matches them
//! from the first digit; PostgreSQL's regular expressions read the same subset once the
//! whitespace is gone and `^(?:…)` is put around them. Anything outside that subset stops the
//! generation rather than change a meaning silently.

use mysmshook_engine::phone::valid_kinds;
use phonenumber::metadata::DATABASE;
use std::fmt::Write;

/// A crate pattern as a PostgreSQL regular expression that matches where the crate's
/// `find(..).start() == 0` does: anchored at the start only. With `capture`, the whole match
/// is group 1 (its length is what the national prefix takes) and the crate's groups follow.
fn anchored(pattern: &str, capture: bool) -> String {
    let compact: String = pattern.chars().filter(|c| !c.is_whitespace()).collect();
    // \d becomes [0-9] (outside brackets only): no backslash in the SQL file, whatever
    // standard_conforming_strings the session that applies it has. Any other escape, or \d in
    // brackets, stops the generation.
    let mut translated = String::new();
    let (mut chars, mut in_brackets) = (compact.chars(), false);
    while let Some(c) = chars.next() {
        match c {
            '\\' if !in_brackets && chars.next() == Some('d') => translated.push_str("[0-9]"),
            '[' | ']' if in_brackets == (c == ']') => {
                in_brackets = c == '[';
                translated.push(c);
            }
            c if c.is_ascii_digit() || "-()?:|{},$".contains(c) => translated.push(c),
            _ => panic!("pattern {compact:?} uses syntax this generator does not translate"),
        }
    }
    let compact = translated;
    // PostgreSQL picks the longest match of a greedy expression, Rust the first alternative
    // that matches: lazy quantifiers would make them differ in more than alternation order.
    for lazy in ["??", "}?", "*?", "+?"] {
        assert!(!compact.contains(lazy), "lazy quantifier in {compact:?}");
    }
    if capture {
        format!("^((?:{compact}))")
    } else {
        format!("^(?:{compact})")
    }
}

/// The crate's replacement (`$1`) in PostgreSQL's syntax, its groups shifted by the one
/// `anchored(.., true)` adds.
fn transform(rule: &str) -> String {
    let mut out = String::new();
    let mut chars = rule.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => {
                let group = chars.next().and_then(|g| g.to_digit(10));
                let next_is_digit = chars.peek().is_some_and(|n| n.is_ascii_digit());
                match group {
                    // "$12" would name group 12 in Rust; no rule has one.
                    Some(g) if !next_is_digit && g < 9 => write!(out, "\\{}", g + 1).unwrap(),
                    _ => panic!("transform rule {rule:?} is not digits and $N"),
                }
            }
            d if d.is_ascii_digit() => out.push(d),
            _ => panic!("transform rule {rule:?} is not digits and $N"),
        }
    }
    out
}

/// A SQL literal that reads the same whatever the session's standard_conforming_strings.
fn text(value: Option<&str>) -> String {
    match value {
        Some(v) if v.contains('\\') => {
            format!("E'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
        }
        Some(v) => format!("'{}'", v.replace('\'', "''")),
        None => "null".into(),
    }
}

fn lengths(values: &[u16]) -> String {
    let list: Vec<String> = values.iter().map(u16::to_string).collect();
    format!("'{{{}}}'", list.join(","))
}

/// Every example number the metadata holds, in E.164 form.
fn examples() -> Vec<String> {
    let mut numbers = Vec::new();
    for code in 1..=999u16 {
        for meta in DATABASE.by_code(&code).unwrap_or_default() {
            let kinds = valid_kinds(meta).map(|(_, kind)| kind);
            for desc in std::iter::once(meta.descriptors().general()).chain(kinds) {
                if let Some(example) = desc.example() {
                    numbers.push(format!("+{code}{example}"));
                }
            }
        }
    }
    numbers
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--examples") {
        for number in examples() {
            println!("{number}");
        }
        return;
    }
    let mut regions = String::new();
    let mut kinds = String::new();
    for code in 1..=999u16 {
        let (Some(ids), Some(metas)) = (DATABASE.region(&code), DATABASE.by_code(&code)) else {
            continue;
        };
        for (position, (id, meta)) in ids.iter().zip(metas).enumerate() {
            assert_eq!(*id, meta.id());
            let general = meta.descriptors().general();
            writeln!(
                regions,
                "{}({code}, {position}, {}, {}, {}, {}, {}, {}, {}, {})",
                if regions.is_empty() { "    " } else { "  , " },
                text(Some(id)),
                text(
                    meta.leading_digits()
                        .map(|r| anchored(r.as_str(), false))
                        .as_deref()
                ),
                text(meta.national_prefix()),
                text(
                    meta.national_prefix_for_parsing()
                        .map(|r| anchored(r.as_str(), true))
                        .as_deref()
                ),
                text(
                    meta.national_prefix_transform_rule()
                        .map(transform)
                        .as_deref()
                ),
                lengths(general.possible_length()),
                lengths(general.possible_local_length()),
                text(Some(&anchored(general.national_number().as_str(), false))),
            )
            .unwrap();
            for (name, desc) in valid_kinds(meta) {
                writeln!(
                    kinds,
                    "{}({code}, {position}, '{name}', {}, {})",
                    if kinds.is_empty() { "    " } else { "  , " },
                    lengths(desc.possible_length()),
                    text(Some(&anchored(desc.national_number().as_str(), false))),
                )
                .unwrap();
            }
        }
    }
    print!(
        "-- GENERATED by tools/phone-metadata (scripts/generate.sh) from the phonenumber crate pinned in
-- Cargo.toml: libphonenumber's metadata as that crate parses and validates numbers by. Do not
-- edit; regenerate when the crate is bumped (the suite fails while this file is out of date).
-- Read by the SQL-only edition's mysmshook.phone_info (sql/sql_only/phone_info.sql).

-- Each calling code's regions in the crate's order (its main country first); region 001 is a
-- non-geographic entity. Patterns are anchored at the first digit as the crate matches them.
create table mysmshook.phone_regions (
    calling_code       int  not null,
    position           int  not null,
    region             text not null,
    leading_digits     text,            -- a number is this region's when it starts so
    national_prefix    text,
    prefix_for_parsing text,            -- group 1 is what it takes off
    prefix_transform   text,            -- what replaces it, when anything does
    lengths            int[] not null,  -- empty: no length check; else the first is the shortest
    local_lengths      int[] not null,
    pattern            text not null,
    primary key (calling_code, position)
);

-- The kinds of number each region has that make a number valid.
create table mysmshook.phone_number_kinds (
    calling_code int   not null,
    position     int   not null,
    kind         text  not null,
    lengths      int[] not null,        -- empty: no length check
    pattern      text  not null,
    primary key (calling_code, position, kind),
    foreign key (calling_code, position) references mysmshook.phone_regions
);

insert into mysmshook.phone_regions values
{regions};

insert into mysmshook.phone_number_kinds values
{kinds};
"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_anchored_at_the_first_digit_and_lose_their_whitespace() {
        let us = anchored("[2-9]\\d{9}|\n 3\\d{6}", false);
        assert_eq!(us, "^(?:[2-9][0-9]{9}|3[0-9]{6})");
        assert_eq!(anchored("0(\\d)?", true), "^((?:0([0-9])?))");
    }

    #[test]
    #[should_panic(expected = "syntax")]
    fn unknown_syntax_stops_the_generation() {
        anchored("\\p{Nd}", false);
    }

    #[test]
    #[should_panic(expected = "syntax")]
    fn a_digit_class_inside_brackets_stops_the_generation() {
        anchored("[4\\d6]", false);
    }

    #[test]
    fn transform_rules_shift_their_groups() {
        assert_eq!(transform("268$1"), "268\\2");
        assert_eq!(transform("$2"), "\\3");
    }

    #[test]
    #[should_panic(expected = "not digits and $N")]
    fn two_digit_groups_stop_the_generation() {
        transform("$12");
    }
}
