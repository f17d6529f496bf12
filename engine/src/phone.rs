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
    let metadata = source(code, &national);
    let valid = metadata.is_some_and(|m| compiled().get(m).is_valid(&national));
    let value = number.national().value().to_string();
    let region_metadata = if value == national {
        metadata
    } else {
        source(code, &value)
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
/// whose patterns) the national number matches.
fn source(code: u16, national: &str) -> Option<&'static Metadata> {
    let database = &*DATABASE;
    let regions = database.region(&code)?;
    match regions[..] {
        ["001"] => database.by_code(&code)?.into_iter().next(),
        [region] => database.by_id(region.parse::<Id>().ok()?.as_ref()),
        _ => regions.iter().find_map(|region| {
            let metadata = database.by_id(*region)?;
            let compiled = compiled().get(metadata);
            let matches = match compiled.leading_digits() {
                Some(leading) => leading.is_match(national),
                None => compiled.is_valid(national),
            };
            matches.then_some(metadata)
        }),
    }
}

/// As the crate compiles its patterns, anchored at the start: the crate accepts a match that
/// begins at the first digit (`find(..).start() == 0`, not anchored at the end), and a match
/// there exists exactly when the leftmost one begins there. Anchored, the search runs forward
/// only and stops at the first match.
fn compile(pattern: &str) -> Regex {
    RegexBuilder::new(&format!("^(?:{pattern})"))
        .ignore_whitespace(true)
        .build()
        .expect("the phonenumber crate loaded this pattern, so it compiles")
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
struct Compiled {
    metadata: &'static Metadata,
    leading_digits: OnceLock<Option<Regex>>,
    kinds: OnceLock<(Pattern, Vec<Pattern>)>,
}

impl Compiled {
    fn leading_digits(&self) -> Option<&Regex> {
        self.leading_digits
            .get_or_init(|| self.metadata.leading_digits().map(|r| compile(r.as_str())))
            .as_ref()
    }

    /// Whether the crate's `number_type` is other than Unknown: the general pattern matches
    /// and so does one of the kinds a number can be.
    fn is_valid(&self, national: &str) -> bool {
        let (general, kinds) = self.kinds.get_or_init(|| {
            let all = self.metadata.descriptors();
            let kinds = [
                all.premium_rate(),
                all.toll_free(),
                all.shared_cost(),
                all.voip(),
                all.personal_number(),
                all.pager(),
                all.uan(),
                all.voicemail(),
                all.fixed_line(),
                all.mobile(),
            ];
            (
                Pattern::new(all.general()),
                kinds.into_iter().flatten().map(Pattern::new).collect(),
            )
        });
        general.is_match(national) && kinds.iter().any(|k| k.is_match(national))
    }
}

/// Compiled patterns by metadata entry (by address: the crate's database is static, and its
/// non-geographic entries share the id "001").
#[derive(Default)]
struct Regions(RwLock<HashMap<usize, Arc<Compiled>>>);

impl Regions {
    fn get(&self, metadata: &'static Metadata) -> Arc<Compiled> {
        let key = metadata as *const Metadata as usize;
        if let Some(found) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return found.clone();
        }
        let mut all = self.0.write().unwrap_or_else(|e| e.into_inner());
        all.entry(key)
            .or_insert_with(|| {
                Arc::new(Compiled {
                    metadata,
                    leading_digits: OnceLock::new(),
                    kinds: OnceLock::new(),
                })
            })
            .clone()
    }
}

fn compiled() -> &'static Regions {
    static REGIONS: LazyLock<Regions> = LazyLock::new(Regions::default);
    &REGIONS
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

    /// Every region's example numbers, and numbers near them: a digit changed, one more, one
    /// fewer, and seeded random national numbers of every length for every calling code.
    fn vectors() -> Vec<String> {
        let mut numbers = Vec::new();
        let mut codes: Vec<u16> = Vec::new();
        for metadata in DATABASE.iter() {
            codes.push(metadata.country_code());
            let all = metadata.descriptors();
            let examples = [all.general(), all.fixed_line().unwrap_or(all.general())]
                .into_iter()
                .chain(
                    [
                        all.mobile(),
                        all.toll_free(),
                        all.premium_rate(),
                        all.voip(),
                    ]
                    .into_iter()
                    .flatten(),
                )
                .filter_map(|d| d.example());
            for example in examples {
                let base = format!("+{}{example}", metadata.country_code());
                numbers.push(base.clone());
                numbers.push(format!("{base}7"));
                numbers.push(base[..base.len() - 1].to_owned());
                let mut changed = base.into_bytes();
                let last = changed.len() - 3;
                changed[last] = b'0' + (changed[last] - b'0' + 5) % 10;
                numbers.push(String::from_utf8(changed).unwrap());
            }
        }
        codes.extend([800, 808, 870, 878, 881, 882, 883, 888, 979]);
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
    fn nanp_numbers_find_their_region_by_leading_digits() {
        let puerto_rico = phonenumber::parse(None, "+17875551234").unwrap();
        assert_eq!(verdict(&puerto_rico).region.as_deref(), Some("PR"));
        let jamaica = phonenumber::parse(None, "+18762345678").unwrap();
        assert_eq!(verdict(&jamaica), crate_verdict(&jamaica));
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
