//! Supabase's email templates are Go templates: `{{ .Token }}`, `{{ .Data.name }}`,
//! `{{ if eq .Data.plan "pro" }}…{{ else if … }}…{{ else }}…{{ end }}`. They are translated into
//! minijinja's syntax when a template is saved and when it is compiled, so a template pasted
//! from the Supabase dashboard renders as Auth renders it. minijinja's own syntax passes through
//! unchanged: an action that is not Go only has its `.Name` variables renamed. Pure.

/// Supabase's Go-template names and what they are called here.
const GO_NAMES: &[(&str, &str)] = &[
    ("Token", "code"),
    ("TokenHash", "token_hash"),
    ("ConfirmationURL", "confirmation_url"),
    ("SiteURL", "site_url"),
    ("RedirectTo", "redirect_to"),
    ("Email", "email"),
    ("NewEmail", "new_email"),
    ("OldEmail", "old_email"),
    ("Phone", "phone"),
    ("OldPhone", "old_phone"),
    ("Provider", "provider"),
    ("FactorType", "factor_type"),
    ("Data", "data"),
    ("AppName", "app_name"),
    ("SendingTo", "to"),
];

/// Go's actions that have no counterpart here: refused by name rather than mistranslated.
const UNSUPPORTED_ACTIONS: &[&str] = &[
    "range", "with", "define", "template", "block", "break", "continue",
];

/// Go's predefined functions that a condition or an output may call.
const FUNCTIONS: &[&str] = &[
    "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "len", "index",
];

/// Go's other predefined functions: refused by name.
const UNSUPPORTED_FUNCTIONS: &[&str] = &[
    "print", "printf", "println", "html", "js", "urlquery", "call", "slice",
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    If,
}

/// Translates a template's Go actions into minijinja. Errors name the action that cannot be
/// translated; they are reported when the template is saved.
pub fn from_go_syntax(source: &str) -> Result<String, String> {
    let mut out = String::with_capacity(source.len() + 16);
    let mut open_blocks: Vec<Block> = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        // A Go comment may contain "}}"; it ends at "*/}}" (or "*/ -}}").
        let is_comment = after.trim_start_matches("- ").starts_with("/*");
        let close = if is_comment {
            after
                .find("*/")
                .and_then(|c| after[c..].find("}}").map(|d| c + d))
        } else {
            after.find("}}")
        };
        let Some(close) = close else {
            // Unterminated: leave it for minijinja to report.
            out.push_str(&rest[open..]);
            return finish(out, &open_blocks);
        };
        let action = &after[..close];
        let (trim_left, inner) = match action.strip_prefix('-') {
            Some(inner) if inner.starts_with(char::is_whitespace) => ("-", inner),
            _ => ("", action),
        };
        let (trim_right, inner) = match inner.strip_suffix('-') {
            Some(inner) if inner.ends_with(char::is_whitespace) => ("-", inner),
            _ => ("", inner),
        };
        out.push_str(&translate_action(
            inner.trim(),
            trim_left,
            trim_right,
            &mut open_blocks,
        )?);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    finish(out, &open_blocks)
}

fn finish(out: String, open_blocks: &[Block]) -> Result<String, String> {
    match open_blocks.last() {
        Some(Block::If) => Err("{{ if … }} has no {{ end }}".into()),
        None => Ok(out),
    }
}

fn translate_action(
    inner: &str,
    trim_left: &str,
    trim_right: &str,
    open_blocks: &mut Vec<Block>,
) -> Result<String, String> {
    let tag = |body: &str| format!("{{%{trim_left} {body} {trim_right}%}}");
    if inner.starts_with("/*") {
        return Ok(format!("{{#{trim_left} #{trim_right}}}"));
    }
    let word: String = inner
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let argument = inner[word.len()..].trim();
    let is_keyword = argument.is_empty() || inner[word.len()..].starts_with(char::is_whitespace);
    match word.as_str() {
        "if" if is_keyword && !argument.is_empty() => {
            open_blocks.push(Block::If);
            Ok(tag(&format!("if {}", condition(argument)?)))
        }
        "else" if is_keyword => {
            if open_blocks.last() != Some(&Block::If) {
                return Err("{{ else }} outside {{ if … }}".into());
            }
            match argument.strip_prefix("if") {
                Some(cond) if cond.starts_with(char::is_whitespace) => {
                    Ok(tag(&format!("elif {}", condition(cond.trim())?)))
                }
                _ if argument.is_empty() => Ok(tag("else")),
                _ => Err(format!("{{{{ {inner} }}}} is not a Go template action")),
            }
        }
        "end" if argument.is_empty() => match open_blocks.pop() {
            Some(Block::If) => Ok(tag("endif")),
            None => Err("{{ end }} without {{ if … }}".into()),
        },
        action if is_keyword && UNSUPPORTED_ACTIONS.contains(&action) => Err(format!(
            "Go template action {{{{ {action} }}}} is not supported; write it in minijinja syntax \
             (e.g. {{% for item in data.items %}}…{{% endfor %}})"
        )),
        function
            if is_keyword
                && !argument.is_empty()
                && (FUNCTIONS.contains(&function) || UNSUPPORTED_FUNCTIONS.contains(&function)) =>
        {
            Ok(format!(
                "{{{{{trim_left} {} {trim_right}}}}}",
                condition(inner)?
            ))
        }
        _ => Ok(format!(
            "{{{{{trim_left} {} {trim_right}}}}}",
            rename_variables(inner)
        )),
    }
}

/// A Go pipeline as a minijinja expression. What does not parse as Go is taken as minijinja
/// (`{{ if data.plan == "pro" }}` works too), with its `.Name` variables renamed.
fn condition(source: &str) -> Result<String, String> {
    let tokens = match tokenize(source) {
        Some(tokens) => tokens,
        None => return Ok(rename_variables(source)),
    };
    let mut position = 0;
    match command(&tokens, &mut position) {
        Ok(expression) if position == tokens.len() => Ok(expression),
        Err(Parse::Unsupported(message)) => Err(message),
        _ => Ok(rename_variables(source)),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    /// A literal or a variable path, already in minijinja's spelling.
    Operand(String),
    /// A name that is not a variable path: a function, or a minijinja variable.
    Word(String),
}

fn tokenize(source: &str) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = source.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' => {
                chars.next();
                tokens.push(if c == '(' { Token::Open } else { Token::Close });
            }
            '"' => {
                chars.next();
                let mut escaped = false;
                let end = loop {
                    let (i, c) = chars.next()?;
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break i,
                        _ => escaped = false,
                    }
                };
                tokens.push(Token::Operand(source[start..=end].to_owned()));
            }
            '`' => {
                chars.next();
                let end = loop {
                    let (i, c) = chars.next()?;
                    if c == '`' {
                        break i;
                    }
                };
                let raw = &source[start + 1..end];
                tokens.push(Token::Operand(serde_json::to_string(raw).ok()?));
            }
            _ => {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                tokens.push(word_token(&source[start..end])?);
            }
        }
    }
    Some(tokens)
}

fn word_token(word: &str) -> Option<Token> {
    let is_name = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if let Some(path) = word.strip_prefix('.') {
        // .Data.address.city: every segment a name; the first one renamed.
        if !path.split('.').all(is_name) {
            return None;
        }
        return Some(Token::Operand(rename_variables(word)));
    }
    if word.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        return word
            .parse::<f64>()
            .is_ok()
            .then(|| Token::Operand(word.to_owned()));
    }
    match word {
        "true" | "false" => Some(Token::Operand(word.to_owned())),
        "nil" => Some(Token::Operand("none".into())),
        _ if is_name(word) => Some(Token::Word(word.to_owned())),
        _ => None,
    }
}

enum Parse {
    /// Not Go: the caller takes the text as minijinja.
    NotGo,
    /// Go, but a function this translation does not offer.
    Unsupported(String),
}

/// `function arg…`, or a single operand; stops before `)` or at the end.
fn command(tokens: &[Token], position: &mut usize) -> Result<String, Parse> {
    let function = match tokens.get(*position) {
        Some(Token::Word(w)) if FUNCTIONS.contains(&w.as_str()) => Some(w.clone()),
        Some(Token::Word(w)) if UNSUPPORTED_FUNCTIONS.contains(&w.as_str()) => {
            return Err(Parse::Unsupported(format!(
                "Go template function {w} is not supported; write the expression in minijinja syntax"
            )))
        }
        _ => None,
    };
    if function.is_some() {
        *position += 1;
    }
    let mut args = Vec::new();
    while let Some(token) = tokens.get(*position) {
        match token {
            Token::Close => break,
            Token::Open => {
                *position += 1;
                let inner = command(tokens, position)?;
                if tokens.get(*position) != Some(&Token::Close) {
                    return Err(Parse::NotGo);
                }
                *position += 1;
                // Already atomic: a single operand, or a function's parenthesised result.
                args.push(inner);
            }
            Token::Operand(text) | Token::Word(text) => {
                *position += 1;
                args.push(text.clone());
            }
        }
    }
    let Some(function) = function else {
        return match args.as_slice() {
            [single] => Ok(single.clone()),
            _ => Err(Parse::NotGo),
        };
    };
    let arity = |ok: bool| if ok { Ok(()) } else { Err(Parse::NotGo) };
    Ok(match function.as_str() {
        "eq" => {
            arity(args.len() >= 2)?;
            // eq a b c: a equals b or c.
            let tests: Vec<String> = args[1..]
                .iter()
                .map(|other| format!("{} == {other}", args[0]))
                .collect();
            format!("({})", tests.join(" or "))
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(args.len() == 2)?;
            let operator = match function.as_str() {
                "ne" => "!=",
                "lt" => "<",
                "le" => "<=",
                "gt" => ">",
                _ => ">=",
            };
            format!("({} {operator} {})", args[0], args[1])
        }
        "and" | "or" => {
            arity(!args.is_empty())?;
            format!("({})", args.join(&format!(" {function} ")))
        }
        "not" => {
            arity(args.len() == 1)?;
            format!("(not {})", args[0])
        }
        "len" => {
            arity(args.len() == 1)?;
            format!("({} | length)", args[0])
        }
        _ => {
            // index a k1 k2: a[k1][k2]
            arity(args.len() >= 2)?;
            let keys: String = args[1..].iter().map(|k| format!("[{k}]")).collect();
            format!("{}{keys}", args[0])
        }
    })
}

/// Renames Supabase's `.Name` variables (`{{ .Token }}`, `{{ .Data.name }}`) inside one
/// action to their names here; anything else is left for minijinja.
fn rename_variables(inner: &str) -> String {
    let mut expr = String::with_capacity(inner.len());
    let mut chars = inner.char_indices().peekable();
    let mut previous: Option<char> = None;
    while let Some((i, c)) = chars.next() {
        let starts_name = c == '.'
            && !previous.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == ')' || p == ']')
            && inner[i + 1..].starts_with(|n: char| n.is_ascii_uppercase());
        if starts_name {
            let name: String = inner[i + 1..]
                .chars()
                .take_while(|n| n.is_alphanumeric() || *n == '_')
                .collect();
            let mapped = GO_NAMES
                .iter()
                .find(|(go, _)| *go == name)
                .map(|(_, ours)| *ours);
            expr.push_str(mapped.unwrap_or(&name));
            for _ in 0..name.chars().count() {
                chars.next();
            }
            previous = name.chars().last();
            continue;
        }
        expr.push(c);
        previous = Some(c);
    }
    expr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(source: &str) -> String {
        from_go_syntax(source).unwrap_or_else(|e| panic!("{source}: {e}"))
    }

    #[test]
    fn variables_are_renamed() {
        assert_eq!(
            go("Code {{ .Token }} at {{ .ConfirmationURL }} for {{.Data.name}} {{ .SiteURL }}/x"),
            "Code {{ code }} at {{ confirmation_url }} for {{ data.name }} {{ site_url }}/x"
        );
        // minijinja syntax is left alone.
        assert_eq!(
            go("{{ code }} {% if x %}.Token{% endif %} {{ data.x | default(\"a\") }}"),
            "{{ code }} {% if x %}.Token{% endif %} {{ data.x | default(\"a\") }}"
        );
        assert_eq!(go("{{ a.Token }} {{"), "{{ a.Token }} {{");
    }

    #[test]
    fn control_structures_become_blocks() {
        assert_eq!(
            go("{{ if .Data.name }}Hi {{ .Data.name }}{{ else }}Hi{{ end }}"),
            "{% if data.name %}Hi {{ data.name }}{% else %}Hi{% endif %}"
        );
        assert_eq!(
            go(
                r#"{{ if eq .Data.Domain "https://a.example" }}A{{ else if eq .Data.Domain "https://b.example" `c` }}B{{ end }}"#
            ),
            r#"{% if (data.Domain == "https://a.example") %}A{% elif (data.Domain == "https://b.example" or data.Domain == "c") %}B{% endif %}"#
        );
        assert_eq!(
            go("{{- if and (ne .Email \"\") (not .NewEmail) -}}\nx\n{{- end }}"),
            "{%- if ((email != \"\") and (not new_email)) -%}\nx\n{%- endif %}"
        );
        assert_eq!(
            go("{{ or .Data.name \"there\" }}"),
            "{{ (data.name or \"there\") }}"
        );
        assert_eq!(go("{{ len .Data.items }}"), "{{ (data.items | length) }}");
        assert_eq!(
            go("{{ index .Data \"first name\" }}"),
            "{{ data[\"first name\"] }}"
        );
        assert_eq!(go("{{/* a } } comment */}}x"), "{# #}x");
        // Nested ifs close in order.
        assert_eq!(
            go("{{ if .Token }}{{ if .Email }}1{{ end }}{{ end }}"),
            "{% if code %}{% if email %}1{% endif %}{% endif %}"
        );
    }

    #[test]
    fn untranslatable_go_is_refused_by_name() {
        for (source, error) in [
            ("{{ if .Token }}x", "no {{ end }}"),
            ("x{{ end }}", "without {{ if"),
            ("{{ else }}", "outside"),
            ("{{ range .Data.items }}{{ . }}{{ end }}", "range"),
            ("{{ with .Data }}{{ end }}", "with"),
            ("{{ printf \"%s\" .Token }}", "printf"),
        ] {
            let err = from_go_syntax(source).unwrap_err();
            assert!(err.contains(error), "{source}: {err}");
        }
    }
}
