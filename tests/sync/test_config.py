"""SyncConfig on the config mixin, the transport registry and the package's import boundaries."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest
import torch

from pangu_core.config import ConfigError
from pangu_core.sync import (Publisher, Subscriber, SyncConfig, get_transport, parse_layout_text, register_transport,
                             transports)
from pangu_core.sync import registry


# A config written out and read back is the same config, through dicts and through YAML.
def test_round_trip_through_dict_and_yaml(tmp_path) -> None:
    config = SyncConfig(transport="inprocess", name="policy-1", slots=4, publish_dtype=None, bucket_mb=8,
                        timeout_s=2.5, staleness=3, changed_only=True, src_rank=1)
    assert SyncConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "sync.yaml"
    config.to_yaml(path)
    assert SyncConfig.from_yaml(path) == config
    assert SyncConfig.from_dict({}) == SyncConfig()
    assert config.bucket_bytes == 8 << 20 and isinstance(config.bucket_mb, float)


# YAML as a person writes it: comments, null for None.
def test_loads_from_yaml(tmp_path) -> None:
    path = tmp_path / "sync.yaml"
    path.write_text("# weight sync\ntransport: inprocess\nslots: 4\nstaleness: 2\npublish_dtype: null\n")
    config = SyncConfig.from_yaml(path)
    assert (config.transport, config.slots, config.staleness, config.publish_dtype) == ("inprocess", 4, 2, None)


# Every bad value is reported at once, each naming its field; unknown transports list the known ones.
def test_reports_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        SyncConfig(transport="carrier_pigeon", slots=1, publish_dtype="int8", name="bad name", timeout_s=0,
                   bucket_mb=float("inf"), staleness=-1, src_rank=-2, prefix="")
    assert sorted(p.split(":")[0] for p in info.value.problems) == [
        "bucket_mb", "name", "prefix", "publish_dtype", "slots", "src_rank", "staleness", "timeout_s", "transport"]
    message = str(info.value)
    assert "transport: unknown transport 'carrier_pigeon'; known: inprocess, shm, torch_distributed" in message
    assert "publish_dtype: expected None or one of float32, float16, bfloat16, got 'int8'" in message
    assert "slots: expected an int in 2..255, got 1" in message
    assert "name: expected 1-64 characters of [A-Za-z0-9_-], got 'bad name'" in message


# Types are checked against the annotations: no floats for ints, no strings for bools.
@pytest.mark.parametrize("field, value, pattern", [
    ("slots", 2.0, "slots: expected an int, got 2.0"),
    ("changed_only", "yes", "changed_only: expected a bool, got 'yes'"),
    ("timeout_s", True, "timeout_s: expected a number, got True"),
    ("transport", 3, "transport: expected a string, got 3"),
    ("publish_dtype", 16, "publish_dtype: expected a string or null, got 16"),
])
def test_wrong_types_name_the_field(field: str, value: object, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        SyncConfig(**{field: value})


# A wrong type and a bad value in other fields are reported together (the rules skip mistyped fields).
def test_type_and_value_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        SyncConfig(slots="3", name=7, staleness=-1, transport="nope")
    assert info.value.problems == [
        "name: expected a string, got 7", "slots: expected an int, got '3' (str)",
        "transport: unknown transport 'nope'; known: inprocess, shm, torch_distributed",
        "staleness: expected an int >= 0, got -1"]


# Unknown keys (typos) are refused with the known keys listed, alongside other problems.
def test_unknown_keys_are_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="transprt: unknown key; known: transport, name, prefix"):
        SyncConfig.from_dict({"transprt": "shm"})
    path = tmp_path / "sync.yaml"
    path.write_text("transport: shm\nslots: 1\nstaleness: 1\nstalenes: 2\n")
    with pytest.raises(ConfigError) as info:
        SyncConfig.from_yaml(path)
    assert f"{path}:4: stalenes: unknown key" in str(info.value)
    assert f"{path}:2: slots: expected an int in 2..255" in str(info.value)


# A registered transport is known by name (configs accept it, endpoints use it); unknown names list
# the known ones; a class without the endpoint constructors is refused at registration.
def test_registry_takes_new_transports() -> None:
    name = "test_" + uuid.uuid4().hex[:8]
    builtin = get_transport("inprocess")

    @register_transport(name)
    class Loopback(builtin):  # the in-process transport under another name
        pass

    try:
        assert name in transports() and get_transport(name) is Loopback
        config = SyncConfig(transport=name, name=name)
        with Publisher({"w": torch.arange(4.0)}, config) as publisher:
            publisher.publish()
            target = {"w": torch.zeros(4, dtype=torch.bfloat16)}
            assert Subscriber(target, config).pull() == 0
            assert torch.equal(target["w"], torch.arange(4.0).bfloat16())
    finally:
        registry._TRANSPORTS.pop(name, None)
    with pytest.raises(ValueError, match=f"transport: unknown transport '{name}'; known: inprocess, shm, torch_d"):
        get_transport(name)
    with pytest.raises(TypeError, match="has no open_subscriber"):
        register_transport("broken")(type("Broken", (), {"open_publisher": classmethod(lambda cls: None)}))
    assert "broken" not in transports()
    with pytest.raises(ValueError, match="name: expected a non-empty transport name"):
        register_transport("")


# Importing the package, listing transports and building any config never imports the
# torch.distributed transport; asking for that transport does. (A fresh interpreter: sys.modules.)
def test_distributed_module_is_imported_only_when_used() -> None:
    code = textwrap.dedent("""
        import sys
        import pangu_core.sync as sync
        from pangu_core.config import ConfigError
        sync.transports()
        for transport in sync.transports():
            sync.SyncConfig(transport=transport)
        try:
            sync.SyncConfig(transport="nope")
        except ConfigError:
            pass
        assert "pangu_core.sync.distributed" not in sys.modules, "imported early"
        sync.get_transport("torch_distributed")
        assert "pangu_core.sync.distributed" in sys.modules, "not imported on use"
        print("OK")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "OK", done.stderr[-2000:]


# A layout text that is not one is a clear ValueError, not a KeyError from deep inside.
def test_parse_layout_text_refuses_other_text() -> None:
    assert parse_layout_text('{"format":1,"tensors":[{"name":"w","shape":[2],"dtype":"float32"}]}')[0]["name"] == "w"
    for text in ("", "[]", '{"tensors": [{"name": "w"}]}'):
        with pytest.raises(ValueError, match="layout text: expected a published weight layout"):
            parse_layout_text(text)
