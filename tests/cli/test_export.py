"""dacer2-export's command line without the export extra: the error names an install that works from a clone
(dacer2 is on no package index). The export itself is tested in tests/deploy/test_export.py."""

import dacer2.deploy.export
import dacer2.deploy.policy
from dacer2.cli.export import export_main


def test_a_missing_extra_names_an_install_that_works(monkeypatch, capsys, tmp_path):
    def missing_extra(policy, path):
        raise ModuleNotFoundError("No module named 'onnxscript'")

    monkeypatch.setattr(dacer2.deploy.policy.Policy, "load", classmethod(lambda cls, *args, **kwargs: object()))
    monkeypatch.setattr(dacer2.deploy.export, "export_onnx", missing_extra)
    assert export_main([str(tmp_path / "run"), "--out", str(tmp_path / "p.onnx")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.strip() == (
        "dacer2-export: error: No module named 'onnxscript'; install the export extra from the dacer2 clone: "
        "make install-ray, or pip install --no-build-isolation -e '.[export]'")
    assert "dacer2[export]" not in captured.err
