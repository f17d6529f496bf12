//! C functions that schemas and released upgrade scripts before 0.7.0 still name, now that the
//! hooks are SQL (sql/hooks.sql). `ALTER EXTENSION mysmshook UPDATE` from an older version runs
//! those scripts, and CREATE FUNCTION there looks the symbols up in this library. A database
//! with this library but not yet the update calls them too: the hooks then answer a clear
//! error (its old schema lacks the SQL they now are), and a configuration change goes through.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

fn update_first() -> JsonB {
    pgrx::warning!(
        "mysmshook: this library is 0.7.0 but the database has an older schema: run ALTER EXTENSION mysmshook UPDATE (no code is queued until then)"
    );
    JsonB(json!({ "error": {
        "http_code": 503,
        "message": "Codes cannot be sent right now. Please try again in a minute."
    }}))
}

#[pg_extern(sql = false)]
fn send_sms() -> JsonB {
    update_first()
}

#[pg_extern(sql = false)]
fn send_email() -> JsonB {
    update_first()
}

/// The hooks no longer cache the pumping defence's configuration: nothing to invalidate.
#[pg_extern(sql = false)]
fn invalidate_config_caches() {}
