//! The path templates of LeRobot's `info.json` (`data_path`, `video_path`),
//! which use Python `str.format` syntax: `{name}` and `{name:03d}`.

/// The widest zero-padded field a template may ask for; an index needs at
/// most 20 digits, so anything wider is a corrupt `info.json`.
const MAX_WIDTH: usize = 64;

/// A value substituted into a template.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    Int(u64),
    Str(&'a str),
}

/// Renders `template` with `values`. Supported fields: `{name}` and
/// `{name:Nd}` / `{name:0Nd}` (width N, zero-padded with a leading 0) for
/// integers; `{{` and `}}` are literal braces. The error names the problem.
pub fn render(template: &str, values: &[(&str, Value<'_>)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut field = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => field.push(ch),
                        None => return Err(format!("unclosed '{{' in template {template:?}")),
                    }
                }
                let (name, spec) = field.split_once(':').unwrap_or((&field, ""));
                let value = values
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| format!("unknown field {{{name}}} in template {template:?}"))?;
                match value {
                    Value::Str(s) if spec.is_empty() => out.push_str(s),
                    Value::Str(_) => {
                        return Err(format!(
                            "format spec {spec:?} on text field {name} in {template:?}"
                        ));
                    }
                    Value::Int(v) => {
                        let digits = spec.strip_suffix('d').unwrap_or(spec);
                        if digits.is_empty() {
                            out.push_str(&v.to_string());
                        } else {
                            let zero = digits.starts_with('0');
                            let width = match digits.parse::<usize>() {
                                Ok(w) if w <= MAX_WIDTH => w,
                                _ => {
                                    return Err(format!(
                                        "unsupported format spec {spec:?} in {template:?} (a \
                                         width of at most {MAX_WIDTH} digits)"
                                    ));
                                }
                            };
                            if zero {
                                out.push_str(&format!("{v:0width$}"));
                            } else {
                                out.push_str(&format!("{v:width$}"));
                            }
                        }
                    }
                }
            }
            '}' => return Err(format!("single '}}' in template {template:?}")),
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lerobot_templates() {
        let v21 = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4";
        let got = render(
            v21,
            &[
                ("episode_chunk", Value::Int(1)),
                ("video_key", Value::Str("observation.images.top")),
                ("episode_index", Value::Int(1042)),
            ],
        )
        .unwrap();
        assert_eq!(
            got,
            "videos/chunk-001/observation.images.top/episode_001042.mp4"
        );
        assert!(
            render("a/{missing}.mp4", &[])
                .unwrap_err()
                .contains("missing")
        );
        assert_eq!(render("{{x}}", &[]).unwrap(), "{x}");
        // A width past what formatting can pad is an error, not a panic.
        let wide = render("{i:099999999d}", &[("i", Value::Int(3))]).unwrap_err();
        assert!(wide.contains("099999999d"), "{wide}");
        assert!(render("{i:0100000000000000000000d}", &[("i", Value::Int(3))]).is_err());
    }
}
