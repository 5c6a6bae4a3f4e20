//! Go `flag`-style command lines on top of clap.
//!
//! relab's rkvctl was written with Go's `flag` package, and its users (and the experiment
//! scripts) write `-cluster :9201,:9202`, `--clients 10`, `-time=10s` and `-forever=false`.
//! Clap speaks GNU style, where `-cluster` would be the short flags `-c -l -u ...`. This
//! module rewrites a Go-style argv into one clap understands, and parses Go's duration
//! syntax. It lives in the client library (not copied from rkvd's private `flags.rs`) so
//! that any rkv binary can share it; rkvd keeps its own for now.
//!
//! The rewrite, argument by argument (argv\[0\] is kept as is):
//! - `-name`, `-name=value` (a dash, then a letter, then at least one more character)
//!   becomes `--name`, `--name=value`;
//! - `--name...`, single-letter flags (`-h`), negative numbers (`-5`), a lone `-` and plain
//!   words are left alone;
//! - everything after `--` is left alone, so a value that starts with a dash and a
//!   letter is passed as `rkvctl put -- key -value`.
//!
//! Go boolean flags never take a separate value (`-forever false` is the flag and then a
//! positional word), so rkvctl declares its booleans with `require_equals`: `-ensure`
//! sets one and `-forever=false` clears it, exactly as in Go.

use std::time::Duration;

/// Rewrites Go-style `-flag` arguments to clap's `--flag`; see the module docs.
pub fn normalize(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut rewritten = Vec::new();
    let mut only_values_follow = false;
    for (position, arg) in args.into_iter().enumerate() {
        if position == 0 || only_values_follow {
            rewritten.push(arg);
            continue;
        }
        if arg == "--" {
            only_values_follow = true;
            rewritten.push(arg);
            continue;
        }
        if is_single_dash_long_flag(&arg) {
            rewritten.push(format!("-{arg}"));
        } else {
            rewritten.push(arg);
        }
    }
    rewritten
}

/// `-name` or `-name=value` with a name of at least two characters starting with a letter.
fn is_single_dash_long_flag(arg: &str) -> bool {
    let Some(rest) = arg.strip_prefix('-') else {
        return false;
    };
    if rest.starts_with('-') {
        return false;
    }
    let name = rest.split('=').next().unwrap_or_default();
    name.len() >= 2 && name.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// Parses a Go duration: a sequence of decimal numbers with units (`ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`), as in `10s`, `1.5s`, `1m30s`; a bare `0` is zero. Negative
/// durations are refused (no rkvctl flag has a use for them).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration (try 10s, 500ms, 1m30s)".to_string());
    }
    let mut seconds = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("not a duration: {text:?} (try 10s, 500ms, 1m30s)"))?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("missing unit in duration {text:?} (try 10s)")),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {text:?} (units: ns, us, ms, s, m, h)"
                ));
            }
        };
        seconds += value * scale;
        rest = next;
    }
    if !seconds.is_finite() || seconds > 1e12 {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(line: &str) -> Vec<String> {
        normalize(
            std::iter::once("rkvctl".to_string()).chain(line.split_whitespace().map(String::from)),
        )
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        assert_eq!(
            rewrite("-cluster :1,:2 --clients 10 -time=10s -forever=false -h -5 - put -- -k"),
            [
                "rkvctl",
                "--cluster",
                ":1,:2",
                "--clients",
                "10",
                "--time=10s",
                "--forever=false",
                "-h",
                "-5",
                "-",
                "put",
                "--",
                "-k"
            ]
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10").is_err(), "a unit is required");
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1parsec").is_err());
        assert!(parse_duration("").is_err());
    }
}
