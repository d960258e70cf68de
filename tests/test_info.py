"""orthoref.info and ``orthoref info``: what a bug report needs, as text and as JSON."""
import json

from orthoref import cli
from orthoref.info import OPTIONAL, environment, format_environment


def test_environment_names_the_machine_and_the_libraries():
    info = environment()
    for key in ("orthoref", "python", "numpy", "scipy", "cpu", "cpu_count", "blas", "optional", "backends",
                "active_backend", "data"):
        assert key in info, key
    assert set(info["optional"]) == set(OPTIONAL)
    assert info["backends"]["numpy"] == "available" and info["active_backend"] in ("numpy", "cupy")
    assert json.loads(json.dumps(info)) == info                    # JSON-ready as it is
    text = format_environment(info)
    assert f"NumPy {info['numpy']}" in text and "backends: numpy available" in text and "CPU: " in text


def test_cli_info_text_and_json(capsys):
    assert cli.main(["info"]) == 0
    assert capsys.readouterr().out.startswith("orthoref ")
    assert cli.main(["info", "--json"]) == 0
    assert "numpy" in json.loads(capsys.readouterr().out)
