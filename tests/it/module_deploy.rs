//! The dynamic module's deploy files, checked offline: the Envoy Gateway objects against Rust
//! mirrors of Envoy Gateway's own API types (v1.9.0's `api/v1alpha1`: the published
//! @kubernetes-models/envoy-gateway 2.0.0 predates `dynamicModules`), and the Envoy config its
//! translator makes of them (`internal/xds/translator/dynamicmodule.go`) run in Envoy 1.40 with
//! our module; the Kubernetes pod through `kubernetes-validate --strict` and its Envoy config
//! through Envoy's validation with the module; the Dockerfile's module stage statically.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use cognito_authz::testkit::{access_claims, jwks, now, Behaviour, JwksServer, TestKey};
use serde::Deserialize;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const EG_FILE: &str = "deploy/envoy-gateway/module.yaml";
const K8S_FILE: &str = "deploy/kubernetes/module.yaml";
/// Where the Dockerfile's `envoy-module` image holds the module.
const MODULE_DIR: &str = "/usr/local/lib/envoy/modules";
const MODULE_FILE: &str = "libcognito_authz_envoy.so";

fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("COGNITO_AUTHZ_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    let tool = venv.join("bin").join(name);
    assert!(
        tool.is_file(),
        "{} is missing: run scripts/setup-venv",
        tool.display()
    );
    tool
}

/// The folder cargo built the module into.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_cognito-authz"))
        .parent()
        .unwrap()
        .to_path_buf()
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

/// The YAML documents of a deploy file, as text each.
fn document_texts(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    text.split("\n---\n").map(str::to_string).collect()
}

fn value(text: &str) -> serde_norway::Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

// Envoy Gateway's API types (api/v1alpha1, v1.9.0; unchanged on main), as far as these files
// use them: every field optional there is optional here, every required one required, and any
// other key is an error, as the API server's structural schema would prune or refuse it.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Object<Spec> {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
    namespace: Option<String>,
}

/// `EnvoyProxySpec` (envoyproxy_types.go).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnvoyProxySpec {
    provider: Option<EnvoyProxyProvider>,
    #[serde(default)]
    dynamic_modules: Vec<DynamicModuleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvoyProxyProvider {
    #[serde(rename = "type")]
    kind: ProviderType,
    kubernetes: Option<EnvoyProxyKubernetesProvider>,
}

#[derive(Debug, Deserialize, PartialEq)]
enum ProviderType {
    Kubernetes,
    Host,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnvoyProxyKubernetesProvider {
    envoy_deployment: Option<KubernetesDeploymentSpec>,
}

/// `KubernetesDeploymentSpec` (shared_types.go).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KubernetesDeploymentSpec {
    container: Option<KubernetesContainerSpec>,
}

/// `KubernetesContainerSpec` (shared_types.go): `env` is core/v1's `EnvVar`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KubernetesContainerSpec {
    #[serde(default)]
    env: Vec<EnvVar>,
    image: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnvVar {
    name: String,
    value: Option<String>,
    value_from: Option<serde_norway::Value>,
}

/// `DynamicModuleEntry` (dynamic_module_types.go).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DynamicModuleEntry {
    name: String,
    source: DynamicModuleSource,
    do_not_close: Option<bool>,
    load_globally: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DynamicModuleSource {
    #[serde(rename = "type")]
    kind: Option<SourceType>,
    local: Option<LocalDynamicModuleSource>,
    remote: Option<RemoteDynamicModuleSource>,
}

#[derive(Debug, Deserialize, PartialEq)]
enum SourceType {
    Local,
    Remote,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalDynamicModuleSource {
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteDynamicModuleSource {
    url: String,
    sha256: String,
}

/// `EnvoyExtensionPolicySpec` (envoyextensionypolicy_types.go) with `PolicyTargetReferences`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnvoyExtensionPolicySpec {
    target_ref: Option<TargetRef>,
    #[serde(default)]
    target_refs: Vec<TargetRef>,
    target_selectors: Option<serde_norway::Value>,
    merge_type: Option<String>,
    wasm: Option<serde_norway::Value>,
    ext_proc: Option<serde_norway::Value>,
    lua: Option<serde_norway::Value>,
    #[serde(default)]
    dynamic_module: Vec<DynamicModule>,
}

/// Gateway API's `LocalPolicyTargetReferenceWithSectionName`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TargetRef {
    group: String,
    kind: String,
    name: String,
    section_name: Option<String>,
}

/// `DynamicModule` (dynamic_module_types.go): `config` is any JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DynamicModule {
    name: String,
    filter_name: Option<String>,
    config: Option<serde_json::Value>,
    terminal_filter: Option<bool>,
}

/// The kubebuilder markers of a module name: `^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`, 1 to 253.
fn module_name_ok(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-';
    let end = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=253).contains(&bytes.len())
        && bytes.first().is_some_and(end)
        && bytes.last().is_some_and(end)
        && bytes.iter().all(inner)
}

/// What the API server's schema and CEL rules would say of an EnvoyProxy's modules.
fn check_entries(entries: &[DynamicModuleEntry]) -> Result<(), String> {
    if entries.len() > 16 {
        return Err("more than 16 dynamicModules".into());
    }
    for entry in entries {
        if !module_name_ok(&entry.name) {
            return Err(format!("module name {:?}", entry.name));
        }
        let source = &entry.source;
        match source.kind.as_ref().unwrap_or(&SourceType::Local) {
            SourceType::Local => {
                let local = source.local.as_ref().ok_or("type Local without local")?;
                if source.remote.is_some() {
                    return Err("type Local with remote".into());
                }
                if local.path.is_empty() || local.path.len() > 4096 || !local.path.starts_with('/')
                {
                    return Err(format!("local path {:?} is not absolute", local.path));
                }
            }
            SourceType::Remote => {
                let remote = source.remote.as_ref().ok_or("type Remote without remote")?;
                if source.local.is_some() {
                    return Err("type Remote with local".into());
                }
                let hex = remote.sha256.len() == 64
                    && remote
                        .sha256
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !hex || !remote.url.starts_with("http") {
                    return Err("remote needs an http(s) url and a sha256".into());
                }
            }
        }
    }
    Ok(())
}

/// What the API server would say of an EnvoyExtensionPolicy's modules, given the allowlist.
fn check_policy(spec: &EnvoyExtensionPolicySpec, allowed: &[&str]) -> Result<(), String> {
    let selectors = spec
        .target_selectors
        .as_ref()
        .and_then(|s| s.as_sequence())
        .is_some_and(|s| !s.is_empty());
    if spec.target_ref.is_some() != spec.target_refs.is_empty() && !selectors {
        return Err("either targetRef or targetRefs must be used".into());
    }
    if spec.merge_type.as_deref() == Some("Replace") {
        return Err("Replace is not a valid MergeType for EnvoyExtensionPolicy".into());
    }
    for target in spec.target_ref.iter().chain(&spec.target_refs) {
        if target.group != "gateway.networking.k8s.io" {
            return Err(format!("target group {}", target.group));
        }
        if target.section_name.as_deref().is_some_and(str::is_empty) {
            return Err("an empty sectionName".into());
        }
    }
    // Each list holds at most 16 extensions.
    for list in [&spec.wasm, &spec.ext_proc, &spec.lua] {
        if list
            .as_ref()
            .and_then(|l| l.as_sequence())
            .is_some_and(|l| l.len() > 16)
        {
            return Err("more than 16 extensions of a kind".into());
        }
    }
    if spec.dynamic_module.is_empty() || spec.dynamic_module.len() > 16 {
        return Err("1 to 16 dynamic modules".into());
    }
    for module in &spec.dynamic_module {
        if !module_name_ok(&module.name) || !allowed.contains(&module.name.as_str()) {
            return Err(format!(
                "{} is not in the EnvoyProxy's dynamicModules",
                module.name
            ));
        }
    }
    Ok(())
}

/// The objects of deploy/envoy-gateway/module.yaml, parsed by kind.
struct GatewayFiles {
    proxy: Object<EnvoyProxySpec>,
    policy: Object<EnvoyExtensionPolicySpec>,
    /// The other documents, for the published models.
    others: Vec<String>,
}

fn gateway_files() -> GatewayFiles {
    let (mut proxy, mut policy, mut others) = (None, None, Vec::new());
    for text in document_texts(EG_FILE) {
        match value(&text)["kind"].as_str() {
            Some("EnvoyProxy") => {
                proxy = Some(serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}")))
            }
            Some("EnvoyExtensionPolicy") => {
                policy = Some(serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}")))
            }
            _ => others.push(text),
        }
    }
    GatewayFiles {
        proxy: proxy.expect("an EnvoyProxy"),
        policy: policy.expect("an EnvoyExtensionPolicy"),
        others,
    }
}

#[test]
fn the_envoy_gateway_module_objects_match_envoy_gateways_api_types() {
    let files = gateway_files();
    let (proxy, policy) = (&files.proxy, &files.policy);
    assert_eq!(
        (proxy.api_version.as_str(), proxy.kind.as_str()),
        ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy")
    );
    assert_eq!(policy.api_version, "gateway.envoyproxy.io/v1alpha1");
    check_entries(&proxy.spec.dynamic_modules).unwrap();
    let allowed: Vec<&str> = proxy
        .spec
        .dynamic_modules
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    check_policy(&policy.spec, &allowed).unwrap();

    // The module's path is where the image the proxy runs holds it.
    let [entry] = proxy.spec.dynamic_modules.as_slice() else {
        panic!("one module");
    };
    let path = &entry.source.local.as_ref().unwrap().path;
    assert_eq!(path, &format!("{MODULE_DIR}/{MODULE_FILE}"));
    assert_eq!(entry.do_not_close, Some(true));
    let provider = proxy.spec.provider.as_ref().unwrap();
    assert_eq!(provider.kind, ProviderType::Kubernetes);
    let container = provider
        .kubernetes
        .as_ref()
        .and_then(|k| k.envoy_deployment.as_ref())
        .and_then(|d| d.container.as_ref())
        .expect("the proxy's container");
    assert!(container
        .image
        .as_deref()
        .is_some_and(|i| i.contains("/cognito-authz-envoy:")));
    let env: Vec<&str> = container.env.iter().map(|e| e.name.as_str()).collect();
    for name in [
        "AWS_COGNITO_USER_POOL_ID",
        "AWS_COGNITO_USER_POOL_CLIENT_ID",
        "AWS_DEFAULT_REGION",
    ] {
        assert!(env.contains(&name), "the proxy's environment lacks {name}");
    }
    assert!(container
        .env
        .iter()
        .all(|e| e.value.is_some() != e.value_from.is_some()));

    // The policy applies the module to the app's route, and the Gateway runs this proxy.
    let [target] = policy.spec.target_refs.as_slice() else {
        panic!("one target");
    };
    assert_eq!(
        (target.kind.as_str(), target.name.as_str()),
        ("HTTPRoute", "cruddur")
    );
    let route = files
        .others
        .iter()
        .map(|t| value(t))
        .find(|d| d["kind"] == "HTTPRoute" && d["metadata"]["name"] == "cruddur")
        .expect("the HTTPRoute the policy targets");
    let gateway = files
        .others
        .iter()
        .map(|t| value(t))
        .find(|d| d["kind"] == "Gateway")
        .expect("a Gateway");
    assert_eq!(
        route["spec"]["parentRefs"][0]["name"],
        gateway["metadata"]["name"]
    );
    let parameters = &gateway["spec"]["infrastructure"]["parametersRef"];
    assert_eq!(parameters["kind"], "EnvoyProxy");
    assert_eq!(
        parameters["name"].as_str(),
        Some(proxy.metadata.name.as_str())
    );
    // A local parametersRef: the EnvoyProxy lives in the Gateway's namespace.
    assert_eq!(
        gateway["metadata"]["namespace"].as_str(),
        proxy.metadata.namespace.as_deref()
    );

    // The rules are the shipped ones: the same as the sidecar's ConfigMap for the gateway.
    let [module] = policy.spec.dynamic_module.as_slice() else {
        panic!("one module in the policy");
    };
    assert_eq!(module.filter_name.as_deref(), Some("cognito-authz"));
    assert_eq!(module.terminal_filter, None);
    let config = module.config.as_ref().expect("a config with the rules");
    assert_eq!(config["routes"], sidecar_rules());

    // The checks can fail: a misspelt key, a module the proxy does not list, a Local source
    // without its path.
    let typo = document_texts(EG_FILE)
        .into_iter()
        .find(|t| t.contains("kind: EnvoyProxy"))
        .unwrap()
        .replace("doNotClose:", "doNotClosed:");
    assert!(serde_norway::from_str::<Object<EnvoyProxySpec>>(&typo).is_err());
    assert!(check_policy(&policy.spec, &["another-module"]).is_err());
    let pathless: DynamicModuleEntry =
        serde_norway::from_str("name: m\nsource: { type: Local }\n").unwrap();
    assert!(check_entries(&[pathless]).is_err());
}

/// The rules cognito-authz is given as the gateway's shared service (deploy/envoy-gateway/
/// cruddur.yaml's ConfigMap), as JSON.
fn sidecar_rules() -> serde_json::Value {
    let sidecar = document_texts("deploy/envoy-gateway/cruddur.yaml")
        .into_iter()
        .map(|t| value(&t))
        .find(|d| d["kind"] == "ConfigMap")
        .expect("the sidecar's ConfigMap");
    let toml_text = sidecar["data"]["cognito-authz.toml"].as_str().unwrap();
    let rules: toml::Table = toml::from_str(toml_text).unwrap();
    serde_json::to_value(&rules["routes"]).unwrap()
}

#[test]
fn the_other_envoy_gateway_module_objects_validate_against_their_models() {
    let files = gateway_files();
    let dir = common::stack_layout("eg-module-models").work_dir;
    std::fs::create_dir_all(&dir).unwrap();
    let others = dir.join("others.yaml");
    std::fs::write(&others, files.others.join("\n---\n")).unwrap();
    let out = run_ok(
        Command::new("node")
            .arg(root().join("deploy/validate/validate.mjs"))
            .arg(&others)
            .current_dir(root()),
        "node deploy/validate/validate.mjs",
    );
    for object in [
        "Gateway/cruddur",
        "HTTPRoute/cruddur",
        "SecurityPolicy/cruddur-cors",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("ok ") && l.contains(object)),
            "{object}:\n{out}"
        );
    }
    let out = run_ok(
        Command::new(venv_tool("kubernetes-validate"))
            .arg("--strict")
            .arg(root().join(EG_FILE))
            .arg(root().join(K8S_FILE)),
        "kubernetes-validate",
    );
    for kind in [
        "networkpolicy/cruddur-app-from-the-gateway-only",
        "configmap/cruddur-envoy-module",
        "deployment/cruddur-module",
        "service/cruddur-module",
    ] {
        assert!(
            out.contains(&format!("passed for resource {kind}")),
            "{kind} not validated:\n{out}"
        );
    }
}

/// The Envoy config Envoy Gateway's translator makes of the policy (`dynamicmodule.go` and its
/// testdata `out/xds-ir/dynamicmodule.*.yaml`): one HCM filter per policy module, named
/// `envoy.filters.http.dynamic_modules/envoyextensionpolicy/NS/NAME/dynamic-module/I`,
/// disabled, with the module by its local path and the policy's `config` as JSON in a
/// `StringValue`; each targeted route enables it by name with an empty `FilterConfig`, and
/// carries no per-route config of ours. `module_path` stands for the image's path.
fn translated_config(files: &GatewayFiles, module_path: &Path, ports: [u16; 3]) -> String {
    let [listen, admin, upstream] = ports;
    let policy = &files.policy;
    let namespace = policy.metadata.namespace.as_deref().unwrap();
    let mut filters = String::new();
    let mut enables = String::new();
    for (index, module) in policy.spec.dynamic_module.iter().enumerate() {
        let entry = files
            .proxy
            .spec
            .dynamic_modules
            .iter()
            .find(|e| e.name == module.name)
            .unwrap();
        let name = format!(
            "envoy.filters.http.dynamic_modules/envoyextensionpolicy/{namespace}/{}/dynamic-module/{index}",
            policy.metadata.name
        );
        let config = serde_json::to_string(module.config.as_ref().unwrap()).unwrap();
        filters += &format!(
            r#"
          - name: {name}
            disabled: true
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config:
                do_not_close: {do_not_close}
                load_globally: {load_globally}
                module: {{ local: {{ filename: {path} }} }}
              filter_name: {filter_name}
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: {config}"#,
            do_not_close = entry.do_not_close.unwrap_or(false),
            load_globally = entry.load_globally.unwrap_or(false),
            path = serde_json::to_string(&module_path.display().to_string()).unwrap(),
            filter_name = module.filter_name.as_deref().unwrap_or(""),
            config = serde_json::to_string(&config).unwrap(),
        );
        enables += &format!(
            r#"
                  {name}:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    config: {{}}"#
        );
    }
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: envoy-gateway/cruddur/http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    per_connection_buffer_limit_bytes: 32768
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http-10080
          use_remote_address: true
          normalize_path: true
          merge_slashes: true
          common_http_protocol_options: {{ headers_with_underscores_action: REJECT_REQUEST }}
          route_config:
            name: envoy-gateway/cruddur/http
            virtual_hosts:
            - name: envoy-gateway/cruddur/http/all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                name: httproute/cruddur/cruddur/rule/0/match/0/all
                route: {{ cluster: httproute/cruddur/cruddur/rule/0 }}
                typed_per_filter_config:{enables}
          http_filters:{filters}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: httproute/cruddur/cruddur/rule/0
    connect_timeout: 0.25s
    load_assignment:
      cluster_name: httproute/cruddur/cruddur/rule/0
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
"#
    )
}

/// An upstream that answers with the `x-cognito-sub` it was sent (or `-`).
async fn echo_sub_upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        headers
            .get("x-cognito-sub")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_envoy_gateway_makes_of_the_policy_runs_the_module_in_envoy() {
    let files = gateway_files();
    let idp = JwksServer::start(Behaviour::Json(jwks(&[TestKey::shared(0)]))).await;
    let upstream = echo_sub_upstream().await;
    let ports: [u16; 2] = {
        let listeners: Vec<_> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
    };
    let [listen, admin] = ports;
    let layout = common::stack_layout("eg-module-envoy");
    std::fs::create_dir_all(&layout.work_dir).unwrap();
    let config = layout.work_dir.join("translated.yaml");
    let module = bin_dir().join(MODULE_FILE);
    std::fs::write(
        &config,
        translated_config(&files, &module, [listen, admin, upstream]),
    )
    .unwrap();
    let log = layout.work_dir.join("envoy.log");
    let file = std::fs::File::create(&log).unwrap();
    // The pool from the proxy's environment, as the EnvoyProxy sets it; keys from the test IdP.
    let container = files.proxy.spec.provider.as_ref().unwrap();
    let env = &container
        .kubernetes
        .as_ref()
        .unwrap()
        .envoy_deployment
        .as_ref()
        .unwrap()
        .container
        .as_ref()
        .unwrap()
        .env;
    let var = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
            .unwrap()
    };
    let (pool, client) = (
        var("AWS_COGNITO_USER_POOL_ID"),
        var("AWS_COGNITO_USER_POOL_CLIENT_ID"),
    );
    let envoy = Killed(
        Command::new(venv_tool("envoy"))
            .arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .env("AWS_COGNITO_USER_POOL_ID", &pool)
            .env("AWS_COGNITO_USER_POOL_CLIENT_ID", &client)
            .env("AWS_DEFAULT_REGION", var("AWS_DEFAULT_REGION"))
            .env("COGNITO_JWKS_URI", idp.url("/jwks.json"))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    let ready = format!("http://127.0.0.1:{admin}/ready");
    let mut up = false;
    for _ in 0..100 {
        if reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        up,
        "Envoy did not start with the translated config:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let issuer = format!("https://cognito-idp.us-east-1.amazonaws.com/{pool}");
    let token = TestKey::shared(0).token(&access_claims(&issuer, &client, now()));
    let http = reqwest::Client::new();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut request = http.get(format!("http://127.0.0.1:{listen}{path}"));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let bearer = format!("Bearer {token}");
    // The policy's rules decide each path: no per-route config reaches the module.
    assert_eq!(get("/healthz", &[]).await, (200, "-".to_string()));
    assert_eq!(get("/api/messages", &[]).await.0, 401);
    assert_eq!(get("/elsewhere", &[]).await.0, 401);
    assert_eq!(
        get("/api/activities/home", &[("x-cognito-sub", "forged")]).await,
        (200, "-".to_string()),
        "an anonymous request's identity header reached the app"
    );
    assert_eq!(
        get("/api/activities/home", &[("authorization", &bearer)]).await,
        (200, "8f1e2d3c-0000-4000-8000-00000000abcd".to_string())
    );
    drop(envoy);
}

#[test]
fn the_kubernetes_module_pod_runs_the_module_image_and_its_envoy_config_loads_the_module() {
    let docs: Vec<serde_norway::Value> =
        document_texts(K8S_FILE).iter().map(|t| value(t)).collect();
    let configmap = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("the Envoy ConfigMap");
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let envoy = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "envoy")
        .expect("an envoy container");
    assert!(envoy["image"]
        .as_str()
        .is_some_and(|i| i.contains("/cognito-authz-envoy:")));
    // It mounts this ConfigMap where its args read the config.
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == configmap["metadata"]["name"])
        .expect("a volume of the ConfigMap");
    let mount = envoy["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap mounted");
    let args: Vec<&str> = envoy["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args[..2],
        [
            "-c",
            &format!("{}/envoy.yaml", mount["mountPath"].as_str().unwrap())
        ]
    );
    // No sidecar: the check is the module in Envoy.
    assert!(pod.get("initContainers").is_none());
    assert!(!pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "cognito-authz"));

    // The config loads the module, with the pool from the container's environment, and its
    // rules are the shipped ones.
    let text = configmap["data"]["envoy.yaml"].as_str().unwrap();
    let config: serde_norway::Value = value(text);
    let filter = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0]["typed_config"];
    assert_eq!(
        filter["dynamic_module_config"]["name"],
        "cognito_authz_envoy"
    );
    let rules: toml::Table =
        toml::from_str(filter["filter_config"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        serde_json::to_value(&rules["routes"]).unwrap(),
        sidecar_rules()
    );
    let dir = common::stack_layout("k8s-module-validate").work_dir;
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("envoy.yaml");
    std::fs::write(&file, text).unwrap();
    let env = |name: &str| {
        envoy["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("the envoy container sets no {name}"))
            .to_string()
    };
    let out = run_ok(
        Command::new(venv_tool("envoy"))
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&file)
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", bin_dir())
            .env("AWS_COGNITO_USER_POOL_ID", env("AWS_COGNITO_USER_POOL_ID"))
            .env(
                "AWS_COGNITO_USER_POOL_CLIENT_ID",
                env("AWS_COGNITO_USER_POOL_CLIENT_ID"),
            )
            .env("AWS_DEFAULT_REGION", env("AWS_DEFAULT_REGION"))
            .env("COGNITO_JWKS_URI", "http://127.0.0.1:9/jwks.json"),
        "envoy --mode validate (the Kubernetes module ConfigMap)",
    );
    assert!(out.contains("ABI version v0.2.0 matched"), "{out}");
}

/// One stage of the Dockerfile: its `FROM` line and its instructions.
fn dockerfile_stage(text: &str, name: &str) -> (String, String) {
    let mut stages = text.split("\nFROM ").skip(1);
    let stage = stages
        .find(|s| {
            s.lines()
                .next()
                .is_some_and(|l| l.ends_with(&format!(" AS {name}")))
        })
        .unwrap_or_else(|| panic!("the Dockerfile has no stage {name}"));
    let (from, body) = stage.split_once('\n').unwrap();
    (from.to_string(), body.to_string())
}

#[test]
fn the_dockerfile_builds_the_module_on_the_envoy_images_glibc() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let (build_from, build) = dockerfile_stage(&text, "build");
    let (module_from, module) = dockerfile_stage(&text, "envoy-module");
    // Debian release by codename, for the glibc a build links against.
    let glibc = |image: &str| -> &str {
        if image.contains("bookworm") || image.contains("debian12") {
            "2.36"
        } else if image.contains("trixie") || image.contains("debian13") {
            "2.41"
        } else {
            panic!("which glibc has {image}?")
        }
    };
    // Envoy's distroless image is gcr.io/distroless/base-nossl-debian12.
    assert!(
        module_from.starts_with("envoyproxy/envoy:distroless-v1.40."),
        "{module_from}"
    );
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        version(glibc(&build_from)) <= version(glibc("debian12")),
        "the module is built on {build_from}, whose glibc is newer than Envoy's image's"
    );
    // The module beside the binaries, in the same stage, with the libgcc_s the image lacks
    // found beside it.
    assert!(build.contains("-p cognito-authz-envoy") && build.contains("--crate-type cdylib"));
    assert!(build.contains("-rpath,$ORIGIN") && build.contains("libgcc_s.so.1"));
    assert!(module.contains(&format!("COPY --from=build /out/modules/ {MODULE_DIR}/")));
    assert!(module.contains(&format!(
        "ENV ENVOY_DYNAMIC_MODULES_SEARCH_PATH={MODULE_DIR}"
    )));
    assert!(module.contains("USER nonroot"));
}
