//! A small command-line reader: positional arguments, `--name value` (or
//! `--name=value`) options that may repeat, and bare flags.

/// Parsed arguments of one subcommand.
#[derive(Debug, Default)]
pub struct Args {
    pub positional: Vec<String>,
    options: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Args {
    /// Reads `args`; `flags` are the options that take no value, `options` those
    /// that take one. Anything else starting with `--` is an error.
    pub fn parse(args: &[String], flags: &[&str], options: &[&str]) -> Result<Args, String> {
        let mut parsed = Args::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if arg == "--" {
                parsed.positional.extend(rest.by_ref().cloned());
                break;
            }
            if !arg.starts_with("--") {
                parsed.positional.push(arg.clone());
                continue;
            }
            let (name, inline_value) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            if flags.contains(&name) && inline_value.is_none() {
                parsed.flags.push(name.to_owned());
            } else if options.contains(&name) {
                let value = match inline_value {
                    Some(value) => value,
                    None => rest
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("{name} needs a value"))?,
                };
                parsed.options.push((name.to_owned(), value));
            } else {
                return Err(format!("unknown option {name}"));
            }
        }
        Ok(parsed)
    }

    /// Whether a flag was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// The last value of an option.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of an option, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.options
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_repeat_and_take_inline_or_following_values() {
        let args = Args::parse(
            &strings(&[
                "a.json",
                "--group",
                "dev",
                "--group=ops",
                "--json",
                "b.json",
            ]),
            &["--json"],
            &["--group"],
        )
        .unwrap();
        assert_eq!(args.positional, ["a.json", "b.json"]);
        assert_eq!(args.all("--group").collect::<Vec<_>>(), ["dev", "ops"]);
        assert_eq!(args.option("--group"), Some("ops"));
        assert!(args.flag("--json"));
    }

    #[test]
    fn unknown_options_and_missing_values_are_errors() {
        assert!(Args::parse(&strings(&["--nope"]), &[], &[]).is_err());
        assert!(Args::parse(&strings(&["--group"]), &[], &["--group"]).is_err());
    }
}
