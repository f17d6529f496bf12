//! Which provider chain a job goes through. Phone numbers are parsed with libphonenumber's
//! metadata (the `phonenumber` crate), never by string slicing: +1 787 is Puerto Rico and
//! +1 809 the Dominican Republic although both share the US calling code. Pure.

use crate::job::Channel;

/// What routing needs to know about a phone number.
#[derive(Debug, Clone, PartialEq)]
pub struct PhoneInfo {
    pub calling_code: u16,
    /// CLDR region, e.g. "MX"; None for non-geographic numbers.
    pub region: Option<String>,
}

/// Parses an E.164 number (with `+`). Errors for numbers libphonenumber cannot parse or does
/// not consider valid for their region (sending to them would fail at every provider), unless
/// the number starts with one of `accepted_prefixes`: real numbers libphonenumber refuses,
/// such as Mexico's old mobile prefix +52 1, which WhatsApp still uses.
/// Errors name the number masked: they outlive the job's scrubbing and reach the server log.
/// What libphonenumber says of a number: the extension's `mysmshook.phone_info` (the SQL-only
/// edition answers the same from the metadata in SQL).
#[derive(Debug, Clone, PartialEq)]
pub struct PhoneFacts {
    /// The number in E.164 form, when it parses.
    pub e164: Option<String>,
    pub calling_code: Option<u16>,
    pub region: Option<String>,
    pub valid: bool,
    /// Why it is not valid, worded to follow "phone number +52****5678 ".
    pub reason: Option<String>,
}

/// Reads a number given in international form (with `+`).
pub fn phone_facts(number: &str) -> PhoneFacts {
    match phonenumber::parse(None, number) {
        Ok(parsed) => {
            let crate::phone::Verdict { region, valid } = crate::phone::verdict(&parsed);
            PhoneFacts {
                e164: Some(parsed.format().mode(phonenumber::Mode::E164).to_string()),
                calling_code: Some(parsed.code().value()),
                region,
                valid,
                reason: (!valid).then(|| INVALID_FOR_ITS_COUNTRY.to_owned()),
            }
        }
        Err(e) => PhoneFacts {
            e164: None,
            calling_code: None,
            region: None,
            valid: false,
            reason: Some(format!("cannot be parsed: {e}")),
        },
    }
}

const INVALID_FOR_ITS_COUNTRY: &str = "is not a valid number for its country (libphonenumber)";

pub fn parse_phone(e164: &str, accepted_prefixes: &[String]) -> Result<PhoneInfo, String> {
    let masked = || crate::job::mask_recipient(e164);
    let number = phonenumber::parse(None, e164)
        .map_err(|e| format!("phone number {} cannot be parsed: {e}", masked()))?;
    let verdict = crate::phone::verdict(&number);
    if !verdict.valid
        && !accepted_prefixes
            .iter()
            .any(|p| e164.starts_with(p.as_str()))
    {
        return Err(format!(
            "phone number {} {INVALID_FOR_ITS_COUNTRY}",
            masked()
        ));
    }
    Ok(PhoneInfo {
        calling_code: number.code().value(),
        region: verdict.region,
    })
}

/// One row of `mysmshook.routes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub channel: Channel,
    pub calling_codes: Vec<u16>,
    pub regions: Vec<String>,
    pub providers: Vec<String>,
    pub app_hash: Option<String>,
}

impl Route {
    /// A route without calling codes or regions takes whatever no other route took.
    pub fn is_catch_all(&self) -> bool {
        self.calling_codes.is_empty() && self.regions.is_empty()
    }

    fn matches(&self, phone: Option<&PhoneInfo>) -> bool {
        let Some(phone) = phone else { return false };
        self.calling_codes.contains(&phone.calling_code)
            || phone
                .region
                .as_deref()
                .is_some_and(|region| self.regions.iter().any(|r| r.eq_ignore_ascii_case(region)))
    }
}

/// The first matching route of the channel, in the given order (by position), else the
/// channel's catch-all route.
pub fn select<'a>(
    routes: &'a [Route],
    channel: Channel,
    phone: Option<&PhoneInfo>,
) -> Option<&'a Route> {
    let of_channel = || routes.iter().filter(move |r| r.channel == channel);
    of_channel()
        .find(|r| !r.is_catch_all() && r.matches(phone))
        .or_else(|| of_channel().find(|r| r.is_catch_all()))
}

/// Latin America and the Caribbean by CLDR region: the regions the Supabase WhatsApp example
/// meant with its calling-code prefixes, including the +1 countries a prefix cannot tell apart
/// from the US. Offered to users as `mysmshook.latin_america_regions()`.
pub const LATIN_AMERICA: &[&str] = &[
    "AR", "BO", "BR", "BZ", "CL", "CO", "CR", "CU", "DO", "EC", "GF", "GP", "GT", "GY", "HN", "HT",
    "MQ", "MX", "NI", "PA", "PE", "PR", "PY", "SR", "SV", "UY", "VE", "CW", "BQ", "SX",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, codes: &[u16], regions: &[&str]) -> Route {
        Route {
            name: name.into(),
            channel: Channel::Sms,
            calling_codes: codes.to_vec(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            providers: vec![],
            app_hash: None,
        }
    }

    #[test]
    fn numbers_resolve_to_their_region() {
        for (number, code, region) in [
            ("+525512345678", 52, "MX"),
            ("+5511987654321", 55, "BR"),
            ("+5491123456789", 54, "AR"),
            ("+17875550123", 1, "PR"),
            ("+18095550123", 1, "DO"),
            ("+12125550123", 1, "US"),
            ("+447400123456", 44, "GB"),
            ("+919876543210", 91, "IN"),
        ] {
            let info = parse_phone(number, &[]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                (info.calling_code, info.region.as_deref()),
                (code, Some(region)),
                "{number}"
            );
        }
    }

    #[test]
    fn invalid_numbers_are_refused() {
        // The Supabase sample event's number: +1 followed by only nine digits.
        assert!(parse_phone("+1333363128", &[])
            .unwrap_err()
            .contains("not a valid number"));
        assert!(parse_phone("+999123", &[]).is_err());
    }

    #[test]
    fn phone_facts_say_what_libphonenumber_says() {
        let puerto_rico = phone_facts("+17875551234");
        assert_eq!(
            (puerto_rico.e164.as_deref(), puerto_rico.calling_code),
            (Some("+17875551234"), Some(1))
        );
        assert_eq!(
            (puerto_rico.region.as_deref(), puerto_rico.valid),
            (Some("PR"), true)
        );
        let short = phone_facts("+1333363128");
        assert!(!short.valid && short.reason.as_deref() == Some(INVALID_FOR_ITS_COUNTRY));
        let garbage = phone_facts("+");
        assert!(garbage.e164.is_none() && garbage.reason.unwrap().starts_with("cannot be parsed"));
    }

    #[test]
    fn accepted_prefixes_let_refused_numbers_through_with_their_region() {
        let mexico_old_mobile = "+5215512345678";
        assert!(parse_phone(mexico_old_mobile, &[]).is_err());
        let info = parse_phone(mexico_old_mobile, &["+521".into()]).unwrap();
        assert_eq!(
            (info.calling_code, info.region.as_deref()),
            (52, Some("MX"))
        );
        // Only what starts with the prefix.
        assert!(parse_phone("+5491115123456789", &["+521".into()]).is_err());
    }

    #[test]
    fn latin_america_goes_to_its_route_and_the_rest_to_the_default() {
        let regions: Vec<&str> = LATIN_AMERICA.to_vec();
        let routes = vec![route("latam", &[], &regions), route("default", &[], &[])];
        let pick = |n: &str| {
            select(&routes, Channel::Sms, Some(&parse_phone(n, &[]).unwrap()))
                .unwrap()
                .name
                .clone()
        };
        for n in [
            "+525512345678",
            "+5511987654321",
            "+5491123456789",
            "+17875550123",
            "+18095550123",
        ] {
            assert_eq!(pick(n), "latam", "{n}");
        }
        for n in ["+12125550123", "+447400123456", "+919876543210"] {
            assert_eq!(pick(n), "default", "{n}");
        }
    }

    #[test]
    fn calling_codes_match_and_order_decides() {
        let routes = vec![
            route("india", &[91], &[]),
            route("all-plus-one", &[1], &[]),
            route("default", &[], &[]),
        ];
        let pick = |n: &str| {
            select(&routes, Channel::Sms, Some(&parse_phone(n, &[]).unwrap()))
                .unwrap()
                .name
                .clone()
        };
        assert_eq!(pick("+919876543210"), "india");
        assert_eq!(pick("+17875550123"), "all-plus-one");
        assert_eq!(pick("+447400123456"), "default");
        assert_eq!(select(&routes, Channel::Email, None), None);
    }
}
