//! libphonenumber's verdict on a parsed number (its region, and whether it is valid), as the
//! `phonenumber` crate gives it with `is_valid` and `country().id()`, from the crate's own
//! metadata and by its own rules, with each pattern compiled once per process.
//!
//! Why not call the crate: its patterns live in a regex cache keyed by their text, so every
//! match first hashes the pattern (SipHash over up to kilobytes of it) and compares it: most of
//! a validation's time, which the SMS hook pays on every sign-in. The rules below are the
//! crate's `source_for` and `number_type`, and the tests hold them to the crate's answers.

use phonenumber::country::Id;
use phonenumber::metadata::{Descriptor, Metadata, DATABASE};
use phonenumber::PhoneNumber;
use regex::{Regex, RegexBuilder};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

/// What libphonenumber says of a parsed number.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// CLDR region, e.g. "MX"; None for non-geographic numbers (and where the crate finds none).
    pub region: Option<String>,
    pub valid: bool,
}

pub fn verdict(number: &PhoneNumber) -> Verdict {
    let code = number.code().value();
    // As the crate: validity is judged on the national number with its leading zeros, the
    // region on its value without them (so Italy's fixed lines, +39 0…, get no region).
    let national = number.national().to_string();
    let source_found = source(code, &national);
    let metadata = source_found.map(|(m, _)| m);
    // A region found by its patterns (the US among +1's) has judged the number already.
    let valid = source_found
        .is_some_and(|(m, valid)| valid.unwrap_or_else(|| compiled().get(m).is_valid(&national)));
    let value = number.national().value().to_string();
    let region_metadata = if value == national {
        metadata
    } else {
        source(code, &value).map(|(m, _)| m)
    };
    Verdict {
        region: region_metadata
            .and_then(|m| m.id().parse::<Id>().ok())
            .map(|id| id.as_ref().to_owned()),
        valid,
    }
}

/// The metadata a number of this calling code is judged by (the crate's `source_for`): the
/// code's only region, or the first of its regions whose leading digits (or, without those,
/// whose patterns) the national number matches; with, when those patterns decided, the
/// number's validity by them (true).
fn source(code: u16, national: &str) -> Option<(&'static Metadata, Option<bool>)> {
    let database = &*DATABASE;
    let regions = database.region(&code)?;
    match regions[..] {
        ["001"] => database
            .by_code(&code)?
            .into_iter()
            .next()
            .map(|m| (m, None)),
        [region] => database
            .by_id(region.parse::<Id>().ok()?.as_ref())
            .map(|m| (m, None)),
        _ => regions.iter().find_map(|region| {
            let metadata = database.by_id(*region)?;
            let compiled = compiled().get(metadata);
            match compiled.leading_digits() {
                Some(leading) => leading.is_match(national).then_some((metadata, None)),
                None => compiled
                    .is_valid(national)
                    .then_some((metadata, Some(true))),
            }
        }),
    }
}

/// As the crate compiles its patterns, anchored at the start: the crate accepts a match that
/// begins at the first digit (`find(..).start() == 0`, not anchored at the end), and a match
/// there exists exactly when the leftmost one begins there. Anchored, the search runs forward
/// only and stops at the first match. Without Unicode (`\d` is [0-9]): national numbers are
/// ASCII digits, and the automata are far smaller. The tests compile every pattern.
fn compile(pattern: &str) -> Regex {
    RegexBuilder::new(&format!("^(?:{pattern})"))
        .ignore_whitespace(true)
        .unicode(false)
        .build()
        .unwrap_or_else(|e| panic!("phone number pattern {pattern:?}: {e}"))
}

/// The kinds of number the crate's `number_type` names (anything but Unknown), by name, as the
/// metadata entry describes them: a number is valid when its entry's general pattern and one of
/// these match it.
pub fn valid_kinds(metadata: &Metadata) -> impl Iterator<Item = (&'static str, &Descriptor)> {
    let all = metadata.descriptors();
    [
        ("premium_rate", all.premium_rate()),
        ("toll_free", all.toll_free()),
        ("shared_cost", all.shared_cost()),
        ("voip", all.voip()),
        ("personal_number", all.personal_number()),
        ("pager", all.pager()),
        ("uan", all.uan()),
        ("voicemail", all.voicemail()),
        ("fixed_line", all.fixed_line()),
        ("mobile", all.mobile()),
    ]
    .into_iter()
    .filter_map(|(name, kind)| kind.map(|k| (name, k)))
}

struct Pattern {
    lengths: &'static [u16],
    regex: Regex,
}

impl Pattern {
    fn new(descriptor: &'static Descriptor) -> Self {
        Pattern {
            lengths: descriptor.possible_length(),
            regex: compile(descriptor.national_number().as_str()),
        }
    }

    /// The crate's `Descriptor::is_match`.
    fn is_match(&self, national: &str) -> bool {
        (self.lengths.is_empty() || self.lengths.contains(&(national.len() as u16)))
            && self.regex.is_match(national)
    }
}

/// One metadata entry's patterns, each compiled when first needed: a +1 number outside the US
/// reads the leading digits of many NANP regions and the kinds of few.
struct EntryPatterns {
    metadata: &'static Metadata,
    leading_digits: OnceLock<Option<Regex>>,
    kinds: OnceLock<(Pattern, Vec<Pattern>)>,
}

impl EntryPatterns {
    fn leading_digits(&self) -> Option<&Regex> {
        self.leading_digits
            .get_or_init(|| self.metadata.leading_digits().map(|r| compile(r.as_str())))
            .as_ref()
    }

    fn kinds(&self) -> &(Pattern, Vec<Pattern>) {
        self.kinds.get_or_init(|| {
            let kinds = valid_kinds(self.metadata).map(|(_, k)| Pattern::new(k));
            (
                Pattern::new(self.metadata.descriptors().general()),
                kinds.collect(),
            )
        })
    }

    /// Whether the crate's `number_type` is other than Unknown.
    fn is_valid(&self, national: &str) -> bool {
        let (general, kinds) = self.kinds();
        general.is_match(national) && kinds.iter().any(|k| k.is_match(national))
    }

    fn compile_all(&self) {
        self.leading_digits();
        self.kinds();
    }
}

/// Every metadata entry's patterns once compiled, by the entry's address (the crate's database
/// is static; its non-geographic entries share the id "001"). At most one per entry, about 260.
#[derive(Default)]
struct CompiledEntries(RwLock<HashMap<usize, Arc<EntryPatterns>>>);

impl CompiledEntries {
    fn get(&self, metadata: &'static Metadata) -> Arc<EntryPatterns> {
        let key = metadata as *const Metadata as usize;
        if let Some(found) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return found.clone();
        }
        let mut all = self.0.write().unwrap_or_else(|e| e.into_inner());
        all.entry(key)
            .or_insert_with(|| {
                Arc::new(EntryPatterns {
                    metadata,
                    leading_digits: OnceLock::new(),
                    kinds: OnceLock::new(),
                })
            })
            .clone()
    }
}

fn compiled() -> &'static CompiledEntries {
    static COMPILED: LazyLock<CompiledEntries> = LazyLock::new(CompiledEntries::default);
    &COMPILED
}

/// Every metadata entry, the non-geographic ones included.
fn entries() -> impl Iterator<Item = &'static Metadata> {
    (1..=999u16).flat_map(|code| DATABASE.by_code(&code).unwrap_or_default())
}

/// Loads libphonenumber's metadata and compiles every pattern a verdict reads, and the crate's
/// own for parsing: what a process otherwise pays at its first number, about 50 ms, most of it
/// loading the metadata. For a process that others fork from (PostgreSQL's postmaster, with the
/// library preloaded): they start with it done. The crate keeps at most 100 of its patterns
/// (an LRU cache), fewer than all entries use: the examples are parsed from the highest calling
/// code down, so that those kept are the lowest codes' (+1 last), where most sign-ins are.
pub fn warm() {
    let all: Vec<&'static Metadata> = entries().collect();
    for metadata in &all {
        compiled().get(metadata).compile_all();
    }
    for metadata in all.iter().rev() {
        let general = metadata.descriptors().general();
        let example = std::iter::once(general)
            .chain(valid_kinds(metadata).map(|(_, kind)| kind))
            .find_map(Descriptor::example);
        if let Some(example) = example {
            let _ = phonenumber::parse(None, format!("+{}{example}", metadata.country_code()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's own answer.
    fn crate_verdict(number: &PhoneNumber) -> Verdict {
        Verdict {
            region: number.country().id().map(|id| id.as_ref().to_owned()),
            valid: phonenumber::is_valid(number),
        }
    }

    /// Every example number of every kind, and numbers near each: a digit changed, one more,
    /// one fewer; and seeded random national numbers of every length for every calling code,
    /// with and without a leading zero.
    fn vectors() -> Vec<String> {
        let mut numbers = Vec::new();
        let mut codes: Vec<u16> = Vec::new();
        for metadata in entries() {
            let code = metadata.country_code();
            codes.push(code);
            let general = metadata.descriptors().general();
            let kinds = std::iter::once(general).chain(valid_kinds(metadata).map(|(_, k)| k));
            for example in kinds.filter_map(Descriptor::example) {
                let base = format!("+{code}{example}");
                numbers.push(base.clone());
                numbers.push(format!("{base}7"));
                numbers.push(base[..base.len() - 1].to_owned());
                let mut changed = base.into_bytes();
                let last = changed.len() - 3;
                changed[last] = b'0' + (changed[last] - b'0' + 5) % 10;
                numbers.push(String::from_utf8(changed).unwrap());
            }
        }
        codes.sort_unstable();
        codes.dedup();
        let mut random = fastrand::Rng::with_seed(22);
        for code in codes {
            for length in 4..=14 {
                for _ in 0..12 {
                    let national: String = (0..length)
                        .map(|i| char::from(b'0' + random.u8(u8::from(i == 0)..10)))
                        .collect();
                    numbers.push(format!("+{code}{national}"));
                    numbers.push(format!("+{code}0{national}"));
                }
            }
        }
        numbers
    }

    /// Compiling panics on a pattern that does not compile (warming compiles them all).
    #[test]
    fn every_pattern_compiles() {
        let fresh = CompiledEntries::default();
        for metadata in entries() {
            fresh.get(metadata).compile_all();
        }
        let all = fresh.0.read().unwrap();
        assert_eq!(all.len(), entries().count());
        assert!(all
            .values()
            .all(|e| e.leading_digits.get().is_some() && e.kinds.get().is_some()));
        let patterns: usize = entries().map(|m| 1 + valid_kinds(m).count()).sum();
        assert!(patterns > 1_300, "{patterns}");
    }

    #[test]
    fn the_verdict_is_the_crates() {
        let (mut compared, mut valid, mut without_region) = (0, 0, 0);
        for text in vectors() {
            let Ok(number) = phonenumber::parse(None, &text) else {
                continue;
            };
            let expected = crate_verdict(&number);
            assert_eq!(verdict(&number), expected, "{text}");
            compared += 1;
            valid += usize::from(expected.valid);
            without_region += usize::from(expected.region.is_none());
        }
        // The vectors reach both answers and both kinds of region, not only one of each.
        assert!(compared > 30_000, "{compared}");
        assert!(
            valid > 3_000 && compared - valid > 10_000,
            "{valid} of {compared}"
        );
        assert!(without_region > 1_000, "{without_region}");
    }

    #[test]
    fn regions_by_leading_digits_and_as_the_crate_without_leading_zeros() {
        let puerto_rico = phonenumber::parse(None, "+17875551234").unwrap();
        assert_eq!(verdict(&puerto_rico).region.as_deref(), Some("PR"));
        let jamaica = phonenumber::parse(None, "+18762345678").unwrap();
        assert_eq!(verdict(&jamaica), crate_verdict(&jamaica));
        // The crate finds Italy's fixed lines (+39 0…) no region: routing by region misses them.
        let italy_fixed = phonenumber::parse(None, "+390236618300").unwrap();
        assert_eq!(
            verdict(&italy_fixed),
            Verdict {
                region: None,
                valid: true
            }
        );
    }
}
