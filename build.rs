//! Compiles our diagnostics proto (code and a reflection descriptor) and a reflection descriptor
//! for Envoy's ext_authz service from the `.proto` files the envoy-types package ships. protox
//! compiles in pure Rust, so no system `protoc` is needed.

use std::env;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use prost::Message as _;

const DIAGNOSTICS: &str = "cognito_authz/diagnostics/v1/diagnostics.proto";
const ENVOY_AUTHZ: &str = "envoy/service/auth/v3/external_auth.proto";
const ENVOY_INCLUDES: [&str; 5] = [
    "data-plane-api",
    "googleapis",
    "protoc-gen-validate",
    "xds",
    "cel-spec",
];

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=ENVOY_TYPES_PROTO_DIR");

    let ours = protox::compile([DIAGNOSTICS], ["proto"])?;
    fs::write(out.join("diagnostics_descriptor.bin"), ours.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(ours)?;

    let root = envoy_types_protos()?;
    let includes: Vec<PathBuf> = ENVOY_INCLUDES.iter().map(|d| root.join(d)).collect();
    let envoy = protox::Compiler::new(includes)?
        .include_imports(true)
        .include_source_info(false)
        .open_file(ENVOY_AUTHZ)?
        .file_descriptor_set();
    fs::write(
        out.join("envoy_authz_descriptor.bin"),
        envoy.encode_to_vec(),
    )?;
    Ok(())
}

/// The `proto/` folder of the envoy-types package Cargo resolved for us: named by
/// `ENVOY_TYPES_PROTO_DIR`, or found next to this crate in a vendor folder or Cargo's registry
/// source cache at the version in `Cargo.lock`.
fn envoy_types_protos() -> Result<PathBuf, Box<dyn Error>> {
    if let Ok(dir) = env::var("ENVOY_TYPES_PROTO_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let version = locked_version(&manifest.join("Cargo.lock"), "envoy-types")
        .ok_or("envoy-types is not in Cargo.lock")?;
    let dirname = format!("envoy-types-{version}");
    let mut candidates = vec![manifest.join("vendor").join("envoy-types")];
    let cargo_home = env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| env::var("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    if let Ok(registries) = fs::read_dir(cargo_home.join("registry").join("src")) {
        for registry in registries.flatten() {
            candidates.push(registry.path().join(&dirname));
        }
    }
    candidates
        .into_iter()
        .map(|c| c.join("proto"))
        .find(|p| p.join("data-plane-api").join(ENVOY_AUTHZ).is_file())
        .ok_or_else(|| {
            format!("cannot find {dirname}/proto in Cargo's registry or vendor/; set ENVOY_TYPES_PROTO_DIR").into()
        })
}

fn locked_version(lock: &Path, package: &str) -> Option<String> {
    let text = fs::read_to_string(lock).ok()?;
    let needle = format!("name = \"{package}\"");
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == needle {
            let version = lines.next()?.trim();
            return version
                .strip_prefix("version = \"")?
                .strip_suffix('"')
                .map(str::to_string);
        }
    }
    None
}
