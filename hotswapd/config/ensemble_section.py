"""An ensemble version's own config keys, and the checks that need the whole config.

    [models.combo.versions.v1]
    backend = "ensemble"
    combine = "concat"                  # or "mean" (members of one dimension)
    members = [{ model = "minilm", version = "v1" }, { model = "e5", version = "v2", weight = 0.5 }]

Members name a version, never "whatever is active": an ensemble's vectors must not change
under it when one of its members is switched. A change of members is a new ensemble
version, switched to (and rolled back) like any other.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ENSEMBLE = "ensemble"
MAX_MEMBERS = 8
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Member(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = Field(pattern=_NAME)
    version: str = Field(pattern=_NAME)
    # concat: this member's block is scaled by the weight (its share of a cosine); mean: its
    # share of the average. Members' vectors are normalised first, so weights mean the same
    # whatever the members' own scales.
    weight: float = Field(default=1.0, ge=0.001, le=1000, strict=True)  # a weight of 1e-300 is 0 in float32

    @property
    def spec(self) -> str:
        return f"{self.model}@{self.version}"


class Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    members: list[Member] = Field(min_length=1, max_length=MAX_MEMBERS)
    combine: Literal["concat", "mean"] = "concat"


# Version keys an ensemble takes from its members instead: set on it, they would do nothing.
MEMBERS_DECIDE = ("prompts", "default_prompt", "preprocess", "device", "fallback", "trust_remote_code", "max_seq_length", "long_text")


def member_problems(models: dict[str, Any]) -> list[str]:
    """What is wrong with the config's ensembles: members that are not configured, ensembles
    of ensembles (a cycle could never load), a member named twice."""
    problems = []
    for name, model in models.items():
        for version, spec in model.versions.items():
            if spec.backend != ENSEMBLE:
                continue
            where = f"models.{name}.versions.{version}.members"
            for key in sorted(set(MEMBERS_DECIDE) & spec.model_fields_set):
                problems.append(f"models.{name}.versions.{version}.{key}: an ensemble's members each use their own")
            seen: set[str] = set()
            for member in spec.options.members:
                target = models.get(member.model)
                if member.spec in seen:
                    problems.append(f"{where}: {member.spec} is named twice (give it one weight)")
                seen.add(member.spec)
                if target is None or member.version not in target.versions:
                    problems.append(f"{where}: {member.spec} is not a configured version")
                elif target.versions[member.version].backend == ENSEMBLE:
                    problems.append(f"{where}: {member.spec} is an ensemble itself; members must be models")
    return problems
