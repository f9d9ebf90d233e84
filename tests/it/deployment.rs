//! The deployment files as users take them, checked offline: every Envoy config (envoy/, the
//! ECS one, the one inside the Kubernetes ConfigMap) passes Envoy 1.40's own validation;
//! Kubernetes objects pass `kubernetes-validate --strict`; Istio, Gateway API and Envoy Gateway
//! objects pass their published models (@kubernetes-models); the ECS task definition passes
//! botocore's RegisterTaskDefinition validator; docker-compose.yml (with its `replicas` profile)
//! passes `docker-compose config -q` with every file it mounts or builds from present.

use crate::common;

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv_tool(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("COGNITO_AUTHZ_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    let tool = venv.join("bin").join(name);
    assert!(
        tool.is_file(),
        "{} is missing: run scripts/setup-venv",
        tool.display()
    );
    tool
}

fn envoy() -> std::path::PathBuf {
    venv_tool("envoy")
}

/// Every shipped Envoy config: envoy/*.yaml and the ECS one.
fn envoy_configs() -> Vec<std::path::PathBuf> {
    let mut configs: Vec<_> = std::fs::read_dir(root().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    configs.push(root().join("deploy/ecs/envoy.yaml"));
    configs.sort();
    configs
}

/// The Envoy config inside deploy/kubernetes/envoy-configmap.yaml.
fn configmap_envoy_config() -> String {
    let text =
        std::fs::read_to_string(root().join("deploy/kubernetes/envoy-configmap.yaml")).unwrap();
    let body = text
        .split_once("  envoy.yaml: |\n")
        .expect("the ConfigMap holds envoy.yaml")
        .1;
    body.lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_ok(command: &mut Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| {
        panic!("{what} cannot run ({e}): the README's test command installs it")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn kubernetes_objects_validate_against_the_kubernetes_schemas() {
    let files = [
        "deploy/kubernetes/cruddur.yaml",
        "deploy/kubernetes/envoy-configmap.yaml",
        "deploy/envoy-gateway/cruddur.yaml",
    ];
    let out = run_ok(
        Command::new(venv_tool("kubernetes-validate"))
            .arg("--strict")
            .current_dir(root())
            .args(files),
        "kubernetes-validate",
    );
    for kind in [
        "deployment/cruddur",
        "poddisruptionbudget/cruddur",
        "service/cruddur",
        "configmap/cruddur-envoy",
        "deployment/cognito-authz",
        "networkpolicy/cruddur-app-from-the-gateway-only",
        "networkpolicy/cognito-authz-from-the-gateway-only",
    ] {
        assert!(
            out.contains(&format!("passed for resource {kind}")),
            "{kind} not validated:\n{out}"
        );
    }
    // The shape the issue asks for, beyond what a schema can say.
    let pod = std::fs::read_to_string(root().join("deploy/kubernetes/cruddur.yaml")).unwrap();
    let sidecar = pod
        .split("initContainers:")
        .nth(1)
        .expect("an init container");
    for needle in [
        "restartPolicy: Always",
        "readinessProbe:",
        "livenessProbe:",
        "readOnlyRootFilesystem: true",
        "unix:/run/cognito-authz/authz.sock",
    ] {
        assert!(
            sidecar.contains(needle),
            "the cognito-authz sidecar lacks {needle}"
        );
    }
    assert!(pod.contains("secretRef: { name: cognito-authz }") && pod.contains("AUTHZ_REDIS_URL"));
    assert!(pod.contains("kind: PodDisruptionBudget") && pod.contains("replicas: 3"));
}

/// The YAML documents of a deploy file.
fn documents(path: &str) -> Vec<serde_norway::Value> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde_norway::Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

/// The port of a `host:port` listen address.
fn listen_port(addr: &str) -> u64 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{addr} names no port"))
}

#[test]
fn the_envoy_gateway_network_policy_selects_cognito_authz_and_its_listening_ports() {
    const FILE: &str = "deploy/envoy-gateway/cruddur.yaml";
    let docs = documents(FILE);
    let object = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{FILE} has no {kind}/{name}"))
    };
    let deployment = object("Deployment", "cognito-authz");
    let template = &deployment["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    // Each listener's port, as the environment sets it and as the container declares it.
    let env = |name: &str| -> String {
        container["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("the container sets no {name}"))
            .to_string()
    };
    let declared: Vec<(String, u64)> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    let port_named = |name: &str| {
        declared
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no container port {name}: {declared:?}"))
            .1
    };
    let (grpc, http, admin) = (
        listen_port(&env("AUTHZ_GRPC_ADDR")),
        listen_port(&env("AUTHZ_HTTP_ADDR")),
        listen_port(&env("AUTHZ_ADMIN_ADDR")),
    );
    assert_eq!(
        (port_named("grpc"), port_named("http"), port_named("admin")),
        (grpc, http, admin)
    );
    assert!(
        env("AUTHZ_ADMIN_ADDR").starts_with("0.0.0.0:"),
        "a scraper in another namespace cannot reach a loopback admin port"
    );
    // The gateway reaches the check through the Service the SecurityPolicies name: each of
    // their backend ports leads to a port the policy admits the gateway to.
    let service = object("Service", "cognito-authz");
    let backend_ports: Vec<u64> = docs
        .iter()
        .filter(|d| d["kind"] == "SecurityPolicy")
        .flat_map(|d| {
            let ext = &d["spec"]["extAuth"];
            let refs = if ext["grpc"].is_mapping() {
                &ext["grpc"]["backendRefs"]
            } else {
                &ext["http"]["backendRefs"]
            };
            refs.as_sequence().unwrap().clone()
        })
        .map(|r| {
            assert_eq!(r["name"], "cognito-authz");
            let port = r["port"].as_u64().unwrap();
            let target = service["spec"]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|p| p["port"].as_u64() == Some(port))
                .unwrap_or_else(|| panic!("the Service has no port {port}"))["targetPort"]
                .clone();
            target
                .as_u64()
                .unwrap_or_else(|| port_named(target.as_str().unwrap()))
        })
        .collect();
    assert_eq!(
        backend_ports,
        [grpc, http],
        "one SecurityPolicy per protocol"
    );

    let policy = object("NetworkPolicy", "cognito-authz-from-the-gateway-only");
    let spec = &policy["spec"];
    assert_eq!(
        policy["metadata"]["namespace"],
        deployment["metadata"]["namespace"]
    );
    // It selects the Deployment's pods: every label it asks for, the pods carry.
    let selector = spec["podSelector"]["matchLabels"].as_mapping().unwrap();
    assert!(!selector.is_empty(), "an empty selector picks every pod");
    for (key, value) in selector {
        assert_eq!(
            &template["metadata"]["labels"][key], value,
            "the policy selects {key:?}={value:?}, which the pods lack"
        );
    }
    assert_eq!(
        spec["policyTypes"],
        serde_norway::Value::from(vec!["Ingress"])
    );
    // Each rule: one namespace, by the label Kubernetes sets itself, to the ports it needs.
    let rules: Vec<(String, Vec<u64>)> = spec["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|rule| {
            let [from] = rule["from"].as_sequence().unwrap().as_slice() else {
                panic!("one peer per rule: {rule:?}");
            };
            assert!(from.get("podSelector").is_none() && from.get("ipBlock").is_none());
            let namespace = from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                .as_str()
                .unwrap_or_else(|| panic!("a peer not named by namespace: {from:?}"));
            let ports = rule["ports"]
                .as_sequence()
                .unwrap_or_else(|| panic!("a rule open to every port: {rule:?}"))
                .iter()
                .map(|p| {
                    assert_eq!(p["protocol"], "TCP");
                    p["port"].as_u64().expect("a port number")
                })
                .collect();
            (namespace.to_string(), ports)
        })
        .collect();
    // The gateway's namespace is the one the app's policy admits.
    let app_policy = object("NetworkPolicy", "cruddur-app-from-the-gateway-only");
    let gateway = app_policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
        ["kubernetes.io/metadata.name"]
        .as_str()
        .unwrap();
    assert_eq!(gateway, "envoy-gateway-system");
    assert_eq!(
        rules,
        [
            (gateway.to_string(), vec![grpc, http]),
            ("monitoring".to_string(), vec![admin]),
        ]
    );
}

#[test]
fn istio_and_gateway_objects_validate_against_their_published_models() {
    let script = root().join("deploy/validate/validate.mjs");
    assert!(
        root().join("deploy/validate/node_modules/@kubernetes-models/istio").is_dir(),
        "the @kubernetes-models packages are missing: the README's test command installs them (npm ci in deploy/validate)"
    );
    let out = run_ok(
        Command::new("node").arg(script).current_dir(root()).args([
            "deploy/istio/mesh-config.yaml",
            "deploy/istio/authorization.yaml",
            "deploy/envoy-gateway/cruddur.yaml",
        ]),
        "node deploy/validate/validate.mjs",
    );
    for object in [
        "IstioOperator/cruddur-ext-authz",
        "AuthorizationPolicy/cruddur-cognito",
        "ServiceEntry/cognito-authz-local",
        "HTTPRoute/cruddur",
        "SecurityPolicy/cruddur-cognito-grpc",
        "SecurityPolicy/cruddur-cognito-http",
        "VirtualService/cruddur",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("ok ") && l.contains(object)),
            "{object}:\n{out}"
        );
    }
    let mesh = std::fs::read_to_string(root().join("deploy/istio/mesh-config.yaml")).unwrap();
    assert!(mesh.contains("envoyExtAuthzGrpc:") && mesh.contains("envoyExtAuthzHttp:"));
    let policy = std::fs::read_to_string(root().join("deploy/istio/authorization.yaml")).unwrap();
    assert!(policy.contains("action: CUSTOM") && policy.contains("- address: 127.0.0.1"));
    // No path skips the check: a skipped path would strip no identity header.
    assert!(!policy.contains("notPaths") && !policy.contains("notMethods"));
}

#[test]
fn the_ecs_task_definition_validates_against_botocores_model() {
    run_ok(
        Command::new(venv_tool("python"))
            .arg(root().join("deploy/validate/validate_ecs.py"))
            .arg(root().join("deploy/ecs/task-definition.json")),
        "deploy/validate/validate_ecs.py",
    );
    let task: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/ecs/task-definition.json")).unwrap(),
    )
    .unwrap();
    let containers = task["containerDefinitions"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cognito-authz", "envoy", "backend-flask"]);
    let authz = &containers[0];
    assert_eq!(
        authz["healthCheck"]["command"][1],
        "/usr/local/bin/cognito-authz"
    );
    assert_eq!(authz["healthCheck"]["command"][2], "health");
    for c in containers {
        assert_eq!(
            c["logConfiguration"]["logDriver"], "awslogs",
            "{}",
            c["name"]
        );
    }
    assert_eq!(containers[1]["dependsOn"][0]["condition"], "HEALTHY");
    let envs: Vec<&str> = authz["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        envs.contains(&"AWS_COGNITO_USER_POOL_ID")
            && envs.contains(&"AWS_COGNITO_USER_POOL_CLIENT_ID")
    );
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
    let mut configs = envoy_configs();
    assert!(
        configs.len() >= 7,
        "expected native, compose, compose-replicas, uds, tls, http and ECS configs: {configs:?}"
    );
    let pki_root =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("validate-cm-{}", std::process::id()));
    std::fs::create_dir_all(&pki_root).unwrap();
    let from_configmap = pki_root.join("kubernetes-configmap-envoy.yaml");
    std::fs::write(&from_configmap, configmap_envoy_config()).unwrap();
    configs.push(from_configmap);
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
        // The in-process config loads the module, which reads the pool from the environment.
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_cognito-authz"))
            .parent()
            .unwrap();
        let out = Command::new(&envoy)
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&target)
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", bin_dir)
            .env("AWS_COGNITO_USER_POOL_ID", "us-east-1_Validate")
            .env("AWS_COGNITO_USER_POOL_CLIENT_ID", "validate-client")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("COGNITO_JWKS_URI", "http://127.0.0.1:9/jwks.json")
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
    use cognito_authz::identity::IDENTITY_PREFIX;
    use cognito_authz::policy::ENVOY_ALLOWED_HEADERS;
    let configs = envoy_configs();
    assert!(configs.len() >= 7);
    let mut texts: Vec<(String, String)> = configs
        .iter()
        .map(|c| (c.display().to_string(), std::fs::read_to_string(c).unwrap()))
        .collect();
    texts.push((
        "the Kubernetes ConfigMap".to_string(),
        configmap_envoy_config(),
    ));
    for (name, text) in texts {
        for setting in [
            "headers_with_underscores_action: REJECT_REQUEST",
            "use_remote_address: true",
            "normalize_path: true",
            "merge_slashes: true",
            "path_with_escaped_slashes_action: REJECT_REQUEST",
            "per_connection_buffer_limit_bytes: 32768",
            "max_concurrent_streams: 100",
        ] {
            assert!(text.contains(setting), "{name} lacks {setting}");
        }
        // In-process, the module sees every header and fails closed by itself (a panic or an
        // unreadable override is a 500): no ext_authz settings to keep.
        let module = text.contains("- name: envoy.filters.http.dynamic_modules");
        if module {
            assert!(
                !text.contains("- name: envoy.filters.http.ext_authz"),
                "{name}: the module and ext_authz both"
            );
            assert!(
                text.contains("cognito_authz.mode: public\n                        cognito_authz.rule: health"),
                "{name}: /healthz is not checked as public"
            );
            let cors = text.find("- name: envoy.filters.http.cors");
            let authz = text.find("- name: envoy.filters.http.dynamic_modules");
            assert!(
                cors.is_some() && cors < authz,
                "{name}: no CORS filter before the module"
            );
            assert!(
                !text.contains("disabled: true"),
                "{name} skips the check on a route"
            );
            continue;
        }
        assert!(
            text.contains("failure_mode_allow: false"),
            "{name} lacks failure_mode_allow: false"
        );
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
        // No route skips the check: health is checked as public (gRPC: context_extensions;
        // HTTP: the rules file), so identity headers are stripped there too.
        assert!(
            !text.contains("disabled: true"),
            "{name} skips the check on a route"
        );
        // The gRPC protocol (the commented-out tracer has a grpc_service of its own).
        if text.contains("envoy_grpc: { cluster_name: cognito_authz }") {
            assert!(
                text.contains("cognito_authz.mode: public\n                        cognito_authz.rule: health"),
                "{name}: /healthz is not checked as public"
            );
        }
        // CORS is answered at the edge, before the check.
        let cors = text.find("- name: envoy.filters.http.cors");
        let authz = text.find("- name: envoy.filters.http.ext_authz");
        assert!(
            cors.is_some() && cors < authz,
            "{name}: no CORS filter before ext_authz"
        );
        for setting in [
            "expose_headers: \"www-authenticate\"",
            "forward_not_matching_preflights: false",
        ] {
            assert!(text.contains(setting), "{name} lacks {setting}");
        }
    }
}

#[test]
fn docker_compose_config_is_valid_and_complete() {
    let compose = root().join("docker-compose.yml");
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(&compose)
        .args(["--profile", "replicas", "config", "-q"])
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
