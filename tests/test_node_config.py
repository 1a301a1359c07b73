"""DICOM node: config validation (one-line errors), rule matching, retry delays, the example config."""

from pathlib import Path

import pytest

from datafiles import REPO
from nodekit import node_doc
from promptseg.errors import NodeConfigError
from promptseg.node import load_config, validate_config
from promptseg.node.config import RetrySection, parse_size
from promptseg.node.rules import SeriesFacts, select_rule


def test_example_config_validates(tmp_path):
    config = load_config(REPO / "examples" / "dicom-node.yaml")
    assert config.node.ae_title == "PROMPTSEG" and config.node.quiet_seconds == 30
    assert config.node.max_association_bytes == 4 * 10**9
    assert config.node.storage == (REPO / "work" / "dicom-node")  # relative to the file, normalised
    assert [rule.name for rule in config.rules] == ["lung-gtv", "head-box"]
    assert config.rules[0].prompts[0].roi == "GTV.*"
    assert config.caller("CT_SCANNER").allows("10.1.2.77") and not config.caller("CT_SCANNER").allows("10.1.3.1")
    assert config.caller("PLANNING").allows("192.168.1.1")  # no addresses listed: any
    assert config.caller("OTHER") is None


def _error(doc, tmp_path=None) -> str:
    with pytest.raises(NodeConfigError) as info:
        validate_config(doc, source="node.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["node"].update(colour="red"), "node.yaml: node.colour: unknown key"),
    (lambda d: d.update(extra=1), "node.yaml: extra: unknown key"),
    (lambda d: d["node"].update(ae_title="MUCH_TOO_LONG_AE_TITLE"), "node.ae_title: 'MUCH_TOO_LONG_AE_TITLE' is not an AE title"),
    (lambda d: d["node"].update(port=70000), "node.port: Input should be less than or equal to 65535"),
    (lambda d: d["node"].update(quiet_seconds=0), "node.quiet_seconds: Input should be greater than 0"),
    (lambda d: d["node"].update(max_association_bytes="lots"), "node.max_association_bytes: 'lots' is not a size"),
    (lambda d: d.update(allowed_callers=[]), "allowed_callers: List should have at least 1 item"),
    (lambda d: d["allowed_callers"][0].update(addresses=["10.0.0.300"]), "allowed_callers.0.addresses: '10.0.0.300' is not an IP address"),
    (lambda d: d["rules"][0]["output"].update(send_to=["pacs"]), "rules.0.output.send_to: unknown destination 'pacs' (configured: tps)"),
    (lambda d: d["rules"][0]["output"].update(send_to=[]), "rules.0.output: say where results go"),
    (lambda d: d["rules"][0]["output"].update(format="nifti"), "rules.0.output.format: Input should be 'rtstruct' or 'seg'"),
    (lambda d: d["rules"][0]["prompts"][0].update(roi="GTV"), "give exactly one of roi"),
    (lambda d: d["rules"][0]["prompts"][0].update(box=[40, 10, 20, 30]), "a box is [x0, y0, x1, y1] with x0 <= x1"),
    (lambda d: d["rules"][0].update(prompts=[{"roi": "GTV[", "label": 1}]), "'GTV[' is not a valid regular expression"),
    (lambda d: d["rules"][0].update(prompts=[{"roi": "GTV", "slice": 3}]), "slice goes with box"),
    (lambda d: d["rules"][0].update(prompts=[{"roi": "A"}, {"roi": "B"}]), "labels repeat ([1, 1])"),
    (lambda d: d["rules"][0].update(prompt_file="p.json"), "give either prompts"),
    (lambda d: d["rules"][0]["match"].update(series_description="(("), "is not a valid regular expression"),
    (lambda d: d["rules"].append(dict(d["rules"][0])), "rules: names repeat"),
    (lambda d: d["retry"].update(max_attempts=0), "retry.max_attempts: Input should be greater than or equal to 1"),
    (lambda d: d["node"].update(tls={"certificate": "c.pem", "private_key": "k.pem", "require_client_certificate": True}),
     "require_client_certificate needs ca_certificates"),
])
def test_config_errors_name_the_key(tmp_path, change, expected):
    doc = node_doc(tmp_path, destinations={"tps": {"ae_title": "TPS", "host": "127.0.0.1", "port": 104}})
    change(doc)
    message = _error(doc)
    assert message.startswith("node.yaml: ")
    assert expected in message


def test_missing_files_and_bad_yaml(tmp_path):
    doc = node_doc(tmp_path, destinations={"tps": {"ae_title": "TPS", "host": "127.0.0.1", "port": 104}})
    doc["rules"][0]["checkpoint"] = "weights.pth"
    message = _error(doc)
    assert message == f"node.yaml: rules.0.checkpoint: file not found: {Path.cwd() / 'weights.pth'}"
    with pytest.raises(NodeConfigError, match=r"^config file not found: .*nope\.yaml$"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: [1, 2\n")
    with pytest.raises(NodeConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(NodeConfigError, match="the top level must be a mapping"):
        load_config(listy)


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "prompts.json").write_text('{"objects": [{"slice": 1, "box": [1, 1, 5, 5]}]}')
    path = tmp_path / "conf" / "node.yaml"
    path.write_text(
        "node: {ae_title: N, storage: ../spool}\n"
        "allowed_callers: [{ae_title: CT}]\n"
        "rules: [{name: r, prompt_file: prompts.json, output: {folder: out}}]\n")
    config = load_config(path)
    assert config.node.storage == tmp_path / "spool"
    assert config.rules[0].prompt_file == tmp_path / "conf" / "prompts.json"
    assert config.rules[0].output.folder == tmp_path / "conf" / "out"
    assert config.node.host == "127.0.0.1"  # not reachable from other machines unless configured


def test_sizes():
    assert parse_size(1000) == 1000
    assert parse_size("500 MB") == 500 * 10**6
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("1.5 kb") == 1500
    for bad in ("0", "-1 MB", "ten", True):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_retry_delays_grow_exponentially_up_to_the_maximum():
    retry = RetrySection(max_attempts=6, initial_delay_seconds=10, backoff_factor=3, max_delay_seconds=200)
    assert [retry.delay(n) for n in range(1, 6)] == [10, 30, 90, 200, 200]


def _rules(*rules):
    doc = node_doc(Path("/tmp/unused"), rules=[
        {"name": name, "match": match, "prompts": [{"box": [1, 1, 5, 5]}], "output": {"folder": "/tmp/x"}}
        for name, match in rules])
    return validate_config(doc).rules


def test_rule_matching_first_rule_whose_every_condition_holds():
    rules = _rules(
        ("planning-lung", {"modality": ["CT"], "body_part": "chest|lung", "calling_ae": ["PLANNING"]}),
        ("thorax", {"modality": ["ct"], "series_description": ".*thorax.*"}),
        ("any-mr", {"modality": ["MR"]}),
        ("catch-all", {}),
    )

    def pick(modality, description, body, ae):
        rule = select_rule(rules, SeriesFacts(modality, description, body, ae))
        return rule.name if rule else None

    assert pick("CT", "THORAX 5mm", "CHEST", "PLANNING") == "planning-lung"
    assert pick("CT", "THORAX 5mm", "CHEST", "CT_SCANNER") == "thorax"      # calling AE differs
    assert pick("CT", "Thorax", "ABDOMEN", "PLANNING") == "thorax"           # body part is matched whole: no
    assert pick("CT", "Abdomen", "CHESTWALL", "PLANNING") == "catch-all"     # whole-value match: CHESTWALL != chest
    assert pick("CT", None, None, "PLANNING") == "catch-all"                 # a missing tag never matches a pattern
    assert pick("mr", "T1", None, "X") == "any-mr"
    assert select_rule(rules[:3], SeriesFacts("PT", "WB", None, "X")) is None


def test_cli_check_and_one_line_errors(tmp_path, capsys):
    from promptseg.cli import main

    assert main(["dicom-node", "--config", str(REPO / "examples" / "dicom-node.yaml"), "--check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config OK: AE PROMPTSEG on 127.0.0.1:11112, 2 allowed caller(s), 1 destination(s), 2 rule(s)")
    bad = tmp_path / "node.yaml"
    bad.write_text("node: {ae_title: N, storage: s, colour: red}\nallowed_callers: [{ae_title: CT}]\n"
                   "rules: [{name: r, prompts: [{box: [1, 1, 4, 4]}], output: {folder: out}}]\n")
    assert main(["dicom-node", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"promptseg: error: {bad}: node.colour: unknown key\n"
    assert not (tmp_path / "s").exists()   # nothing created for a config that does not validate
