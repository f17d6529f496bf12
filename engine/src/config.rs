//! The delivery configuration — providers, routes, templates, pauses — as one JSON document
//! that `mysmshook.worker_config()` returns (sql/queue.sql), Vault references already resolved
//! there. Both hosts read it the same way and keep it until `mysmshook.config_fingerprint`
//! changes.

use crate::job::Channel;
use crate::pause::Pauses;
use crate::providers::{self, Provider};
use crate::render::{Template, TemplateSet};
use crate::routing::Route;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

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

/// `mysmshook.worker_config()`'s document.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Document {
    providers: Vec<ProviderRow>,
    routes: Vec<RouteRow>,
    templates: Vec<TemplateRow>,
    pauses: Vec<PauseRow>,
    vault_names: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ProviderRow {
    name: String,
    kind: String,
    settings: Value,
    /// Why its settings could not be resolved (a missing Vault secret, say).
    error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RouteRow {
    name: String,
    channel: String,
    calling_codes: Vec<i64>,
    regions: Vec<String>,
    providers: Vec<String>,
    app_hash: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TemplateRow {
    channel: String,
    action_type: String,
    language: String,
    subject: Option<String>,
    body: String,
    html: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PauseRow {
    scope: String,
    name: String,
}

fn parse(document: Value) -> Result<Document, String> {
    serde_json::from_value(document)
        .map_err(|e| format!("mysmshook.worker_config() answered an unexpected document: {e}"))
}

/// What the extension checks as each row is saved (a provider's settings built, a template
/// compiled and rendered against a sample job), for the whole document at once: where no
/// library checks rows as they are saved (mysmshook-worker --check). Each problem names its row.
pub fn problems(document: Value) -> Result<Vec<String>, String> {
    let document = parse(document)?;
    let providers = document.providers.iter().filter_map(|row| {
        let error = match &row.error {
            Some(error) => Some(error.clone()),
            None => providers::build(&row.kind, &row.settings).err(),
        };
        error.map(|e| format!("provider {}: {e}", row.name))
    });
    let templates = document.templates.iter().filter_map(|row| {
        crate::render::check_template(
            &row.channel,
            &row.action_type,
            row.subject.as_deref(),
            &row.body,
            row.html.as_deref(),
        )
        .err()
        .map(|e| {
            format!(
                "{}/{} template ({}): {e}",
                row.channel, row.action_type, row.language
            )
        })
    });
    Ok(providers.chain(templates).collect())
}

impl Config {
    /// Builds the configuration from `mysmshook.worker_config()`'s document. A provider whose
    /// settings are wrong is kept as one that reports why, so the jobs routed to it say what
    /// to fix; a document that is not one at all is an error.
    pub fn from_json(document: Value, app_name: Option<String>) -> Result<Config, String> {
        let document = parse(document)?;
        let mut providers: HashMap<String, Arc<dyn Provider>> = document
            .providers
            .into_iter()
            .map(|row| {
                let provider = match row.error {
                    Some(error) => providers::unusable(format!("provider {}: {error}", row.name)),
                    None => providers::build_or_unusable(&row.name, &row.kind, &row.settings),
                };
                (row.name, provider)
            })
            .collect();
        providers.insert(
            BUILT_IN_LOG.to_owned(),
            providers::build_or_unusable(BUILT_IN_LOG, "log", &Value::Object(Default::default())),
        );
        let routes = document
            .routes
            .into_iter()
            .map(|row| Route {
                name: row.name,
                channel: Channel::parse(&row.channel).unwrap_or(Channel::Sms),
                calling_codes: row
                    .calling_codes
                    .into_iter()
                    .filter_map(|c| u16::try_from(c).ok())
                    .collect(),
                regions: row.regions,
                providers: row.providers,
                app_hash: row.app_hash,
            })
            .chain(built_in_routes())
            .collect();
        let mut templates = TemplateSet::default();
        templates.app_name = app_name;
        for row in document.templates {
            let template = Template {
                subject: row.subject,
                body: row.body,
                html: row.html,
            };
            templates.insert(&row.channel, &row.action_type, &row.language, template);
        }
        let pauses = document
            .pauses
            .iter()
            .map(|p| crate::pause::key(&p.scope, &p.name));
        Ok(Config {
            providers,
            routes,
            templates,
            pauses: Pauses::new(pauses),
            vault_names: document.vault_names,
        })
    }

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

/// Replaces every `{"vault": "name"}` value with what `lookup` gives for it (the extension's
/// provider check stands a placeholder in for each secret; mysmshook.worker_config() resolves
/// them in SQL).
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn problems_name_each_provider_and_template_the_extension_would_refuse() {
        let problems = problems(json!({
            "providers": [
                {"name": "hook", "kind": "webhook", "settings": {"url": "https://example.com/h", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}},
                {"name": "half", "kind": "twilio", "settings": {"auth_token": "t"}},
                {"name": "gone", "kind": "twilio", "error": "Vault secret \"t\" does not exist"}
            ],
            "templates": [
                {"channel": "sms", "action_type": "sms", "language": "en", "body": "Code {{ code }}"},
                {"channel": "sms", "action_type": "sms", "language": "es", "body": "Código {{ codigo }}"}
            ]
        }))
        .unwrap();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("provider half: "), "{problems:?}");
        assert_eq!(
            problems[1],
            "provider gone: Vault secret \"t\" does not exist"
        );
        assert!(
            problems[2].starts_with("sms/sms template (es): "),
            "{problems:?}"
        );
        assert!(super::problems(json!({"providers": 3})).is_err());
    }

    #[test]
    fn a_document_becomes_routes_in_order_then_the_built_in_ones() {
        let config = Config::from_json(
            json!({
                "providers": [
                    {"name": "hook", "kind": "webhook", "settings": {"url": "https://example.com/h", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}},
                    {"name": "gone", "kind": "twilio", "error": "Vault secret \"t\" does not exist"}
                ],
                "routes": [{"name": "mx", "channel": "sms", "calling_codes": [52, 70000], "regions": ["MX"], "providers": ["gone", "hook", "nope"]}],
                "templates": [],
                "pauses": [{"scope": "provider", "name": "hook"}],
                "vault_names": ["t"]
            }),
            Some("Acme".into()),
        )
        .unwrap();
        let names: Vec<_> = config
            .routes
            .iter()
            .map(|r| (r.name.as_str(), r.channel))
            .collect();
        assert_eq!(
            names,
            [
                ("mx", Channel::Sms),
                ("log", Channel::Sms),
                ("log", Channel::Email)
            ]
        );
        assert_eq!(
            config.routes[0].calling_codes,
            [52],
            "a code out of range is dropped"
        );
        assert_eq!(config.longest_chain(), 3);
        let chain: Vec<_> = config
            .chain(&config.routes[0])
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(chain, ["gone", "hook", "nope"]);
        assert_eq!(config.vault_names, ["t"]);
        assert_eq!(config.templates.app_name.as_deref(), Some("Acme"));
    }

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

    #[test]
    fn a_document_that_is_not_one_is_an_error() {
        assert!(Config::from_json(json!({"routes": 3}), None).is_err());
        assert!(Config::from_json(json!({}), None).unwrap().routes.len() == 2);
    }
}
