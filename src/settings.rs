//! Run-time settings as GUCs (`mysmshook.*`), all superuser-only (SUSET): a role that can call the
//! hooks must not be able to redirect or slow down deliveries by changing them.

use mysmshook_engine::settings::{self as engine, defaults};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;
use std::time::Duration;

pub static WINDOW: GucSetting<i32> = GucSetting::<i32>::new(300);
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(defaults::BATCH_SIZE);
pub static CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(defaults::CONCURRENCY);
pub static PROVIDER_SHARE: GucSetting<f64> = GucSetting::<f64>::new(defaults::PROVIDER_SHARE);
pub static HTTP_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(defaults::HTTP_TIMEOUT_MS);
pub static LEASE: GucSetting<i32> = GucSetting::<i32>::new(defaults::LEASE_S);
pub static MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(3);
pub static RETRY_BASE: GucSetting<i32> = GucSetting::<i32>::new(defaults::RETRY_BASE_MS);
pub static RETRY_MAX: GucSetting<i32> = GucSetting::<i32>::new(defaults::RETRY_MAX_S);
pub static POLL_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(defaults::POLL_INTERVAL_MS);
pub static SMS_CODE_LIFETIME: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static EMAIL_CODE_LIFETIME: GucSetting<i32> = GucSetting::<i32>::new(3600);
pub static NOTIFICATION_LIFETIME: GucSetting<i32> = GucSetting::<i32>::new(86_400);
pub static RETENTION: GucSetting<i32> = GucSetting::<i32>::new(defaults::RETENTION_S);
pub static APP_NAME: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static ALLOW_HTTP_LOOPBACK: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static LOG_SINK: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static ACCEPTED_NUMBER_PREFIXES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

pub fn register() {
    GucRegistry::define_int_guc(
        c"mysmshook.schedule_window",
        c"Length of the time window jobs are bucketed into (scheduled_at = the window's start).",
        c"Jobs are due at once; the window groups them for ordering, as in Supabase's queue examples.",
        &WINDOW,
        1,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"mysmshook.batch_size",
        c"Most jobs one claim takes; a run ends after this many once its poll_for has passed.",
        c"A worker claims what its threads will start within about a step (at most concurrency plus max(concurrency, 32) at a time) and commits outcomes every ~100 ms.",
        &BATCH_SIZE,
        1,
        10_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mysmshook.concurrency",
        c"HTTP requests in flight at once per worker.",
        c"",
        &CONCURRENCY,
        1,
        512,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"mysmshook.provider_share",
        c"Share of a worker's HTTP threads one slow provider may occupy at once.",
        c"A provider whose last request took a second or more (or half of http_timeout, if less), that has a request running that long, or that has not answered this worker yet, gets at most this fraction of concurrency (at least one thread); its other jobs wait without a thread, so codes to other providers keep flowing. A provider that answers quickly may use every thread. 1 turns this off.",
        &PROVIDER_SHARE,
        0.0,
        1.0,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mysmshook.http_timeout",
        c"Overall time limit of one provider request, connect included.",
        c"",
        &HTTP_TIMEOUT,
        100,
        120_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"mysmshook.lease",
        c"How long a claimed job stays reserved for a worker that stopped renewing it before another run may take it over.",
        c"The worker renews its leases while it works and raises this to twice its slowest request (http_timeout times the longest chain) plus a second.",
        &LEASE,
        1,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"mysmshook.max_retries",
        c"max_retries given to new jobs: retries after the first attempt before a job fails.",
        c"",
        &MAX_RETRIES,
        0,
        100,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mysmshook.retry_base",
        c"Backoff before the first retry; doubles with every retry (with jitter).",
        c"",
        &RETRY_BASE,
        10,
        3_600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"mysmshook.retry_max",
        c"Upper bound of the backoff between retries.",
        c"",
        &RETRY_MAX,
        1,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"mysmshook.poll_interval",
        c"Pause between polls of an idle dequeue_and_run_jobs(poll_for => ...) run.",
        c"",
        &POLL_INTERVAL,
        10,
        60_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"mysmshook.sms_code_lifetime",
        c"How long an SMS code stays usable; an unsent SMS job older than this is expired, not sent.",
        c"Match the auth server's SMS OTP expiry (Supabase Auth: sms_otp_exp, 60 s by default).",
        &SMS_CODE_LIFETIME,
        1,
        604_800,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"mysmshook.email_code_lifetime",
        c"How long an email code or link stays usable; an unsent email job older than this is expired.",
        c"Match the auth server's email OTP expiry (Supabase: 1 hour). Notifications: notification_lifetime.",
        &EMAIL_CODE_LIFETIME,
        1,
        604_800,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"mysmshook.notification_lifetime",
        c"How long a notification (an email without a code, such as password_changed) may wait to be sent; then it is expired.",
        c"A notification stuck behind a provider outage or a template that fails for its data ends instead of waiting forever.",
        &NOTIFICATION_LIFETIME,
        1,
        2_592_000,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"mysmshook.retention",
        c"Finished jobs older than this are deleted by dequeue_and_run_jobs.",
        c"",
        &RETENTION,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"mysmshook.app_name",
        c"Your application's name, available to message templates as app_name.",
        c"",
        &APP_NAME,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"mysmshook.accepted_number_prefixes",
        c"Number prefixes accepted although libphonenumber refuses them, e.g. '+521' (Mexico's old mobile prefix).",
        c"Comma-separated. A number starting with one is queued and routed by its calling code; every other number must be valid for its country.",
        &ACCEPTED_NUMBER_PREFIXES,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"mysmshook.allow_http_loopback",
        c"Allow plain http:// provider URLs on loopback addresses (local development and tests only).",
        c"Every other provider URL must be https with a valid certificate.",
        &ALLOW_HTTP_LOOPBACK,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"mysmshook.log_sink",
        c"Let the log provider complete jobs by writing them to the server log (development only).",
        c"Off, a job routed to the log provider is not delivered: it waits and says how to configure a real provider.",
        &LOG_SINK,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// mysmshook.`name` as SHOW shows it (with its unit). An error for a name this library does not
/// register: the hooks ask only for settings it does, which are superuser-only.
pub fn current(name: &str) -> String {
    let full = CString::new(format!("mysmshook.{name}")).expect("SQL text holds no NUL");
    // SAFETY: a valid C string; missing_ok = false raises an ERROR for an unknown name, and the
    // result is a palloc'd C string.
    unsafe {
        let value = pgrx::pg_sys::GetConfigOptionByName(full.as_ptr(), std::ptr::null_mut(), false);
        std::ffi::CStr::from_ptr(value)
            .to_string_lossy()
            .into_owned()
    }
}

fn secs(setting: &GucSetting<i32>) -> Duration {
    Duration::from_secs(setting.get().max(0) as u64)
}
fn millis(setting: &GucSetting<i32>) -> Duration {
    Duration::from_millis(setting.get().max(0) as u64)
}

pub fn batch_size() -> i32 {
    BATCH_SIZE.get()
}
pub fn concurrency() -> usize {
    CONCURRENCY.get().max(1) as usize
}
pub fn provider_share() -> f64 {
    engine::clamp_share(PROVIDER_SHARE.get())
}
pub fn http_timeout() -> Duration {
    millis(&HTTP_TIMEOUT)
}
pub fn lease() -> Duration {
    secs(&LEASE)
}
pub fn backoff_policy() -> mysmshook_engine::retry::Backoff {
    mysmshook_engine::retry::Backoff {
        base: millis(&RETRY_BASE),
        max: secs(&RETRY_MAX),
    }
}
pub fn poll_interval() -> Duration {
    millis(&POLL_INTERVAL)
}
pub fn allow_http_loopback() -> bool {
    ALLOW_HTTP_LOOPBACK.get()
}
pub fn log_sink() -> bool {
    LOG_SINK.get()
}

pub fn app_name() -> Option<String> {
    APP_NAME
        .get()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
}

/// What the worker runs with, read from the GUCs now.
fn accepted_number_prefixes() -> Vec<String> {
    ACCEPTED_NUMBER_PREFIXES
        .get()
        .map(|list| engine::number_prefixes(&list.to_string_lossy()))
        .unwrap_or_default()
}

pub fn worker_settings() -> engine::Settings {
    engine::Settings {
        batch_size: batch_size(),
        concurrency: concurrency(),
        provider_share: provider_share(),
        http_timeout: http_timeout(),
        lease: lease(),
        backoff: backoff_policy(),
        poll_interval: poll_interval(),
        allow_http_loopback: allow_http_loopback(),
        log_sink: log_sink(),
        accepted_number_prefixes: accepted_number_prefixes(),
        app_name: app_name(),
    }
}
