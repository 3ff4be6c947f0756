"""The catalogs (web/static/js/i18n/*.js): one per language, each with exactly the keys of en.js, every plural key
with exactly the categories Intl.PluralRules has for its language, the same placeholders, and every key the views
ask for present. Node reads the catalogs as the browser does (ES modules)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from peer.e2ee import EMOJI

JS = Path(__file__).resolve().parents[2] / "web" / "static" / "js"
LOAD = """
const files = JSON.parse(process.argv[1]);
const out = {};
for (const [lang, file] of Object.entries(files)) {
  const catalog = (await import(file)).default;
  out[lang] = { catalog, plural: new Intl.PluralRules(lang).resolvedOptions().pluralCategories };
}
const reg = await import(process.argv[2]);
out.__registered = Object.keys(reg.CATALOG);
process.stdout.write(JSON.stringify(out));
"""


def load_catalogs() -> dict[str, Any]:
    """{lang: {"catalog": {key: text}, "plural": [categories]}, "__registered": [langs in lib/i18n.js]}."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is required in CI")
        pytest.skip("node not installed")
    files = {p.stem: p.as_uri() for p in sorted((JS / "i18n").glob("*.js"))}
    out = subprocess.run([node, "--input-type=module", "-e", LOAD, json.dumps(files), (JS / "lib" / "i18n.js").as_uri()],
                         capture_output=True, text=True, encoding="utf-8", check=True, timeout=60)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


@pytest.fixture(scope="module")
def catalogs() -> dict[str, Any]:
    return load_catalogs()


def _base(key: str) -> str:
    return key.split("#", 1)[0]


def test_every_catalog_is_registered(catalogs: dict[str, Any]) -> None:
    langs = sorted(k for k in catalogs if not k.startswith("__"))
    assert "ro" in langs and "en" in langs
    assert sorted(catalogs["__registered"]) == langs


def test_no_key_is_missing_in_any_catalog(catalogs: dict[str, Any]) -> None:
    en = {_base(k) for k in catalogs["en"]["catalog"]}
    for lang, c in catalogs.items():
        if lang.startswith("__"):
            continue
        keys = {_base(k) for k in c["catalog"]}
        assert not en - keys, f"{lang}.js lacks {sorted(en - keys)}"
        assert not keys - en, f"{lang}.js has keys en.js does not: {sorted(keys - en)}"
        assert all(isinstance(v, str) and v.strip() for v in c["catalog"].values()), f"{lang}.js: an empty text"


def test_plural_keys_have_exactly_the_languages_categories(catalogs: dict[str, Any]) -> None:
    for lang, c in catalogs.items():
        if lang.startswith("__"):
            continue
        forms: dict[str, set[str]] = {}
        for k in c["catalog"]:
            if "#" in k:
                base, cat = k.split("#", 1)
                forms.setdefault(base, set()).add(cat)
        assert forms, f"{lang}.js has no plural key"
        for base, cats in forms.items():
            assert cats == set(c["plural"]), f"{lang}.js {base}: {sorted(cats)} != Intl.PluralRules {c['plural']}"


def test_placeholders_agree(catalogs: dict[str, Any]) -> None:
    def names(text: str) -> set[str]:
        return set(re.findall(r"\{(\w+)\}", text))

    en = catalogs["en"]["catalog"]
    for lang, c in catalogs.items():
        if lang.startswith("__"):
            continue
        by_base: dict[str, set[str]] = {}
        for k, v in c["catalog"].items():
            by_base.setdefault(_base(k), set()).update(names(v) - {"n"} if "#" in k else names(v))
        for k, v in en.items():
            want = names(v) - {"n"} if "#" in k else names(v)
            assert by_base[_base(k)] == want, f"{lang}.js {k}: placeholders {by_base[_base(k)]} != {want}"


def test_safety_code_words_come_from_the_catalogs(catalogs: dict[str, Any]) -> None:
    en = catalogs["en"]["catalog"]
    # English: the same names as the Python participant's list (peer/e2ee.py), by index.
    assert [en[f"sas.{i}"] for i in range(64)] == [name for _, name in EMOJI]
    for lang, c in catalogs.items():
        if lang.startswith("__"):
            continue
        words = [c["catalog"][f"sas.{i}"] for i in range(64)]
        assert len(set(words)) == 64, f"{lang}.js: two safety-code emoji share a name"
    # The crypto module carries the emoji only, no words of any language.
    e2ee = (JS / "lib" / "e2ee.js").read_text(encoding="utf-8")
    table = e2ee[e2ee.index("export const EMOJI"):]
    table = table[: table.index("]);")]
    literals = re.findall(r'"((?:\\.|[^"\\])*)"', table.split("[", 1)[1])
    assert len(literals) == 64
    assert not [s for s in literals if re.sub(r"\\u[0-9a-fA-F]{4}", "", s)], "lib/e2ee.js EMOJI holds words"


def test_romanian_is_written_with_comma_below_and_formal_address(catalogs: dict[str, Any]) -> None:
    ro = catalogs["ro"]["catalog"]
    text = "\n".join(ro.values())
    assert not re.search("[şţŞŢ]", text), "ș and ț take a comma below, not a cedilla"
    assert re.search("[ăâîșț]", text)
    assert "dumneavoastră" in text
    # Formal address: no informal "tu" forms in what the client reads.
    assert not re.search(r"\b(tu|te rog|ești|poți|ai fost)\b", text, re.I)


def test_every_key_the_code_asks_for_exists(catalogs: dict[str, Any]) -> None:
    en = catalogs["en"]["catalog"]
    plural = {_base(k) for k in en if "#" in k}
    missing = []
    for path in sorted(JS.rglob("*.js")) + sorted((JS.parents[1] / "templates").glob("*.html")):
        src = path.read_text(encoding="utf-8")
        for m in re.finditer(r"""\b(t|tn)\(\s*"([a-z0-9.-]+)"|data-i18n(?:-[a-z-]+)?="([a-z0-9.-]+)\"""", src):
            fn, key = m.group(1), m.group(2) or m.group(3)
            ok = key in plural if fn == "tn" else key in en
            if not ok:
                missing.append(f"{path.relative_to(JS.parents[1])}: {key}")
    assert not missing, missing


def test_counts_take_the_languages_plural_form() -> None:
    """tn() picks the form Intl.PluralRules gives the count: Romanian has three (1, 2–19, 20+), English two."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed")
    script = """
const i18n = await import(process.argv[1]);
const out = {};
for (const lang of ["en", "ro"]) {
  i18n.setLocale(lang);
  out[lang] = [1, 2, 5, 19, 20, 101].map((n) => i18n.tn("session.warning", n));
}
process.stdout.write(JSON.stringify(out));
"""
    out = subprocess.run([node, "--input-type=module", "-e", script, (JS / "lib" / "i18n.js").as_uri()],
                         capture_output=True, text=True, encoding="utf-8", check=True, timeout=60)
    got = json.loads(out.stdout)
    assert got["en"] == ["1 minute left in this session."] + [f"{n} minutes left in this session." for n in (2, 5, 19, 20, 101)]
    assert got["ro"] == ["Mai este un minut din ședință.", "Mai sunt 2 minute din ședință.", "Mai sunt 5 minute din ședință.",
                         "Mai sunt 19 minute din ședință.", "Mai sunt 20 de minute din ședință.",
                         "Mai sunt 101 minute din ședință."]
