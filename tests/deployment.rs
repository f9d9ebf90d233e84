//! The deployment files as users take them: every Envoy config in envoy/ passes Envoy 1.40's
//! own validation, and docker-compose.yml passes `docker-compose config -q` with every file it
//! mounts or builds from present.

mod common;

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn envoy() -> std::path::PathBuf {
    let venv = std::env::var_os("COGNITO_AUTHZ_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    let envoy = venv.join("bin/envoy");
    assert!(
        envoy.is_file(),
        "{} is missing: run scripts/setup-venv",
        envoy.display()
    );
    envoy
}

#[test]
fn every_envoy_config_validates_with_envoy_1_40() {
    let envoy = envoy();
    let version = Command::new(&envoy).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("/1.40."),
        "Envoy 1.40 expected: {}",
        String::from_utf8_lossy(&version.stdout)
    );
    let mut configs: Vec<_> = std::fs::read_dir(root().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    configs.sort();
    assert!(
        configs.len() >= 4,
        "expected native, compose, uds and tls configs: {configs:?}"
    );
    // The mutual-TLS config names certificate files, which validation loads: point it at a
    // throwaway PKI; the other configs are validated as committed.
    let pki =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("validate-pki-{}", std::process::id()));
    common::write_pki(&pki);
    for config in configs {
        let text = std::fs::read_to_string(&config).unwrap();
        let target = if text.contains(cruddur_demo::stack::TLS_DIR) {
            let rendered = pki.join(config.file_name().unwrap());
            let local = text.replace(cruddur_demo::stack::TLS_DIR, &format!("{}/", pki.display()));
            std::fs::write(&rendered, local).unwrap();
            rendered
        } else {
            config.clone()
        };
        let out = Command::new(&envoy)
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The edge settings every shipped Envoy config must carry, checked against the constants the
/// service itself uses rather than copies of them.
#[test]
fn every_envoy_config_keeps_the_edge_settings() {
    use cognito_authz::identity::{IDENTITY_HEADERS, IDENTITY_PREFIX};
    use cognito_authz::policy::ENVOY_ALLOWED_HEADERS;
    let configs: Vec<_> = std::fs::read_dir(root().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(configs.len() >= 4);
    for config in configs {
        let text = std::fs::read_to_string(&config).unwrap();
        let name = config.display();
        for setting in [
            "headers_with_underscores_action: REJECT_REQUEST",
            "use_remote_address: true",
            "normalize_path: true",
            "merge_slashes: true",
            "path_with_escaped_slashes_action: REJECT_REQUEST",
            "failure_mode_allow: false",
            "per_connection_buffer_limit_bytes: 32768",
            "max_concurrent_streams: 100",
        ] {
            assert!(text.contains(setting), "{name} lacks {setting}");
        }
        let allowed: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.trim().starts_with("allowed_headers:"))
            .skip(2)
            .take_while(|l| l.trim().starts_with("- exact:") || l.trim().starts_with("- prefix:"))
            .map(|l| l.trim())
            .collect();
        let mut expected: Vec<String> = ENVOY_ALLOWED_HEADERS
            .iter()
            .map(|h| format!("- exact: {h}"))
            .collect();
        expected.push(format!("- prefix: {IDENTITY_PREFIX}"));
        assert_eq!(allowed, expected, "{name}: allowed_headers");
        // The route cognito-authz never sees strips every managed header itself.
        for header in IDENTITY_HEADERS {
            assert!(
                text.contains(&format!("                - {header}\n")),
                "{name}: /healthz does not remove {header}"
            );
        }
    }
}

#[test]
fn docker_compose_config_is_valid_and_complete() {
    let compose = root().join("docker-compose.yml");
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(&compose)
        .args(["config", "-q"])
        .output()
        .unwrap_or_else(|e| {
            panic!("docker-compose is not installed ({e}): the README's test command installs it")
        });
    assert!(
        out.status.success(),
        "docker-compose config -q failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every bind-mounted file and build context named in the file exists.
    let text = std::fs::read_to_string(&compose).unwrap();
    let mut named = 0;
    for line in text.lines() {
        let line = line.trim().trim_start_matches("- ");
        let path = if let Some(rest) = line.strip_prefix("context:") {
            Some(rest.trim())
        } else if let Some(rest) = line.strip_prefix("dockerfile:") {
            Some(rest.trim())
        } else if line.starts_with("./") {
            line.split(':').next()
        } else {
            None
        };
        if let Some(path) = path {
            named += 1;
            assert!(
                root().join(path.trim_matches('"')).exists(),
                "docker-compose.yml names {path}, which does not exist"
            );
        }
    }
    assert!(
        named >= 4,
        "expected mounts and build contexts, found {named}"
    );
}

#[test]
fn the_dockerfile_builds_non_root_and_small() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage");
    assert!(
        text.contains("USER nonroot") || text.contains(":nonroot"),
        "runs as non-root"
    );
    assert!(
        text.contains("distroless") || text.contains("-slim"),
        "a small runtime image"
    );
}
