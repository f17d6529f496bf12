//! SMS pumping defence at the hook: geo rules, velocity limits and spend caps
//! (sql/defence.sql). The policy is pure (geo check, keys, sliding-window estimate); the edges
//! are the configuration, cached per backend until PostgreSQL's invalidation messages say it
//! changed, one statement that counts the request in mysmshook.limit_counters, and the audit
//! log.
//!
//! The audit log is a file, not a table: Supabase Auth rolls its transaction back when the hook
//! refuses, and a row written in it would go with it. Each refusal is one JSON line appended to
//! `mysmshook/refusals.jsonl` in the data directory (one write(2) with O_APPEND: whole lines
//! from concurrent backends); the worker rotates it to `refusals.1.jsonl` past MAX_LOG_BYTES.
//! Never a code: the rule, the masked destination, the client IP, the region, the time.

use crate::job::mask_recipient;
use pgrx::pg_sys::{PgBuiltInOids, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::JsonB;
use serde::Deserialize;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::io::{BufRead, Write};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Who asks for a code, as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Requester {
    /// E.164 with `+`.
    pub destination: String,
    pub region: Option<String>,
    pub calling_code: u16,
    /// The event's metadata.ip_address.
    pub ip: Option<String>,
}

// --- The policy (pure) ---------------------------------------------------------------------

/// A row of mysmshook.limits (or the built-in one).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Limit {
    pub name: String,
    pub scope: String,
    pub prefix_digits: Option<i32>,
    /// Seconds.
    pub per: f64,
    pub maximum: f64,
}

/// A row of mysmshook.geo_rules.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GeoRule {
    pub region: String,
    pub allow: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub limits: Vec<Limit>,
    pub geo: Vec<GeoRule>,
    /// mysmshook.sms_prices: per region, and '*' for the rest.
    pub prices: Vec<(String, f64)>,
}

/// At most 5 codes to one number in 10 minutes, unless a row named so replaces it.
pub const BUILT_IN_LIMIT: &str = "codes_per_number";

/// Shared counters are spread over this many rows per key (by backend), so that concurrent
/// sign-ins do not queue behind one row lock held until each auth transaction commits.
const SHARDS: i32 = 8;

impl Policy {
    /// Whether the destination's region may receive codes: not denied, and allowed when an
    /// allow-list exists. Regions match as CLDR codes (`MX`) or calling codes (`+52`).
    pub fn geo_allows(&self, requester: &Requester) -> bool {
        let calling_code = format!("+{}", requester.calling_code);
        let matches = |rule: &&GeoRule| {
            rule.region == calling_code || Some(rule.region.as_str()) == requester.region.as_deref()
        };
        let denied = self.geo.iter().filter(|r| !r.allow).any(|r| matches(&r));
        let allow_list = self.geo.iter().any(|r| r.allow);
        let allowed = self.geo.iter().filter(|r| r.allow).any(|r| matches(&r));
        !denied && (!allow_list || allowed)
    }

    /// The estimated price of one segment to the region.
    fn price(&self, region: Option<&str>) -> f64 {
        let find = |key: &str| self.prices.iter().find(|(r, _)| r == key).map(|(_, p)| *p);
        region.and_then(find).or_else(|| find("*")).unwrap_or(0.0)
    }

    /// What this request adds to each limit that applies to it.
    pub fn counts(&self, requester: &Requester, now: f64, backend: i32) -> Vec<Count<'_>> {
        self.limits
            .iter()
            .filter_map(|limit| {
                let key = match limit.scope.as_str() {
                    "destination" => Some(requester.destination.clone()),
                    "prefix" => {
                        let digits = limit.prefix_digits.unwrap_or(0).max(0) as usize;
                        Some(requester.destination.chars().take(digits + 1).collect())
                    }
                    "ip" => requester.ip.clone(),
                    "country" | "country_spend" => requester.region.clone(),
                    _ => Some(String::new()),
                }?;
                let shared = !matches!(limit.scope.as_str(), "destination" | "prefix" | "ip");
                let window_start = (now / limit.per).floor() * limit.per;
                Some(Count {
                    limit,
                    key,
                    window_start,
                    shard: if shared {
                        backend.rem_euclid(SHARDS)
                    } else {
                        0
                    },
                    shared,
                    amount: if limit.scope.ends_with("_spend") {
                        self.price(requester.region.as_deref())
                    } else {
                        1.0
                    },
                })
            })
            .collect()
    }
}

/// One limit's share of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Count<'a> {
    pub limit: &'a Limit,
    pub key: String,
    /// Unix seconds.
    pub window_start: f64,
    pub shard: i32,
    /// Counted over several shards (country, global, spend).
    pub shared: bool,
    pub amount: f64,
}

/// What the counters held once this request was counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    /// This shard, this window, this request included (exact: the row is locked).
    pub amount: f64,
    /// The other shards of this window, as the statement's snapshot saw them.
    pub other_shards: f64,
    /// The previous window, all shards.
    pub previous: f64,
}

impl Count<'_> {
    /// Sliding window: this window's total plus the previous window's, weighted by how much
    /// of it still falls within `per` of now.
    pub fn exceeded(&self, counted: &Counted, now: f64) -> bool {
        let elapsed = ((now - self.window_start) / self.limit.per).clamp(0.0, 1.0);
        let estimate = counted.amount + counted.other_shards + counted.previous * (1.0 - elapsed);
        estimate > self.limit.maximum + 1e-9
    }
}

// --- The edges: configuration, counting, answer, audit ---------------------------------------

thread_local! {
    /// The policy as last loaded, and whether it may be out of date. A new backend starts stale;
    /// `config_relation_changed` marks it stale again.
    static POLICY: RefCell<Option<Rc<Policy>>> = const { RefCell::new(None) };
    static STALE: Cell<bool> = const { Cell::new(true) };
    /// mysmshook.config_version and the tables the policy is read from, as loaded.
    static WATCHED: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
    static COUNT_PLAN: std::cell::OnceCell<OwnedPreparedStatement> = const { std::cell::OnceCell::new() };
    static SHARDS_PLAN: std::cell::OnceCell<OwnedPreparedStatement> = const { std::cell::OnceCell::new() };
}

/// The relations whose invalidation makes the cached policy stale.
const WATCHED_TABLES: &str = "select array_remove(array[to_regclass('mysmshook.config_version'),
        to_regclass('mysmshook.limits'), to_regclass('mysmshook.geo_rules'),
        to_regclass('mysmshook.sms_prices')]::oid[], null)";

/// Lets PostgreSQL tell this backend when the configuration changed. Called once, at load.
/// Every change to a configuration table ends in `mysmshook.invalidate_config_caches()` (the
/// tables' statement trigger), whose invalidation of config_version reaches every backend when
/// the change commits, before its next transaction reads anything: the hook then reads no
/// version row per sign-in. DDL on the tables, and a backend that fell too far behind on
/// invalidations (it gets InvalidOid), count as changes too.
pub fn watch_configuration() {
    // SAFETY: registered once, from _PG_init, on the backend's thread; the callback only flips
    // a flag.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(config_relation_changed), pg_sys::Datum::from(0))
    };
}

#[pg_guard]
unsafe extern "C-unwind" fn config_relation_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid || WATCHED.with_borrow(|watched| watched.contains(&relid)) {
        STALE.set(true);
    }
}

/// Sends every backend the invalidation that makes it reload its cached policy (at commit).
pub fn invalidate_config_caches() -> Result<(), pgrx::spi::Error> {
    let relid = Spi::get_one::<pg_sys::Oid>("select to_regclass('mysmshook.config_version')::oid")?;
    if let Some(relid) = relid {
        // SAFETY: the relation exists (just looked up, in this transaction).
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    }
    Ok(())
}

/// Checks a request against the geo rules and counts it against the limits; returns the name
/// of the rule that refuses it ('geo' or a limit's name), if one does.
pub fn check(requester: &Requester) -> Result<Option<String>, pgrx::spi::Error> {
    Spi::connect_mut(|client| {
        let policy = current_policy(client)?;
        if !policy.geo_allows(requester) {
            return Ok(Some("geo".to_owned()));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        // SAFETY: MyProcPid is set once at backend start.
        let backend = unsafe { pg_sys::MyProcPid };
        let counts = policy.counts(requester, now, backend);
        let mut refused = Vec::new();
        for item in &counts {
            if item.exceeded(&count(client, item)?, now) {
                refused.push(item.limit.name.as_str());
            }
        }
        refused.sort_unstable();
        Ok(refused.first().map(|name| (*name).to_owned()))
    })
}

/// The cached policy, reloaded when an invalidation marked it stale.
/// (Shared, not copied: the hook runs on every sign-in.)
fn current_policy(client: &mut SpiClient) -> Result<Rc<Policy>, pgrx::spi::Error> {
    if !STALE.get() {
        if let Some(policy) = POLICY.with_borrow(|cached| cached.clone()) {
            return Ok(policy);
        }
    }
    // Cleared before reading: an invalidation that arrives while the tables are read marks the
    // policy stale again, and the next call reads them once more. The old policy goes first, so
    // that a read that fails (a cancel, a timeout) leaves nothing behind to be trusted.
    STALE.set(false);
    POLICY.set(None);
    let watched: Vec<pg_sys::Oid> = client
        .select(WATCHED_TABLES, Some(1), &[])?
        .first()
        .get::<Vec<pg_sys::Oid>>(1)?
        .unwrap_or_default();
    let installed = watched.len() == 4;
    WATCHED.set(watched);
    let policy = Rc::new(if installed {
        load_policy(client)?
    } else {
        // Only between installing this library over a version before 0.3.0 and ALTER EXTENSION
        // UPDATE: codes go out unchecked rather than sign-ins failing, and every call looks again.
        STALE.set(true);
        Policy::default()
    });
    // A transaction snapshot (REPEATABLE READ, SERIALIZABLE) may predate a change whose
    // invalidation this backend already took: such a load is good for this call only.
    // SAFETY: reads a backend-local variable.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        STALE.set(true);
    }
    POLICY.set(Some(Rc::clone(&policy)));
    Ok(policy)
}

fn load_policy(client: &mut SpiClient) -> Result<Policy, pgrx::spi::Error> {
    let json = |sql: &str| -> Result<serde_json::Value, pgrx::spi::Error> {
        Ok(client
            .select(sql, Some(1), &[])?
            .first()
            .get::<JsonB>(1)?
            .map(|j| j.0)
            .unwrap_or_default())
    };
    let mut limits: Vec<Limit> = serde_json::from_value(json(
        "select coalesce(jsonb_agg(jsonb_build_object('name', name, 'scope', scope,
                'prefix_digits', prefix_digits, 'per', extract(epoch from per), 'maximum', maximum)), '[]')
           from mysmshook.limits where enabled",
    )?)
    .unwrap_or_default();
    let replaced: bool = client
        .select(
            "select exists (select from mysmshook.limits where name = $1)",
            Some(1),
            &[BUILT_IN_LIMIT.into()],
        )?
        .first()
        .get::<bool>(1)?
        .unwrap_or(false);
    if !replaced {
        limits.push(Limit {
            name: BUILT_IN_LIMIT.into(),
            scope: "destination".into(),
            prefix_digits: None,
            per: 600.0,
            maximum: 5.0,
        });
    }
    let geo: Vec<GeoRule> = serde_json::from_value(json(
        "select coalesce(jsonb_agg(jsonb_build_object('region', region, 'allow', allow)), '[]')
           from mysmshook.geo_rules",
    )?)
    .unwrap_or_default();
    let prices: Vec<(String, f64)> = serde_json::from_value(json(
        "select coalesce(jsonb_agg(jsonb_build_array(region, per_segment::float8)), '[]')
           from mysmshook.sms_prices",
    )?)
    .unwrap_or_default();
    Ok(Policy {
        limits,
        geo,
        prices,
    })
}

/// Adds the request to one limit's counter row and returns what it holds: this window's
/// amount (this request included, exact: the row is locked) and the previous window's. A row
/// whose window has passed rolls over. Scalar parameters keep the kept plan generic. Every name
/// and operator is schema-qualified, like the hook's INSERT (src/intake.rs).
const COUNT: &str = "insert into mysmshook.limit_counters as c
        (limit_name, key, shard, window_start, amount, previous)
    values ($1, $2, $3, pg_catalog.to_timestamp($4), $5, 0)
    on conflict (limit_name, key, shard) do update set
        previous = case
            when c.window_start OPERATOR(pg_catalog.=) excluded.window_start then c.previous
            when c.window_start OPERATOR(pg_catalog.=) pg_catalog.to_timestamp($6) then c.amount
            else 0 end,
        amount = case
            when c.window_start OPERATOR(pg_catalog.=) excluded.window_start
            then c.amount OPERATOR(pg_catalog.+) excluded.amount
            else excluded.amount end,
        window_start = excluded.window_start
    returning c.amount, c.previous";

/// For shared limits: what the other shards of the key hold for this window and the previous.
const OTHER_SHARDS: &str = "select
        coalesce(pg_catalog.sum(case when o.window_start OPERATOR(pg_catalog.=) pg_catalog.to_timestamp($4)
                                     then o.amount else 0 end), 0),
        coalesce(pg_catalog.sum(case when o.window_start OPERATOR(pg_catalog.=) pg_catalog.to_timestamp($4)
                                     then o.previous
                                     when o.window_start OPERATOR(pg_catalog.=) pg_catalog.to_timestamp($5)
                                     then o.amount else 0 end), 0)
      from mysmshook.limit_counters o
     where o.limit_name OPERATOR(pg_catalog.=) $1 and o.key OPERATOR(pg_catalog.=) $2
       and o.shard OPERATOR(pg_catalog.<>) $3";

/// Counts the request against one limit.
fn count(client: &mut SpiClient, count: &Count) -> Result<Counted, pgrx::spi::Error> {
    let previous_start = count.window_start - count.limit.per;
    let args = [
        count.limit.name.as_str().into(),
        count.key.as_str().into(),
        (count.shard as i16).into(),
        count.window_start.into(),
        count.amount.into(),
        previous_start.into(),
    ];
    const TEXTOID: PgBuiltInOids = PgBuiltInOids::TEXTOID;
    const INT2OID: PgBuiltInOids = PgBuiltInOids::INT2OID;
    const FLOAT8OID: PgBuiltInOids = PgBuiltInOids::FLOAT8OID;
    let own = run_kept(
        client,
        &COUNT_PLAN,
        COUNT,
        &[TEXTOID, TEXTOID, INT2OID, FLOAT8OID, FLOAT8OID, FLOAT8OID],
        &args,
    )?;
    let mut counted = Counted {
        amount: own.0,
        other_shards: 0.0,
        previous: own.1,
    };
    if count.shared {
        let args = [
            count.limit.name.as_str().into(),
            count.key.as_str().into(),
            (count.shard as i16).into(),
            count.window_start.into(),
            previous_start.into(),
        ];
        let others = run_kept(
            client,
            &SHARDS_PLAN,
            OTHER_SHARDS,
            &[TEXTOID, TEXTOID, INT2OID, FLOAT8OID, FLOAT8OID],
            &args,
        )?;
        counted.other_shards = others.0;
        counted.previous += others.1;
    }
    Ok(counted)
}

/// Runs a statement planned once per backend that returns one row of two float8 columns.
fn run_kept(
    client: &mut SpiClient,
    plan: &'static std::thread::LocalKey<std::cell::OnceCell<OwnedPreparedStatement>>,
    sql: &str,
    types: &[PgBuiltInOids],
    args: &[pgrx::datum::DatumWithOid],
) -> Result<(f64, f64), pgrx::spi::Error> {
    plan.with(|plan| {
        if plan.get().is_none() {
            let types: Vec<PgOid> = types.iter().copied().map(PgOid::BuiltIn).collect();
            let _ = plan.set(client.prepare_mut(sql, &types)?.keep());
        }
        let rows = client.update(plan.get().expect("prepared above"), Some(1), args)?;
        let row = rows.first();
        Ok((
            row.get::<f64>(1)?.unwrap_or_default(),
            row.get::<f64>(2)?.unwrap_or_default(),
        ))
    })
}

/// The error object Auth shows the client. It does not say which rule fired: that would tell
/// an attacker what to vary.
pub fn refusal_answer(rule: &str) -> JsonB {
    let (code, message) = match rule {
        "geo" => (400, "Codes cannot be sent to this phone number."),
        _ => (
            429,
            "Too many codes were requested. Please wait and try again later.",
        ),
    };
    JsonB(json!({ "error": { "http_code": code, "message": message } }))
}

const LOG_DIR: &str = "mysmshook";
const LOG: &str = "mysmshook/refusals.jsonl";
const OLD_LOG: &str = "mysmshook/refusals.1.jsonl";
/// Past this the log is rotated (two files are kept: at most twice this on disk).
const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// Appends one refusal to the audit log. A failure to write is reported in the server log and
/// does not change the answer (the request stays refused).
pub fn record_refusal(rule: &str, requester: &Requester) {
    let line = json!({
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "rule": rule,
        "to": mask_recipient(&requester.destination),
        "ip": requester.ip,
        "region": requester.region,
    })
    .to_string()
        + "\n";
    // The backend's working directory is the data directory.
    let written = std::fs::create_dir_all(LOG_DIR).and_then(|_| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(LOG)?
            .write_all(line.as_bytes())
    });
    if let Err(e) = written {
        pgrx::warning!("mysmshook: could not write the refusal to {LOG}: {e}");
    }
}

/// One refusal as the audit log keeps it.
pub struct Refusal {
    pub at: Option<String>,
    pub rule: Option<String>,
    pub to: Option<String>,
    pub ip: Option<String>,
    pub region: Option<String>,
}

/// Every refusal still in the log, oldest first.
pub fn refusals() -> Vec<Refusal> {
    let mut all = Vec::new();
    for path in [OLD_LOG, LOG] {
        let Ok(file) = std::fs::File::open(path) else {
            continue;
        };
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue; // a line cut short by a crash mid-write
            };
            let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            all.push(Refusal {
                at: text("at"),
                rule: text("rule"),
                to: text("to"),
                ip: text("ip"),
                region: text("region"),
            });
        }
    }
    all
}

/// Rotates the audit log once it is larger than MAX_LOG_BYTES (the worker calls this).
pub fn rotate_refusal_log() {
    let too_big = std::fs::metadata(LOG).is_ok_and(|m| m.len() > MAX_LOG_BYTES);
    if too_big {
        if let Err(e) = std::fs::rename(LOG, OLD_LOG) {
            pgrx::warning!("mysmshook: could not rotate {LOG}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requester(to: &str, region: &str, cc: u16, ip: &str) -> Requester {
        Requester {
            destination: to.into(),
            region: Some(region.into()),
            calling_code: cc,
            ip: Some(ip.into()),
        }
    }

    fn limit(name: &str, scope: &str, prefix: Option<i32>, per: f64, maximum: f64) -> Limit {
        Limit {
            name: name.into(),
            scope: scope.into(),
            prefix_digits: prefix,
            per,
            maximum,
        }
    }

    #[test]
    fn geo_rules_deny_allow_and_calling_codes() {
        let mx = requester("+525512345678", "MX", 52, "1.1.1.1");
        let us = requester("+12125550123", "US", 1, "1.1.1.1");
        let rule = |region: &str, allow: bool| GeoRule {
            region: region.into(),
            allow,
        };
        let policy = |geo: Vec<GeoRule>| Policy {
            geo,
            ..Default::default()
        };
        assert!(policy(vec![]).geo_allows(&mx));
        assert!(!policy(vec![rule("MX", false)]).geo_allows(&mx));
        assert!(!policy(vec![rule("+52", false)]).geo_allows(&mx));
        assert!(policy(vec![rule("+52", false)]).geo_allows(&us));
        let allow_us = policy(vec![rule("US", true)]);
        assert!(allow_us.geo_allows(&us) && !allow_us.geo_allows(&mx));
        // +1 covers the US and the Caribbean: a denied region inside an allowed code stays out.
        let pr = requester("+17875550123", "PR", 1, "1.1.1.1");
        let nanp_but_pr = policy(vec![rule("+1", true), rule("PR", false)]);
        assert!(nanp_but_pr.geo_allows(&us) && !nanp_but_pr.geo_allows(&pr));
    }

    #[test]
    fn keys_shards_and_amounts() {
        let policy = Policy {
            limits: vec![
                limit("number", "destination", None, 600.0, 5.0),
                limit("range", "prefix", Some(8), 3600.0, 50.0),
                limit("ip", "ip", None, 3600.0, 20.0),
                limit("country", "country", None, 3600.0, 1000.0),
                limit("all", "global", None, 3600.0, 10000.0),
                limit("spend", "country_spend", None, 86400.0, 100.0),
            ],
            geo: vec![],
            prices: vec![("MX".into(), 0.05), ("*".into(), 0.01)],
        };
        let r = requester("+525512345678", "MX", 52, "203.0.113.7");
        let counts = policy.counts(&r, 1_000_000.0, 4243);
        let keys: Vec<(&str, &str, i32, f64)> = counts
            .iter()
            .map(|c| (c.limit.name.as_str(), c.key.as_str(), c.shard, c.amount))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("number", "+525512345678", 0, 1.0),
                ("range", "+52551234", 0, 1.0),
                ("ip", "203.0.113.7", 0, 1.0),
                ("country", "MX", 3, 1.0),
                ("all", "", 3, 1.0),
                ("spend", "MX", 3, 0.05),
            ]
        );
        assert_eq!(counts[0].window_start, 999_600.0);
        // No IP in the event: the per-IP limit does not apply.
        let no_ip = Requester { ip: None, ..r };
        assert!(policy
            .counts(&no_ip, 0.0, 1)
            .iter()
            .all(|c| c.limit.name != "ip"));
    }

    #[test]
    fn sliding_window_estimate() {
        let count = Count {
            limit: &limit("number", "destination", None, 600.0, 5.0),
            key: "+1".into(),
            window_start: 600.0,
            shard: 0,
            shared: false,
            amount: 1.0,
        };
        let at = |amount: f64, previous: f64, now: f64| {
            count.exceeded(
                &Counted {
                    amount,
                    other_shards: 0.0,
                    previous,
                },
                now,
            )
        };
        assert!(!at(5.0, 0.0, 601.0));
        assert!(at(6.0, 0.0, 601.0));
        // Half the previous window still overlaps: 4 of its 8 count.
        assert!(!at(1.0, 8.0, 900.0));
        assert!(at(2.0, 8.0, 900.0));
        // Just after a boundary the previous window counts almost whole: no burst of twice
        // the maximum across it.
        assert!(at(1.0, 5.0, 601.0));
    }
}
