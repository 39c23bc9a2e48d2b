"""Resolving intrinsic functions (``Ref``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::Sub``, ``Fn::Select``)
against the physical names of the local resources."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from onnxfn.local.assembly.specs import LOCAL_ACCOUNT, LOCAL_REGION

_PSEUDO = {
    "AWS::AccountId": LOCAL_ACCOUNT,
    "AWS::Region": LOCAL_REGION,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "",
    "AWS::NoValue": "",
}


@dataclass
class Resolver:
    """Resolves intrinsic functions against the physical ids of the local resources.

    ``refs`` maps a logical id to what ``Ref`` returns; ``attributes`` maps (logical id, attribute)
    to what ``Fn::GetAtt`` returns. Anything else is left as a string naming it, so a missing
    resource shows up in the environment instead of failing silently.
    """

    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    stack_name: str = ""

    def ref(self, name: str) -> str:
        if name in _PSEUDO:
            return self.stack_name if name == "AWS::StackName" else _PSEUDO[name]
        return self.refs.get(name, f"<unresolved {name}>")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if "Ref" in value:
            return self.ref(str(value["Ref"]))
        if "Fn::GetAtt" in value:
            logical_id, attribute = value["Fn::GetAtt"][:2]
            return self.attributes.get((logical_id, attribute), f"<unresolved {logical_id}.{attribute}>")
        if "Fn::Join" in value:
            separator, items = value["Fn::Join"]
            return str(separator).join(str(self.resolve(item)) for item in items)
        if "Fn::Sub" in value:
            spec = value["Fn::Sub"]
            text, variables = (spec, {}) if isinstance(spec, str) else (spec[0], spec[1])
            return self._sub(str(text), {k: self.resolve(v) for k, v in variables.items()})
        if "Fn::Select" in value:
            index, items = value["Fn::Select"]
            return self.resolve(items)[int(index)]
        return {key: self.resolve(item) for key, item in value.items()}

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return self.attributes.get((logical_id, attribute), f"<unresolved {name}>")
            return self.ref(name)

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def environment(self, variables: Mapping[str, Any]) -> dict[str, str]:
        return {key: str(self.resolve(value)) for key, value in variables.items()}
