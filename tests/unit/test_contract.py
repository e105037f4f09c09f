"""The machine-readable contract: it matches the code, and the AsyncAPI CLI accepts it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from asyncapi_cli import ROOT, ensure_cli, missing_node, validate

from schemas import catalog, contract_gen, subjects
from schemas.examples import EXAMPLES
from schemas.prose import Prose, read_prose
from schemas.yaml_out import to_yaml
from services import errors

if TYPE_CHECKING:
    from pathlib import Path

# The first run of a clone installs the AsyncAPI CLI (about 80 s): past the 60 s default.
INSTALLS = pytest.mark.timeout(600)
FIX = "the committed contract differs from schemas/: run `just contract` and commit docs/"
PROSE = contract_gen.prose_in(ROOT)


def test_committed_documents_match_the_code() -> None:
    assert contract_gen.drift(ROOT) == [], FIX


def test_every_field_of_every_message_is_described() -> None:
    """docs/contract.md has a row for every field, which the schemas carry as description."""
    schemas = contract_gen.asyncapi(PROSE)["components"]["schemas"]
    undescribed = [name for name, schema in schemas.items() if "description" not in schema]
    assert undescribed == [], f"describe {undescribed} in docs/contract.md (a paragraph)"

    def fields(schema: dict[str, Any]) -> dict[str, Any]:
        """Field -> its schema; an array_like Struct's items are titled with their field."""
        items = {i["title"]: i for i in schema.get("prefixItems", []) if "title" in i}
        return {**schema.get("properties", {}), **items}

    missing = [
        f"{name}.{field}"
        for name, schema in schemas.items()
        for field, prop in fields(schema).items()
        if "description" not in prop
    ]
    assert missing == [], (
        f"describe {', '.join(missing)} in docs/contract.md (a row of the field table under "
        "the message's #### heading), then run `just contract`"
    )
    described = {f"{m}.{f}" for m, fields in PROSE.fields.items() for f in fields}
    real = {f"{name}.{f}" for name, s in schemas.items() for f in fields(s)}
    assert described - real == set(), "docs/contract.md describes fields the Structs lack"


def test_prose_is_read_as_written() -> None:
    text = (
        "#### `Ack`\n\nThe reply\nto a registration (section 3).\n\n"
        "| field | type | default | meaning |\n| --- | --- | --- | --- |\n"
        "| `ttl_s` | number | 0 | *ext.* the lease |\n| `cpu`, `mem` | number | | load |\n\n"
        "| kind | when |\n| --- | --- |\n| `x` | never |\n\n## 5. Next\n\nNot Ack's.\n"
    )
    assert read_prose(text) == Prose(
        messages={"Ack": "The reply to a registration (docs/contract.md section 3)."},
        fields={"Ack": {"ttl_s": "Extension: the lease", "cpu": "load", "mem": "load"}},
    )


def test_drift_names_a_changed_file_and_a_stale_schema(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    shutil.copyfile(ROOT / contract_gen.CONTRACT_PATH, tmp_path / contract_gen.CONTRACT_PATH)
    contract_gen.write(tmp_path)
    assert contract_gen.drift(tmp_path) == []
    (tmp_path / "docs/schemas/Registration.json").write_text("{}")
    (tmp_path / "docs/schemas/Gone.json").write_text("{}")
    assert contract_gen.drift(tmp_path) == [
        "docs/schemas/Registration.json",
        "docs/schemas/Gone.json",
    ]
    assert contract_gen.main(["--root", str(tmp_path), "--check"]) == 1
    contract_gen.write(tmp_path)
    assert not (tmp_path / "docs/schemas/Gone.json").exists()
    assert contract_gen.main(["--root", str(tmp_path), "--check"]) == 0


def test_every_subject_of_subjects_py_is_in_the_catalog() -> None:
    prefixes = {
        value
        for name, value in vars(subjects).items()
        if name.isupper() and isinstance(value, str) and ".v1" in value
    }
    v1 = {ch.name for ch in catalog.CHANNELS if not ch.name.startswith(subjects.SRV)}
    assert prefixes == v1
    # every verb of the NATS services protocol, at each of its three levels
    srv = [ch.address for ch in catalog.CHANNELS if ch.name.startswith(subjects.SRV)]
    assert sorted(srv) == sorted(
        subjects.srv(verb) + level
        for verb in subjects.SRV_VERBS
        for level in ("", ".{name}", ".{name}.{id}")
    )


def test_error_codes_are_those_of_the_error_tree() -> None:
    sent = {errors.error_for(code, "").code for code in catalog.ERROR_CODES}
    assert sent == set(catalog.ERROR_CODES)
    tree = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    wire = {cls.code for cls in tree if issubclass(cls, errors.BatonError)}
    wire -= {errors.RequestTimeout.code}  # client side only, never sent
    assert wire <= set(catalog.ERROR_CODES)


def test_json_schema_patterns_mean_the_same_in_javascript() -> None:
    schema = json.loads(contract_gen.json_schemas(PROSE)["docs/schemas/Registration.json"])
    pattern = schema["properties"]["instance_id"]["pattern"]
    assert pattern == "^[A-Za-z0-9_-]{1,64}$"  # not Python's \Z: ajv refuses that pattern
    assert schema["required"] == ["instance_id", "host", "port"]
    assert schema["properties"]["port"] == {
        "description": "the port clients connect to",
        "type": "integer",
        "minimum": 1,
        "maximum": 65535,
    }


def _js_yaml_load(text: str) -> Any:
    """`text` as js-yaml (the AsyncAPI CLI's YAML parser) reads it, as JSON data."""
    js_yaml = ensure_cli().parent.parent / "js-yaml"
    script = (
        f"const y = require({json.dumps(str(js_yaml))});"
        "process.stdout.write(JSON.stringify(y.load(require('fs').readFileSync(0, 'utf8'))))"
    )
    node = shutil.which("node") or "node"
    done = subprocess.run(  # noqa: S603  # fixed arguments
        [node, "-e", script], input=text, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@INSTALLS
def test_yaml_writer_keeps_every_value() -> None:
    """Read back by another YAML parser, nothing is misread: neither tricky strings nor
    the whole committed document, which reads as the generator built it."""
    if why := missing_node():
        pytest.skip(f"reading YAML back needs node: {why}")
    doc: dict[str, Any] = {
        "plain": "registry.v1.services",
        "looks like bool": "yes",
        "number-like": "1.0",
        "colon": "a: b",
        "hash": "#/components/x",
        "multi": "line one\n\nline {two}",
        "none": None,
        "list": [{"a": 1, "b": [True, 2.5]}, "x"],
        "empty": {},
    }
    assert _js_yaml_load(to_yaml(doc)) == doc
    committed = (ROOT / contract_gen.ASYNCAPI_PATH).read_text(encoding="utf-8")
    assert _js_yaml_load(committed) == json.loads(json.dumps(contract_gen.asyncapi(PROSE)))


@INSTALLS
def test_the_asyncapi_cli_accepts_the_document_and_refuses_a_broken_one(
    tmp_path: Path,
) -> None:
    """The committed document validates; one whose reply names a message its reply
    channel does not carry fails, so the validation can fail. Both run at once, offline."""
    if why := missing_node():
        pytest.skip(f"the AsyncAPI CLI needs node and npm: {why}")
    ensure_cli()
    doc = contract_gen.asyncapi(PROSE)
    del doc["channels"][contract_gen.REPLY_CHANNEL]["messages"]["Ack"]
    broken = tmp_path / "asyncapi.yaml"
    broken.write_text(to_yaml(doc))
    with ThreadPoolExecutor(2) as pool:
        good, bad = pool.map(
            lambda path: validate(path, network=False), [ROOT / contract_gen.ASYNCAPI_PATH, broken]
        )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "is valid" in good.stdout
    assert bad.returncode != 0, bad.stdout
    assert "Ack" in bad.stdout + bad.stderr


_AJV = """
const [dir, cases] = [process.argv[1], JSON.parse(require("fs").readFileSync(0, "utf8"))];
const Ajv2020 = require("ajv/dist/2020").default;
const ajv = new Ajv2020({ strict: true, allErrors: true });
require("ajv-formats").default(ajv);
const out = cases.map(([name, payload]) => {
  const check = ajv.compile(JSON.parse(require("fs").readFileSync(`${dir}/${name}.json`, "utf8")));
  return check(payload);
});
process.stdout.write(JSON.stringify(out));
"""

# What the workers refuse (400): the schema must refuse it too.
INVALID: list[tuple[str, dict[str, Any]]] = [
    ("Registration", {"instance_id": "web-1", "host": "h", "port": 70000}),
    ("Registration", {"instance_id": "web.1", "host": "h", "port": 80}),
    ("Registration", {"instance_id": "web-1", "host": "h"}),
    ("Heartbeat", {"instance_id": "web-1", "cpu": 1.5}),
    ("ConfigChange", {"strategy": "random"}),
    ("ConfigChange", {"actor": "ann", "instances": {"web-1": {"weight": 10001}}}),
]


@INSTALLS
def test_json_schemas_judge_payloads_as_the_workers_do() -> None:
    """A JSON Schema validator nobody here wrote (ajv) agrees with msgspec's decoding: it
    accepts every example in schemas/examples.py and refuses what the workers refuse."""
    if why := missing_node():
        pytest.skip(f"ajv needs node and npm: {why}")
    modules = ensure_cli().parent.parent
    kinds = {type(example).__name__: type(example) for example in EXAMPLES}
    valid = [(type(e).__name__, msgspec.to_builtins(e)) for e in EXAMPLES]
    for name, payload in valid:  # what the workers decode, as the documents show it
        assert msgspec.json.decode(msgspec.json.encode(payload), type=kinds[name]) in EXAMPLES
    for name, payload in INVALID:  # the workers' own decoders refuse these
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(msgspec.json.encode(payload), type=kinds[name])
    node = shutil.which("node") or "node"
    done = subprocess.run(  # noqa: S603  # fixed arguments
        [node, "-e", _AJV, str(ROOT / contract_gen.SCHEMAS_DIR)],
        input=json.dumps(valid + INVALID),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NODE_PATH": str(modules)},
    )
    verdicts = json.loads(done.stdout)
    assert verdicts == [True] * len(valid) + [False] * len(INVALID)
