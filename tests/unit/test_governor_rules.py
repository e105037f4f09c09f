"""The governor's pure rules: what a valid change is, and what it does to a config."""

from __future__ import annotations

import msgspec
import pytest
from msgspec import UNSET

from schemas.balancer import STRATEGIES
from schemas.errors import explain
from schemas.governor import (
    ConfigChange,
    InstanceOverride,
    OutlierConfig,
    OutlierPatch,
    OverridePatch,
    ServiceConfig,
)
from services.errors import BadRequest
from services.governor.rules import MAX_OVERRIDES, apply_change, check_change


def base() -> ServiceConfig:
    return ServiceConfig(
        service="api",
        revision=4,
        strategy="random",
        protect_threshold=0.2,
        instances={"a": InstanceOverride(weight=5, drained=True)},
        warmup_s=30,
    )


def test_fields_left_out_keep_their_values() -> None:
    after = apply_change(base(), ConfigChange(actor="x", protect_threshold=0.5), 5)
    assert after.revision == 5
    assert (after.strategy, after.protect_threshold, after.warmup_s) == ("random", 0.5, 30)
    assert after.instances == base().instances


def test_override_patches_merge_field_by_field_and_null_removes() -> None:
    change = ConfigChange(
        actor="x",
        instances={
            "a": OverridePatch(weight=None, port=8080),  # drop weight, keep drained
            "b": OverridePatch(metadata={"k": "v"}),
        },
    )
    after = apply_change(base(), change, 5)
    assert after.instances == {
        "a": InstanceOverride(drained=True, port=8080),
        "b": InstanceOverride(metadata={"k": "v"}),
    }


def test_an_override_emptied_by_nulls_disappears() -> None:
    change = ConfigChange(actor="x", instances={"a": OverridePatch(weight=None, drained=None)})
    assert apply_change(base(), change, 5).instances == {}


def test_null_for_an_instance_drops_every_override_of_it() -> None:
    assert apply_change(base(), ConfigChange(actor="x", instances={"a": None}), 5).instances == {}


def test_drained_false_is_kept_as_an_override() -> None:
    # false is a value (undrain, pinned), unlike null, which removes the override
    after = apply_change(
        base(), ConfigChange(actor="x", instances={"a": OverridePatch(drained=False)}), 5
    )
    assert after.instances["a"].drained is False


def test_delete_restores_defaults_at_the_next_revision() -> None:
    after = apply_change(base(), ConfigChange(actor="x", delete=True), 5)
    assert after == ServiceConfig(service="api", revision=5)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (ConfigChange(actor="x"), "the change sets nothing"),
        (ConfigChange(actor="x", strategy="fastest"), "unknown strategy 'fastest'"),
        (ConfigChange(actor="x", delete=True, warmup_s=3), "delete stands alone; send warmup_s"),
    ],
)
def test_invalid_changes_are_refused_with_what_to_fix(change: ConfigChange, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        check_change(change)


def test_every_strategy_name_is_accepted() -> None:
    for name in STRATEGIES:
        check_change(ConfigChange(actor="x", strategy=name))


def test_too_many_overrides_are_refused() -> None:
    patches: dict[str, OverridePatch | None] = {
        f"i{n}": OverridePatch(weight=1) for n in range(MAX_OVERRIDES + 1)
    }
    with pytest.raises(BadRequest, match=f"at most {MAX_OVERRIDES} instance overrides"):
        apply_change(base(), ConfigChange(actor="x", instances=patches), 5)


def test_patch_defaults_are_unset_not_null() -> None:
    patch = OverridePatch()
    assert all(getattr(patch, f) is UNSET for f in OverridePatch.__struct_fields__)


# -- outlier ejection settings ------------------------------------------------------------
def test_outlier_defaults_are_envoys_with_finagles_probation() -> None:
    cfg = ServiceConfig(service="api").outlier
    assert cfg == OutlierConfig(
        enabled=True,
        consecutive_failures=5,
        interval_s=10,
        base_ejection_s=30,
        max_ejection_s=300,
        max_ejected_percent=10,
        success_rate=True,
        probation=True,
    )


def test_probation_can_be_switched_off_alone() -> None:
    off = apply_change(base(), ConfigChange(actor="x", outlier=OutlierPatch(probation=False)), 5)
    assert off.outlier == OutlierConfig(probation=False)


def test_outlier_fields_left_out_keep_their_values() -> None:
    first = apply_change(
        base(), ConfigChange(actor="x", outlier=OutlierPatch(consecutive_failures=3)), 5
    )
    second = apply_change(first, ConfigChange(actor="x", outlier=OutlierPatch(enabled=False)), 6)
    assert second.outlier.consecutive_failures == 3
    assert second.outlier.enabled is False
    assert second.outlier.interval_s == 10
    assert second.strategy == "random"  # the rest of the config is untouched


def test_outlier_alone_is_a_change() -> None:
    check_change(ConfigChange(actor="x", outlier=OutlierPatch(success_rate=False)))
    with pytest.raises(BadRequest, match="outlier"):
        check_change(ConfigChange(actor="x", delete=True, outlier=OutlierPatch()))


def test_max_ejection_below_base_is_refused_naming_it() -> None:
    change = ConfigChange(actor="x", outlier=OutlierPatch(base_ejection_s=600))
    with pytest.raises(BadRequest, match=r"max_ejection_s \(300\) must be at least base"):
        apply_change(base(), change, 5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("consecutive_failures", 0),
        ("consecutive_failures", 1001),
        ("interval_s", 0.01),
        ("base_ejection_s", 0),
        ("max_ejection_s", 100_000),
        ("max_ejected_percent", 101),
        ("max_ejected_percent", -1),
        ("enabled", "yes"),
        ("probation", 1),
    ],
)
def test_outlier_values_out_of_range_are_a_400_naming_them(field: str, value: object) -> None:
    raw = msgspec.json.encode({"actor": "x", "outlier": {field: value}})
    with pytest.raises(msgspec.ValidationError) as err:
        msgspec.json.decode(raw, type=ConfigChange)
    said = explain(err.value, raw, "ConfigChange")
    assert said.startswith(f"{field} must be")
    assert "outlier" in said  # where: $.outlier.<field>
