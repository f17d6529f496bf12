//! Custom templates by channel, action type and language, compiled once when the configuration
//! is loaded, and the language fallback that picks one for a job. Pure.

use super::check::from_go_syntax;
use minijinja::{Environment, Value as TemplateValue};
use std::collections::HashMap;

pub const DEFAULT_LANGUAGE: &str = "en";

/// The environment every template runs in, built-in or custom, at delivery and when checked.
pub fn environment() -> Environment<'static> {
    Environment::new()
}

/// A custom template row.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
}

/// A custom template's parts: their names in the compiled environment.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
}

/// Custom templates by (channel, action type, language), compiled.
#[derive(Clone)]
pub struct TemplateSet {
    /// A row that does not compile keeps its error, reported on the jobs that need it.
    custom: HashMap<(String, String, String), Result<Compiled, String>>,
    env: Environment<'static>,
    /// mysmshook.app_name, offered to every template as app_name.
    pub app_name: Option<String>,
}

impl Default for TemplateSet {
    fn default() -> Self {
        TemplateSet {
            custom: HashMap::new(),
            env: environment(),
            app_name: None,
        }
    }
}

impl TemplateSet {
    pub fn insert(&mut self, channel: &str, action: &str, language: &str, template: Template) {
        let language = language.to_ascii_lowercase();
        let prefix = format!("{channel}/{action}/{language}");
        let env = &mut self.env;
        let mut add = |part: &str, source: &str| -> Result<String, String> {
            let name = format!("{prefix}/{part}");
            env.add_template_owned(name.clone(), from_go_syntax(source))
                .map_err(|e| format!("template {name} is invalid: {e}"))?;
            Ok(name)
        };
        let compiled = (|| {
            Ok(Compiled {
                subject: template
                    .subject
                    .as_deref()
                    .map(|s| add("subject.txt", s))
                    .transpose()?,
                body: add("body.txt", &template.body)?,
                html: template
                    .html
                    .as_deref()
                    .map(|h| add("body.html", h))
                    .transpose()?,
            })
        })();
        self.custom
            .insert((channel.to_owned(), action.to_owned(), language), compiled);
    }

    /// The template for a language, its primary subtag ("es" for "es-MX"), then the default.
    pub fn find(
        &self,
        channel: &str,
        action: &str,
        language: &str,
    ) -> Option<(&Result<Compiled, String>, String)> {
        let language = language.to_ascii_lowercase();
        let primary = language
            .split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_owned();
        [
            language.replace('_', "-"),
            primary,
            DEFAULT_LANGUAGE.to_owned(),
        ]
        .into_iter()
        .find_map(|lang| {
            self.custom
                .get(&(channel.to_owned(), action.to_owned(), lang.clone()))
                .map(|t| (t, lang))
        })
    }

    /// Renders one compiled part.
    pub fn render(&self, name: &str, ctx: &TemplateValue) -> Result<String, String> {
        render_compiled(&self.env, name, ctx)
    }
}

pub fn render_compiled(
    env: &Environment<'_>,
    name: &str,
    ctx: &TemplateValue,
) -> Result<String, String> {
    env.get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("template {name} failed to render: {e}"))
}
