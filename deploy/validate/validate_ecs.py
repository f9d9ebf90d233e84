"""Validates an ECS task definition against the ECS API model botocore ships, with botocore's
own parameter validator for RegisterTaskDefinition: python validate_ecs.py FILE...
Also checks what the model cannot: awsvpc networking, and that every dependsOn names a
container of the task whose health check exists when the condition is HEALTHY."""
import json
import sys

import botocore.session
from botocore.validate import ParamValidator


def check(path):
    task = json.load(open(path, encoding="utf-8"))
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    report = ParamValidator().validate(task, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    if task.get("networkMode") != "awsvpc":
        problems.append("networkMode must be awsvpc (containers talk on localhost)")
    containers = {c["name"]: c for c in task.get("containerDefinitions", [])}
    for c in containers.values():
        for dep in c.get("dependsOn", []):
            target = containers.get(dep["containerName"])
            if target is None:
                problems.append(f"{c['name']} depends on unknown container {dep['containerName']}")
            elif dep["condition"] == "HEALTHY" and "healthCheck" not in target:
                problems.append(f"{c['name']} waits for {target['name']} to be HEALTHY, which has no healthCheck")
    for problem in problems:
        print(f"FAIL {path}: {problem}")
    if not problems:
        print(f"ok   {path} ({len(containers)} containers)")
    return not problems


if __name__ == "__main__":
    results = [check(p) for p in sys.argv[1:]]
    sys.exit(0 if results and all(results) else 1)
