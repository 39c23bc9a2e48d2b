"""An app's template with its nested stacks read in: one template, as CloudFormation would resolve it.

Each ``AWS::CloudFormation::Stack`` resource is replaced by the resources of the template it names
(``Metadata["aws:asset:path"]``, staged in the cloud assembly). What crosses the boundary is
resolved the way CloudFormation resolves it: a nested template's ``Ref`` to one of its parameters
becomes the value the parent passes for it, and the parent's ``Fn::GetAtt [Stack, Outputs.X]``
becomes the value of the nested output ``X``. A ``DependsOn`` on the nested stack becomes one on
each of its resources, and the nested stack's own ``DependsOn`` is carried by each of them.

Logical ids are kept as they are: onnxfn's stacks start every id in a model's template with the
model's name, so ids are unique across the app; a clash is an error, never a silent overwrite.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from onnxfn.local.assembly.specs import AssemblyError

NESTED_STACK = "AWS::CloudFormation::Stack"


def nested_templates(template: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Logical id of each nested stack -> its template file in the assembly: named by the resource's
    asset metadata (written when the CDK CLI synthesizes) or by the asset its ``TemplateURL`` names."""
    staged = {}
    for assets_file in directory.glob("*.assets.json"):
        for key, value in json.loads(assets_file.read_text()).get("files", {}).items():
            staged[key] = value["source"]["path"]
    found = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != NESTED_STACK:
            continue
        path = resource.get("Metadata", {}).get("aws:asset:path")
        if not path:
            url = json.dumps(resource.get("Properties", {}).get("TemplateURL", ""))
            path = next((p for key, p in staged.items() if f"/{key}.json" in url), None)
        if not path or not (directory / path).is_file():
            raise AssemblyError(f"nested stack {logical_id}: its template is not in {directory}; run `make synth`")
        found[logical_id] = directory / path
    return found


def flatten(template: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``template`` with every nested stack (at any depth) read in; ``template`` itself is not changed."""
    nested = nested_templates(template, directory)
    if not nested:
        return template
    resources: dict[str, Any] = {k: v for k, v in template["Resources"].items() if k not in nested}
    conditions = dict(template.get("Conditions", {}))
    outputs: dict[tuple[str, str], Any] = {}
    members: dict[str, list[str]] = {}
    for stack_id, path in nested.items():
        outer = template["Resources"][stack_id]
        inner = flatten(json.loads(path.read_text()), directory)
        unread = sorted({"Mappings", "Rules", "Transform"} & set(inner))
        if unread or "Condition" in outer:
            raise AssemblyError(f"nested stack {stack_id}: {unread or 'a Condition'} cannot be read into its parent")
        defaults = {k: v["Default"] for k, v in inner.get("Parameters", {}).items() if "Default" in v}
        passed = {**defaults, **outer.get("Properties", {}).get("Parameters", {})}
        missing = set(inner.get("Parameters", {})) - set(passed)
        if missing:
            raise AssemblyError(f"nested stack {stack_id}: the parent passes no value for {sorted(missing)}")
        depends = _depends(outer)
        # the CDK's version report (CDKMetadata) is once a template: the parent's stays
        kept = {k: v for k, v in inner.get("Resources", {}).items() if v.get("Type") != "AWS::CDK::Metadata"}
        for logical_id, resource in kept.items():
            if logical_id in resources or logical_id in template["Resources"]:
                raise AssemblyError(f"logical id {logical_id} is in two templates of the app")
            moved = _substitute(resource, passed)
            if depends:
                moved["DependsOn"] = sorted(set(_depends(moved)) | set(depends))
            resources[logical_id] = moved
        for name, condition in inner.get("Conditions", {}).items():
            moved = _substitute(condition, passed)
            if conditions.setdefault(name, moved) != moved:
                raise AssemblyError(f"condition {name} means two things in two templates of the app")
        for name, output in inner.get("Outputs", {}).items():
            outputs[(stack_id, f"Outputs.{name}")] = _substitute(output["Value"], passed)
        members[stack_id] = sorted(kept)
    for key in list(outputs):  # an output may pass on another nested stack's output
        for _ in range(len(outputs)):
            again = _outputs_resolved(outputs[key], outputs)
            if again == outputs[key]:
                break
            outputs[key] = again
    for logical_id, resource in resources.items():
        resolved = _outputs_resolved(resource, outputs)
        outside = [d for d in _depends(resolved) if d not in members]
        added = [member for d in _depends(resolved) if d in members for member in members[d]]
        if added or len(outside) != len(_depends(resolved)):
            resolved["DependsOn"] = sorted(set(outside) | set(added))
        resources[logical_id] = resolved
    flat = {key: value for key, value in template.items() if key not in ("Resources", "Conditions", "Outputs")}
    flat["Resources"] = resources
    if conditions:
        flat["Conditions"] = conditions
    if "Outputs" in template:
        flat["Outputs"] = _outputs_resolved(template["Outputs"], outputs)
    return flat


def _depends(resource: dict[str, Any]) -> list[str]:
    value = resource.get("DependsOn", [])
    return [value] if isinstance(value, str) else list(value)


def _substitute(value: Any, parameters: dict[str, Any]) -> Any:
    """``value`` with ``Ref``s (and ``${...}`` in ``Fn::Sub``) to ``parameters`` replaced by their values."""
    if isinstance(value, list):
        return [_substitute(item, parameters) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"} and value["Ref"] in parameters:
        return parameters[value["Ref"]]
    if set(value) == {"Fn::Sub"}:
        spec = value["Fn::Sub"]
        text, variables = (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))
        used = {name for name in re.findall(r"\$\{([^}!.]+)\}", text) if name in parameters and name not in variables}
        variables = {k: _substitute(v, parameters) for k, v in variables.items()}
        variables.update({name: parameters[name] for name in used})
        return {"Fn::Sub": [text, variables] if variables else text}
    return {key: _substitute(item, parameters) for key, item in value.items()}


def _outputs_resolved(value: Any, outputs: dict[tuple[str, str], Any]) -> Any:
    """``value`` with ``Fn::GetAtt [NestedStack, Outputs.X]`` replaced by that output's value."""
    if isinstance(value, list):
        return [_outputs_resolved(item, outputs) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Fn::GetAtt"}:
        target = value["Fn::GetAtt"]
        key = (target[0], target[1]) if isinstance(target, list) else tuple(str(target).split(".", 1))
        if key in outputs:
            return outputs[key]  # type: ignore[index]
    return {k: _outputs_resolved(item, outputs) for k, item in value.items()}
