//! Configuration from its tables — providers, routes, templates — read on the backend thread and
//! kept by the worker until `mysmshook.config_fingerprint` changes. A provider setting may name a
//! Supabase Vault secret (`{"vault": "name"}`) instead of holding it; it is resolved here, so
//! providers only ever see plain values.

use crate::job::Channel;
use crate::pause::Pauses;
use crate::providers::{self, Provider};
use crate::render::{Template, TemplateSet};
use crate::routing::Route;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

type SpiResult<T> = Result<T, pgrx::spi::Error>;

/// The provider and route a channel without a route of its own goes to. They live in code, not
/// in the tables: default rows would collide with their dumped copies on `pg_restore`.
pub const BUILT_IN_LOG: &str = "log";

/// Last in line, after every configured route: a channel's own catch-all always comes first.
fn built_in_routes() -> impl Iterator<Item = Route> {
    [Channel::Sms, Channel::Email]
        .into_iter()
        .map(|channel| Route {
            name: BUILT_IN_LOG.to_owned(),
            channel,
            calling_codes: Vec::new(),
            regions: Vec::new(),
            providers: vec![BUILT_IN_LOG.to_owned()],
            app_hash: None,
        })
}

#[derive(Clone)]
pub struct NamedProvider {
    pub name: String,
    pub provider: Arc<dyn Provider>,
}

impl crate::chain::Link for NamedProvider {
    fn name(&self) -> &str {
        &self.name
    }
    fn delivers_on(&self) -> Option<Channel> {
        self.provider.delivers_on()
    }
}

pub struct Config {
    providers: HashMap<String, Arc<dyn Provider>>,
    pub routes: Vec<Route>,
    pub templates: TemplateSet,
    pub pauses: Pauses,
    /// The Vault secrets the providers refer to: a change to one reloads the configuration.
    pub vault_names: Vec<String>,
}

impl Config {
    /// The most providers a job can go through.
    pub fn longest_chain(&self) -> usize {
        self.routes
            .iter()
            .map(|r| r.providers.len())
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// The route's providers in order; a missing or disabled one is kept as a provider that
    /// reports why, so the job's record says what to fix.
    pub fn chain(&self, route: &Route) -> Vec<NamedProvider> {
        route
            .providers
            .iter()
            .map(|name| NamedProvider {
                name: name.clone(),
                provider: self.providers.get(name).cloned().unwrap_or_else(|| {
                    providers::unusable(format!("provider {name} does not exist or is disabled"))
                }),
            })
            .collect()
    }
}

pub fn load() -> SpiResult<Config> {
    Spi::connect(|client| {
        let mut providers = HashMap::new();
        let vault_names = std::cell::RefCell::new(Vec::new());
        let rows = client.select(
            "select name, kind, settings from mysmshook.providers where enabled",
            None,
            &[],
        )?;
        for row in rows {
            let name: String = row.get(1)?.unwrap_or_default();
            let kind: String = row.get(2)?.unwrap_or_default();
            let settings = row.get::<JsonB>(3)?.map(|j| j.0).unwrap_or_default();
            // Recorded whether or not they resolve: creating a missing secret must reload too.
            let _ = resolve_secrets(&settings, &|secret| {
                vault_names.borrow_mut().push(secret.to_owned());
                Ok(String::new())
            });
            let provider = match resolve_secrets(&settings, &|secret| vault_secret(client, secret))
            {
                Ok(settings) => providers::build_or_unusable(&name, &kind, &settings),
                Err(error) => providers::unusable(format!("provider {name}: {error}")),
            };
            providers.insert(name, provider);
        }
        providers.insert(
            BUILT_IN_LOG.to_owned(),
            providers::build_or_unusable(BUILT_IN_LOG, "log", &Value::Object(Default::default())),
        );

        let mut routes = Vec::new();
        let rows = client.select(
            "select name, channel, calling_codes, regions, providers, app_hash
               from mysmshook.routes where enabled order by position, name",
            None,
            &[],
        )?;
        for row in rows {
            let channel: String = row.get(2)?.unwrap_or_default();
            routes.push(Route {
                name: row.get(1)?.unwrap_or_default(),
                channel: Channel::parse(&channel).unwrap_or(Channel::Sms),
                calling_codes: row
                    .get::<Vec<i32>>(3)?
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| u16::try_from(c).ok())
                    .collect(),
                regions: row.get(4)?.unwrap_or_default(),
                providers: row.get(5)?.unwrap_or_default(),
                app_hash: row.get(6)?,
            });
        }
        routes.extend(built_in_routes());

        let mut templates = TemplateSet::default();
        templates.app_name = crate::settings::app_name();
        let rows = client.select(
            "select channel, action_type, language, subject, body, html from mysmshook.templates",
            None,
            &[],
        )?;
        for row in rows {
            let (channel, action, language): (String, String, String) = (
                row.get(1)?.unwrap_or_default(),
                row.get(2)?.unwrap_or_default(),
                row.get(3)?.unwrap_or_default(),
            );
            let template = Template {
                subject: row.get(4)?,
                body: row.get(5)?.unwrap_or_default(),
                html: row.get(6)?,
            };
            templates.insert(&channel, &action, &language, template);
        }
        // Absent between installing this library and ALTER EXTENSION UPDATE to 0.4.0.
        let mut pauses = Vec::new();
        let has_pauses = client
            .select(
                "select to_regclass('mysmshook.pauses') is not null",
                None,
                &[],
            )?
            .first()
            .get::<bool>(1)?
            .unwrap_or(false);
        if has_pauses {
            for row in client.select("select scope, name from mysmshook.pauses", None, &[])? {
                let scope: String = row.get(1)?.unwrap_or_default();
                let name: String = row.get(2)?.unwrap_or_default();
                pauses.push(crate::pause::key(&scope, &name));
            }
        }
        Ok(Config {
            providers,
            routes,
            templates,
            pauses: Pauses::new(pauses),
            vault_names: vault_names.into_inner(),
        })
    })
}

/// A provider's kind and settings, Vault references resolved; None if no provider has that name.
pub fn provider_settings(name: &str) -> Result<Option<(String, Value)>, String> {
    Spi::connect(|client| {
        let rows = client
            .select(
                "select kind, settings from mysmshook.providers where name = $1",
                Some(1),
                &[name.into()],
            )
            .map_err(|e| e.to_string())?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let kind: String = row.get(1).map_err(|e| e.to_string())?.unwrap_or_default();
        let settings = row
            .get::<pgrx::JsonB>(2)
            .map_err(|e| e.to_string())?
            .map(|s| s.0)
            .unwrap_or(Value::Null);
        let settings = resolve_secrets(&settings, &|secret| vault_secret(client, secret))?;
        Ok(Some((kind, settings)))
    })
}

/// Replaces every `{"vault": "name"}` value with the secret it names.
pub fn resolve_secrets(
    settings: &Value,
    lookup: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Value, String> {
    Ok(match settings {
        Value::Object(map) => match (map.len(), map.get("vault")) {
            (1, Some(Value::String(name))) => Value::String(lookup(name)?),
            _ => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), resolve_secrets(v, lookup)?)))
                    .collect::<Result<_, String>>()?,
            ),
        },
        other => other.clone(),
    })
}

fn vault_secret(client: &pgrx::spi::SpiClient, name: &str) -> Result<String, String> {
    let has_vault = client
        .select(
            "select to_regclass('vault.decrypted_secrets') is not null",
            None,
            &[],
        )
        .and_then(|rows| rows.first().get::<bool>(1))
        .map_err(|e| e.to_string())?
        .unwrap_or(false);
    if !has_vault {
        return Err(format!(
            "refers to Vault secret {name:?} but the Vault extension is not installed"
        ));
    }
    client
        .select(
            "select decrypted_secret from vault.decrypted_secrets where name = $1",
            Some(1),
            &[name.into()],
        )
        .and_then(|rows| {
            if rows.is_empty() {
                Ok(None)
            } else {
                rows.first().get::<String>(1)
            }
        })
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("Vault secret {name:?} does not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vault_references_are_resolved_anywhere_in_settings() {
        let lookup = |name: &str| match name {
            "twilio" => Ok("s3cret".to_owned()),
            other => Err(format!("Vault secret {other:?} does not exist")),
        };
        let resolved = resolve_secrets(
            &json!({"account_sid": "AC1", "auth_token": {"vault": "twilio"}, "n": 1}),
            &lookup,
        )
        .unwrap();
        assert_eq!(
            resolved,
            json!({"account_sid": "AC1", "auth_token": "s3cret", "n": 1})
        );
        assert!(
            resolve_secrets(&json!({"auth_token": {"vault": "nope"}}), &lookup)
                .unwrap_err()
                .contains("nope")
        );
        // An object with more keys is data, not a reference.
        let data = json!({"content_variables": {"vault": "x", "1": "{{ code }}"}});
        assert_eq!(resolve_secrets(&data, &lookup).unwrap(), data);
    }
}
