//! Custom templates by channel, action type and language, compiled once when the configuration
//! is loaded, and the language fallback that picks one for a job. Pure.

use super::go_syntax::from_go_syntax;
use minijinja::{
    AutoEscape, Environment, Error, Output, State, UndefinedBehavior, Value as TemplateValue,
};
use std::collections::HashMap;

pub const DEFAULT_LANGUAGE: &str = "en";

/// The environment every template runs in, built-in or custom, at delivery and when checked:
/// one behaviour everywhere, so a template that passes the save-time check renders for every
/// job. As in Supabase's Go templates, a missing value renders as nothing, at any depth
/// (`{{ .Data.address.city }}` for a user without an address), the template's last newline
/// is kept, and HTML is escaped as Go's html/template escapes it.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_keep_trailing_newline(true);
    env.set_formatter(go_html_formatter);
    env
}

/// Escapes what html/template escapes, the way it does (`&#39;` for `'`, `&#43;` for `+`), and
/// leaves `/` alone (minijinja's own escaping writes `&#x2f;`): pasted Supabase templates
/// render byte for byte as Auth renders them.
fn go_html_formatter(out: &mut Output, state: &State, value: &TemplateValue) -> Result<(), Error> {
    if state.auto_escape() != AutoEscape::Html || value.is_safe() {
        return minijinja::escape_formatter(out, state, value);
    }
    let text = value.to_string();
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&#34;"),
            '\'' => escaped.push_str("&#39;"),
            '+' => escaped.push_str("&#43;"),
            '\0' => escaped.push('\u{FFFD}'),
            c => escaped.push(c),
        }
    }
    out.write_str(&escaped).map_err(Error::from)
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
            let translated =
                from_go_syntax(source).map_err(|e| format!("template {name} is invalid: {e}"))?;
            env.add_template_owned(name.clone(), translated)
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
