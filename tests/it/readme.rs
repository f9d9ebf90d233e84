//! The README is code: every TOML block in it passes `check-config`, and its table of
//! environment variables names exactly the variables the service reads (`config::ENV_*`).

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The README's Configuration section, where the variable table is.
/// The sections whose tables list variables: Configuration, and Tracing (OpenTelemetry's).
fn configuration_section(text: &str) -> String {
    ["Configuration", "Tracing"]
        .iter()
        .map(|name| {
            text.split(&format!("\n## {name}\n"))
                .nth(1)
                .and_then(|rest| rest.split("\n## ").next())
                .unwrap_or_else(|| panic!("a {name} section"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fenced blocks of one language, with the line each starts on.
fn blocks(text: &str, language: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (number, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        if current.is_some() && fence.starts_with("```") {
            found.extend(current.take());
            continue;
        }
        match &mut current {
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None if fence == format!("```{language}") => {
                current = Some((number + 1, String::new()))
            }
            None => {}
        }
    }
    found
}

/// `check-config` for the README's example at `line`, with a pool set and `file` and `vars`
/// besides: the effective configuration, or a failure naming the line.
fn check_config(
    line: usize,
    file: Option<&std::path::Path>,
    vars: &[(&str, &str)],
) -> serde_json::Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cognito-authz"));
    command.arg("check-config");
    if let Some(file) = file {
        command.arg("--config").arg(file);
    }
    let out = command
        .env_clear()
        .envs([
            ("AWS_COGNITO_USER_POOL_ID", "us-east-1_AbC123"),
            ("AWS_COGNITO_USER_POOL_CLIENT_ID", "web-client-id"),
        ])
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "README.md line {line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_toml_block_passes_check_config() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("readme-{}", std::process::id()));
    // The files the examples name, where the test keeps them.
    common::write_pki(&dir.join("tls"));
    std::fs::write(
        dir.join("admin-token"),
        "a-secret-of-thirty-two-characters!",
    )
    .unwrap();
    std::fs::write(
        dir.join("redis-signing-key"),
        "0123456789abcdef0123456789abcdef0123456789abcdef",
    )
    .unwrap();
    let toml = blocks(&readme(), "toml");
    assert!(
        toml.len() >= 2,
        "the README's TOML examples: {}",
        toml.len()
    );
    for (line, text) in toml {
        let text = text.replace("/etc/cognito-authz/", &format!("{}/", dir.display()));
        let file = dir.join(format!("block-{line}.toml"));
        std::fs::write(&file, &text).unwrap();
        let config = check_config(line, Some(&file), &[]);
        assert!(config["pools"].as_array().is_some_and(|p| !p.is_empty()));
    }
}

/// Each `env` block is a set of variables the service takes: `check-config` accepts them and
/// shows them in effect.
#[test]
fn every_env_block_passes_check_config() {
    let env = blocks(&readme(), "env");
    assert!(!env.is_empty(), "the README's variable examples");
    for (line, text) in env {
        let vars: Vec<(&str, &str)> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_once('=').expect("NAME=value"))
            .collect();
        let config = check_config(line, None, &vars);
        let shown = config.to_string();
        for (name, value) in vars {
            assert!(
                shown.contains(value),
                "README.md line {line}: {name} not in effect: {shown}"
            );
        }
    }
}

#[test]
fn the_variable_table_names_exactly_the_variables_the_service_reads() {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config.rs"))
            .unwrap();
    let constants: BTreeSet<String> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const ENV_"))
        .filter_map(|rest| rest.split('"').nth(1))
        .map(str::to_string)
        .collect();
    assert!(constants.len() > 30, "{constants:?}");
    let text = readme();
    let section = configuration_section(&text);
    let mut documented = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or("");
        for name in first.split('`').skip(1).step_by(2) {
            documented.insert(name.to_string());
        }
    }
    // Read by libraries, not by us.
    documented.remove("RUST_LOG");
    let undocumented: Vec<_> = constants.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&constants).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "not in the README's table: {undocumented:?}; in the table but not read: {unknown:?}"
    );
}

#[test]
fn the_variable_table_states_each_default_as_the_settings_declare_it() {
    use cognito_authz::config::settings::SETTINGS;
    let text = readme();
    let section = configuration_section(&text);
    let mut checked = 0;
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, default) = (cells[1], cells[2]);
        for name in names.split('`').skip(1).step_by(2) {
            if name == "RUST_LOG" {
                continue;
            }
            let setting = SETTINGS
                .iter()
                .find(|s| s.env == Some(name))
                .unwrap_or_else(|| panic!("{name} is in the README but not in the settings"));
            assert_eq!(
                default,
                setting.default.to_string(),
                "{name}: the README's default is not the declared one"
            );
            checked += 1;
        }
    }
    let with_env = SETTINGS.iter().filter(|s| s.env.is_some()).count();
    assert_eq!(
        checked, with_env,
        "every variable of the settings has a row"
    );
}
