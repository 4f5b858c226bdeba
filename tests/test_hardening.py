"""Edge hardening: strict YAML reads, output-path checks, the CLI's last guard, host profiles its loader accepts."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from sim.errors import ConfigError, InputError
from sim.fileio import check_output_dir, check_output_file, read_yaml_mapping, write_text_atomic, writing

Cli = Callable[..., tuple[int, str, str]]


def read(tmp_path: Path, content: bytes | str, name: str = "x.yaml") -> dict:
    f = tmp_path / name
    f.write_bytes(content.encode() if isinstance(content, str) else content)
    return read_yaml_mapping(f, "experiment file", ConfigError)


@pytest.mark.parametrize(("content", "message"), [
    ("a: 1\nb: 2\na: 3\n", r"x\.yaml: line 3: duplicate key 'a' \(first on line 1\)"),
    ("m:\n  k: 1\n  k: 2\n", r"line 3: duplicate key 'k'"),
    (b"\xff\xfe a: 1\n", r"x\.yaml: not UTF-8 text \(byte 0\)"),
    (b"a: 1\n\x00\x01\x02", r"x\.yaml: a binary file"),
    (b"PAR1\x00\x00", r"x\.yaml: a binary file"),
    ("[" * 5000 + "]" * 5000, r"x\.yaml: not valid YAML \(nested deeper than 64 levels\)"),
    ("a: [1, 2\n", r"x\.yaml: not valid YAML \(line 2"),
    ("- 1\n- 2\n", r"x\.yaml: expected a mapping at the top level, got list"),
])
def test_bad_yaml_is_one_config_error_naming_the_file(tmp_path: Path, content: bytes | str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        read(tmp_path, content)
    assert "\n" not in str(info.value)


def test_yaml_paths_that_are_not_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a directory, expected a experiment file file|is a directory"):
        read_yaml_mapping(tmp_path, "experiment file", ConfigError)
    with pytest.raises(ConfigError, match=r"experiment file: empty path"):
        read_yaml_mapping(Path(""), "experiment file", ConfigError)
    with pytest.raises(ConfigError, match=r"cannot read the experiment file \(name too long\)"):
        read_yaml_mapping(tmp_path / ("x" * 300), "experiment file", ConfigError)
    assert read(tmp_path, "") == {} and read(tmp_path, "a: 1\nb: {c: 2}\n") == {"a": 1, "b": {"c": 2}}


def test_unreadable_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("a: 1\n")

    def denied(self: Path) -> bytes:  # chmod 000 does not stop root, who runs these tests on CI machines
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError, match=r"x\.yaml: cannot read the experiment file \(permission denied\)"):
        read_yaml_mapping(f, "experiment file", ConfigError)


def test_output_dir_checks(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=r"--out: empty path"):
        check_output_dir("")
    with pytest.raises(InputError, match=r"file/sub: .*file is a file, not a folder"):
        check_output_dir(tmp_path / "file" / "sub")
    with pytest.raises(InputError, match=r"file: is a file, not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(InputError, match=r"name too long"):
        check_output_dir(tmp_path / ("n" * 300))
    check_output_dir(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()
    with pytest.raises(InputError, match=r"is one of the command's inputs"):
        check_output_file(tmp_path / "file", [tmp_path / "file"])


def test_writing_names_the_file_for_disk_full_and_leaves_no_partial(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match=r"out\.json: cannot write \(no space left on the device\)"):
        with writing(tmp_path / "out.json"):
            raise OSError(errno.ENOSPC, "No space left on device")

    def full(self: Path, *a: object, **k: object) -> None:
        self.open("w").write("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(InputError, match=r"s\.json: cannot write \(no space left"):
        write_text_atomic(tmp_path / "s.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_unexpected_errors_are_one_line_with_exit_code_1_and_debug_shows_the_traceback(
        cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import sim.experiments.report as report

    def boom(_: Path) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(report, "report_experiment", boom)
    code, _, err = cli("report", "results/x")
    assert code == 1
    assert err == "error: unexpected ZeroDivisionError: a bug (rerun with --debug for the traceback)\n"
    code, _, err = cli("--debug", "report", "results/x")
    assert code == 1 and "Traceback" in err and "ZeroDivisionError: a bug" in err


def test_host_profile_is_checked_by_its_loader_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sim.profiling.host as host
    from sim.hardware.profiles import load_frontend, load_storage_tier

    tier = {"read_latency_s": 1e-5, "read_bytes_per_s": 1e9, "write_latency_s": 1e-4, "write_bytes_per_s": 1e9}
    monkeypatch.setattr(host, "measure_embed", lambda repeats: 0.01)
    monkeypatch.setattr(host, "measure_search", lambda repeats: (0.0, 1e-7))
    monkeypatch.setattr(host, "measure_storage", lambda folder, repeats: dict(tier))
    paths = host.profile_host(tmp_path / "p", repeats=3)
    assert load_frontend(str(paths[0])).embed_s == 0.01
    assert load_storage_tier(str(paths[1]), "local_disk").read_bytes_per_s == 1e9
    monkeypatch.setattr(host, "measure_embed", lambda repeats: float("nan"))
    with pytest.raises(InputError, match=r"measured frontend profile would be rejected .*embed_s"):
        host.profile_host(tmp_path / "q", repeats=3)
    assert not (tmp_path / "q" / "frontend").exists()


def test_pipeline_import_refuses_its_own_input_as_out(tmp_path: Path, cli: Cli) -> None:
    src = tmp_path / "metadata.parquet"
    src.write_bytes(b"PAR1")
    code, _, err = cli("trace", "import-diffusiondb", str(src), "--out", str(src), "--embedder", "none")
    assert code == 2 and "is one of the command's inputs" in err and src.read_bytes() == b"PAR1"
