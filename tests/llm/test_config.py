"""autointerp.toml validation (unknown keys, wrong types name the key) and the LLM settings."""

from __future__ import annotations

import pytest

from autointerp.config import Settings
from autointerp.errors import UsageError


@pytest.fixture
def toml(tmp_path, monkeypatch):
    path = tmp_path / "autointerp.toml"
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(path))
    for k in ("AUTOINTERP_LLM_TIMEOUT", "AUTOINTERP_LLM_CONCURRENCY", "AUTOINTERP_LLM"):
        monkeypatch.delenv(k, raising=False)

    def write(text):
        path.write_text(text)
        return path

    return write


def test_unknown_key_is_an_error_naming_it(toml):
    path = toml('llm = "embedded:smollm2-135m"\nllm_timout = 30\n')
    with pytest.raises(UsageError) as e:
        Settings.load()
    msg = str(e.value)
    assert "\n" not in msg and "unknown key 'llm_timout'" in msg and str(path) in msg and "llm_timeout" in msg


def test_wrong_type_names_the_key_in_one_line(toml, monkeypatch):
    toml('llm_concurrency = "four"\n')
    with pytest.raises(UsageError) as e:
        Settings.load()
    msg = str(e.value)
    assert "\n" not in msg and "key 'llm_concurrency'" in msg and "'four'" in msg
    toml("llm_timeout = 2.5\nllm_max_attempts = 3\n")
    s = Settings.load()
    assert s.llm_timeout == 2.5 and s.llm_max_attempts == 3
    monkeypatch.setenv("AUTOINTERP_LLM_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="AUTOINTERP_LLM_TIMEOUT: 'soon' is not valid"):
        Settings.load()


def test_settings_reach_the_openai_backend(toml, monkeypatch):
    from autointerp.llm import get_llm

    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    toml("llm_timeout = 7\nllm_max_attempts = 2\n")
    llm = get_llm("openai:m", base_url="http://127.0.0.1:9/v1", settings=Settings.load())
    assert llm.timeout == 7 and llm.max_attempts == 2 and llm.total_timeout == 28
    assert get_llm("openai:m", base_url="http://127.0.0.1:9/v1", settings=Settings.load(llm_timeout=3)).timeout == 3
    # library code reads no config file: without settings, the library defaults
    plain = get_llm("openai:m", base_url="http://127.0.0.1:9/v1")
    default = get_llm("openai:m", base_url="http://127.0.0.1:9/v1", settings=Settings.defaults())
    assert (plain.timeout, plain.max_attempts) == (default.timeout, default.max_attempts) != (7, 2)


def test_library_defaults_read_neither_the_environment_nor_the_config_file(toml, monkeypatch):
    toml('llm = "openai:from-file"\nllm_concurrency = 9\n')
    monkeypatch.setenv("AUTOINTERP_MODEL", "from-env")
    d = Settings.defaults()
    assert (d.llm, d.llm_concurrency, d.model) == ("embedded:smollm2-135m", 4, "smollm2-135m")
    s = Settings.load()
    assert (s.llm, s.llm_concurrency, s.model) == ("openai:from-file", 9, "from-env")
    assert Settings.load(model="flag").model == "flag"


@pytest.mark.parametrize("source", ["file", "env"])
def test_prompts_setting_reaches_the_prompts_the_library_loads(toml, tmp_path, monkeypatch, source):
    """The `prompts` key of autointerp.toml (or $AUTOINTERP_PROMPTS), resolved once by a CLI
    command, is where every prompt of that command comes from (it was ignored from the file)."""
    from click.testing import CliRunner

    from autointerp.cli import _load_commands, cli
    from autointerp.llm import load_prompt
    from autointerp.llm.prompts import use_prompts_dir
    from autointerp.store import Store

    mine = tmp_path / "my-prompts"
    mine.mkdir()
    (mine / "explain_chat.txt").write_text("### user\nmy own $records\n")
    monkeypatch.delenv("AUTOINTERP_PROMPTS", raising=False)
    if source == "file":
        toml(f'prompts = "{mine}"\n')
    else:
        toml("")
        monkeypatch.setenv("AUTOINTERP_PROMPTS", str(mine))
    Store(tmp_path / "s.db").close()
    _load_commands()
    try:
        r = CliRunner().invoke(cli, ["stats", "--store", str(tmp_path / "s.db")])
        assert r.exit_code == 0, r.output
        assert load_prompt("explain_chat").render(records="R") == [{"role": "user", "content": "my own R"}]
        assert load_prompt("simulate_json").name == "simulate_json"     # the rest from the shipped prompts
    finally:
        use_prompts_dir(None)
    assert not load_prompt("explain_chat").text.startswith("### user\nmy own")


def test_threads_setting_sets_torchs_threads_once_per_command(toml, tmp_path, monkeypatch):
    """`threads` (autointerp.toml / $AUTOINTERP_THREADS) is applied by the face, for the whole
    command; a bad value names its source in one line."""
    import torch
    from click.testing import CliRunner

    from autointerp.cli import _load_commands, cli
    from autointerp.store import Store

    monkeypatch.delenv("AUTOINTERP_THREADS", raising=False)
    Store(tmp_path / "s.db").close()
    _load_commands()
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    try:
        toml(f"threads = {want}\n")
        r = CliRunner().invoke(cli, ["stats", "--store", str(tmp_path / "s.db")])
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
    toml("threads = 0\n")
    with pytest.raises(UsageError, match="key 'threads'"):
        Settings.load()


def test_endpoint_settings_reach_the_backend_only_through_settings(toml, monkeypatch):
    """llm_rpm / llm_tpm / llm_timeout / llm_max_attempts / llm_base_url from the environment or
    autointerp.toml reach the OpenAI-compatible backend through the Settings the face resolved;
    the library itself reads none of them from the environment."""
    from autointerp.llm import get_llm

    monkeypatch.setenv("AUTOINTERP_LLM_RPM", "120")
    monkeypatch.setenv("AUTOINTERP_LLM_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AUTOINTERP_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    toml("llm_tpm = 6000\nllm_timeout = 7\n")
    llm = get_llm("openai:m", settings=Settings.load())
    assert llm.base_url == "http://127.0.0.1:9/v1" and llm.timeout == 7 and llm.max_attempts == 2
    assert llm.limiter is not None and (llm.limiter.rpm, llm.limiter.tpm) == (120, 6000)
    bare = get_llm("openai:m", base_url="http://127.0.0.1:8/v1")      # no settings: the library's defaults
    assert bare.limiter is None and bare.max_attempts == 5 and bare.timeout == 60
    monkeypatch.delenv("AUTOINTERP_LLM_RPM")
    toml("llm_rpm = 0\n")
    with pytest.raises(UsageError, match="key 'llm_rpm'"):
        Settings.load()
