// Validates the custom resources in the given YAML files (Istio, Gateway API, Envoy Gateway)
// against the JSON schemas the @kubernetes-models packages ship: node validate.mjs FILE...
// Core Kubernetes kinds are left to kubernetes-validate; any other kind without a model fails.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const groups = {
  "install.istio.io/v1alpha1": "@kubernetes-models/istio/install.istio.io/v1alpha1",
  "networking.istio.io/v1": "@kubernetes-models/istio/networking.istio.io/v1",
  "security.istio.io/v1": "@kubernetes-models/istio/security.istio.io/v1",
  "gateway.networking.k8s.io/v1": "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1",
  "gateway.envoyproxy.io/v1alpha1": "@kubernetes-models/envoy-gateway/gateway.envoyproxy.io/v1alpha1",
};
const core = new Set(["v1", "apps/v1", "policy/v1", "networking.k8s.io/v1"]);

let failures = 0;
let validated = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (doc.errors.length) {
      console.error(`FAIL ${file}: ${doc.errors[0].message}`);
      failures++;
      continue;
    }
    const object = doc.toJS();
    if (!object) continue;
    const { apiVersion, kind } = object;
    const name = `${file} ${kind}/${object.metadata?.name}`;
    if (core.has(apiVersion)) continue;
    const module = groups[apiVersion] ? await import(groups[apiVersion]) : {};
    const Model = module[kind];
    if (!Model) {
      console.error(`FAIL ${name}: no model for ${apiVersion} ${kind}`);
      failures++;
      continue;
    }
    try {
      new Model(object).validate();
      validated++;
      console.log(`ok   ${name} (${apiVersion})`);
    } catch (err) {
      console.error(`FAIL ${name}: ${err.message}`);
      failures++;
    }
  }
}
console.log(`${validated} validated, ${failures} failed`);
process.exit(failures || !validated ? 1 : 0);
